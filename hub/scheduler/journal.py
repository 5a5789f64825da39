"""The audit trail of what the hub does on its own: Task versions, Flags and notices, each
recorded in the transaction that does it (as hub.delivery.dispatcher records deliveries).

`Journal` writes as the hub itself (agent System/carehub): one restful record per write and
one Privacy Disclosure record per consent-gate decision the action left in the session.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

from sqlalchemy.orm import Session

from hub.audit.events import Interaction
from hub.audit.recorder import Auditor, Touched, take_disclosures, touched_stored
from hub.audit.signing import Signer
from hub.auth.subject import Subject
from hub.config import Settings
from hub.store.resources import StoredResource

HUB = Subject.hub_itself()


@lru_cache(maxsize=8)
def _auditor(key_file: str, base_url: str) -> Auditor:
    return Auditor(Signer.from_file(key_file), base_url=base_url)


def auditor_for(settings: Settings) -> Auditor:
    """The process's auditor for these settings (the signing key is loaded once)."""
    return _auditor(settings.audit_key_file, settings.fhir_base)



class SentNotice(Protocol):
    """What the journal records of a notice the hub sent (hub.messaging.outbound.Sent)."""

    @property
    def bundle_ref(self) -> str: ...

    @property
    def patient_ref(self) -> str | None: ...


class Journal:
    """Records the hub's own writes and notices in the caller's transaction."""

    def __init__(self, session: Session, auditor: Auditor) -> None:
        self.session = session
        self.auditor = auditor

    def wrote(self, stored: StoredResource, *, why: str) -> None:
        """A version the hub stored (create or update), and why it did."""
        interaction: Interaction = "create" if stored.version_id == 1 else "update"
        self.auditor.rest(self.session, HUB, interaction=interaction,
                          resource_type=stored.resource_type, touched=touched_stored(stored),
                          description=why)

    def sent(self, sent: SentNotice | None, *, why: str) -> None:
        """A notice the hub sent: its routing decisions, then the message itself."""
        entries = self.auditor.disclosure_entries(take_disclosures(self.session), subject=HUB)
        if sent is not None:
            patients = (sent.patient_ref,) if sent.patient_ref else ()
            entries += self.auditor.rest_entries(
                HUB, interaction="operation", resource_type="Bundle",
                touched=Touched((sent.bundle_ref,), patients), operation="$send-message",
                description=why)
        self.auditor.write(self.session, entries)

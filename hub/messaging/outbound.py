"""Messages the hub itself sends (follow-up-overdue and the other notices of the timed checks).

They take the path every accepted message takes after intake: the message Bundle is stored,
one `messages` row records it (sender `HUB_SENDER`), and each receiver gets a `deliveries`
row decided by the consent gate (hub.messaging.routing.decide_delivery; the hub's notices
have their own legal basis there, HUB_FOLLOW_UP_LEGAL_BASIS), whose decision is left for the
audit trail like intake's. The dispatcher then publishes and pushes them, deciding again
before each attempt. Everything happens in the caller's transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.config import Settings
from hub.consent.gate import MessageQuestion
from hub.db.types import utcnow
from hub.errors import HubError
from hub.fhir import refs
from hub.fhir.jsonio import dumps_bytes
from hub.fhir.validation import validate_message
from hub.fhir.vocab import EVENT_SYSTEM, HUB_EVENTS
from hub.messaging.models import MessageRow
from hub.messaging.routing import queue_delivery
from hub.store import service
from hub.store.dates import format_instant

HUB = Subject.hub_itself()
HUB_SENDER = "carehub"
"""`messages.sender_org` of what the hub itself sends (no organisation has this id)."""
HUB_NOTICES = HUB_EVENTS
"""The events only the hub sends (fhir_profiles/CodeSystem-message-event.json)."""


class NoticeError(RuntimeError):
    """The hub built a notice its own profiles reject (a defect, not bad input)."""


@dataclass(frozen=True)
class Sent:
    """One notice: its message row, header id, stored Bundle, and per receiver whether it was
    queued (else withheld) and why."""

    message_id: int
    header_id: str
    bundle_ref: str
    patient_ref: str | None
    destinations: tuple[tuple[str, bool, str], ...]

    @property
    def queued(self) -> tuple[str, ...]:
        """The receivers it was queued for."""
        return tuple(org for org, ok, _ in self.destinations if ok)


def _entry(settings: Settings, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"{settings.fhir_base}/{body['resourceType']}/{body['id']}",
            "resource": dict(body)}


def _registered(session: Session, receivers: Iterable[str]) -> list[str]:
    out: list[str] = []
    for org in dict.fromkeys(r for r in receivers if r and r != HUB_SENDER):
        try:
            if service.exists(session, HUB, resource_type="Organization", resource_id=org):
                out.append(org)
        except HubError:
            continue
    return out


def content_owner(session: Session, message: MessageRow,
                  bundle: Mapping[str, Any] | None = None) -> str | None:
    """Whose records a message discloses, so whose consents apply: its sender; for the hub's
    own notices, the owner of what they are about (the first focus), as `send_notice`
    decided on acceptance. `bundle`: the stored message Bundle (read here when not given,
    and only for a notice)."""
    if message.sender_org != HUB_SENDER:
        return message.sender_org
    if bundle is None:
        bundle = service.read(session, HUB, resource_type="Bundle",
                              resource_id=message.bundle_id).body or {}
    entries = bundle.get("entry") or []
    header = entries[0].get("resource") if entries and isinstance(entries[0], dict) else {}
    return _first_owner(session, (refs.target(f) for f in (header or {}).get("focus") or []))


def _first_owner(session: Session, targets: Iterable[tuple[str, str] | None]) -> str | None:
    """The owner of the first of a notice's focus resources (type, id): whose consents
    apply to it (the custodian rule)."""
    found = next((t for t in targets if t), None)
    return service.owner_of(session, resource_type=found[0],
                            resource_id=found[1]) if found else None


def build(settings: Settings, *, event: str, focus: Sequence[Mapping[str, Any]],
          patient: Mapping[str, Any], receivers: Sequence[str],
          supporting: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The message Bundle of a notice: the MessageHeader (source the hub's FHIR base, no
    sender), the focus resources, supporting ones, and the Patient, each under its stored URL.
    Raises NoticeError when the hub's own profiles reject it."""
    header_id = str(uuid.uuid4())
    urls = [f"{settings.fhir_base}/{f['resourceType']}/{f['id']}" for f in focus]
    header = {
        "resourceType": "MessageHeader", "id": header_id,
        "eventCoding": {"system": EVENT_SYSTEM, "code": event},
        "destination": [{"endpoint": f"urn:carehub:organization:{org}",
                         "receiver": {"reference": f"Organization/{org}"}} for org in receivers],
        "source": {"name": "CareHub", "endpoint": settings.fhir_base},
        "focus": [{"reference": url} for url in urls],
    }
    seen: dict[str, None] = {}
    entries = [{"fullUrl": f"urn:uuid:{header_id}", "resource": header}]
    for body in (*focus, *supporting, patient):
        ref = f"{body['resourceType']}/{body['id']}"
        if ref not in seen:
            seen[ref] = None
            entries.append(_entry(settings, body))
    bundle = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "message",
              "timestamp": format_instant(utcnow()), "entry": entries}
    issues = validate_message(bundle)
    if issues:
        raise NoticeError(f"The hub's {event} notice is not valid: "
                          + "; ".join(f"{i.expression}: {i.diagnostics}" for i in issues[:3]))
    return bundle


def send_notice(session: Session, settings: Settings, *, event: str,
                focus: Sequence[Mapping[str, Any]], patient: Mapping[str, Any],
                receivers: Sequence[str],
                supporting: Sequence[Mapping[str, Any]] = ()) -> Sent | None:
    """Store and route one notice to `receivers` (unregistered ones are left out; None when
    none is left). Each delivery is decided by the consent gate and its decision logged for
    the audit trail of the caller's transaction."""
    orgs = _registered(session, receivers)
    if not orgs:
        return None
    bundle = build(settings, event=event, focus=focus, patient=patient, receivers=orgs,
                   supporting=supporting)
    header = bundle["entry"][0]["resource"]
    kept = service.create(session, HUB, resource=bundle, already_valid=True).stored
    patient_ref = f"Patient/{patient['id']}"
    types = frozenset(str(e["resource"]["resourceType"]) for e in bundle["entry"])
    now = utcnow()
    message_id = session.execute(insert(MessageRow).values(
        sender_org=HUB_SENDER, header_id=header["id"], event=event,
        content_hash=hashlib.sha256(dumps_bytes(bundle)).hexdigest(), patient_ref=patient_ref,
        content_types=",".join(sorted(types)), bundle_id=kept.id, received_at=now,
        response=b"").returning(MessageRow.id)).scalar_one()
    # The notice discloses the records it is about: the consents their owner recorded
    # apply (the custodian rule), beside the legal basis of the hub's own notices.
    owner = _first_owner(session, ((str(f["resourceType"]), str(f["id"])) for f in focus))
    out = []
    for org in orgs:
        question = MessageQuestion(event=event, sender_org=owner,
                                   patient_id=str(patient["id"]), content_types=types,
                                   receiver_org=org)
        verdict = queue_delivery(
            session, settings, message_id=message_id, question=question,
            patient_ref=patient_ref,
            resources=[kept.relative_url, *(f"{f['resourceType']}/{f['id']}" for f in focus)])
        queued = verdict.decision != "deny"
        out.append((org, queued, verdict.reason))
    return Sent(message_id, str(header["id"]), kept.relative_url, patient_ref, tuple(out))

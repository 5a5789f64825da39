"""One handler per event code: what an accepted message does beyond being stored and routed.

The generic path (hub/messaging/intake.py) validates, stores every resource, and routes one
delivery per destination. A handler adds the event's own effects in the same transaction.
The workflow issue adds the rules of the care-coordination events here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hub.config import Settings
from hub.messaging.models import DeliveryRow, MessageRow
from hub.messaging.routing import decide_delivery


@dataclass
class Accepted:
    """What the generic path hands a handler: the stored message and its resources."""

    settings: Settings
    event: str
    sender_org: str
    message: MessageRow
    patient_id: str | None
    stored: dict[str, dict[str, Any]]  # "Type/id" -> stored body, for every entry
    focus: list[str]  # "Type/id" of the focus resources
    notes: list[str] = field(default_factory=list)


Handler = Callable[[Session, Accepted], None]
HANDLERS: dict[str, Handler] = {}


def handles(*events: str) -> Callable[[Handler], Handler]:
    """Register a handler for events."""

    def register(fn: Handler) -> Handler:
        for event in events:
            HANDLERS[event] = fn
        return fn

    return register


def _nothing_more(_session: Session, _accepted: Accepted) -> None:
    """Stored and routed; the event has no further effect yet."""


EVENTS = ("consent-changed", "care-plan-shared", "admission-notice", "self-admission-agreement",
          "self-admission-request", "self-admission-response", "meeting-invitation",
          "meeting-response", "ready-for-discharge", "ready-for-discharge-withdrawn",
          "discharge-readiness-response", "discharge-notice", "follow-up-contact")
for _event in EVENTS:
    HANDLERS[_event] = _nothing_more


@handles("consent-changed")
def consent_changed(session: Session, accepted: Accepted) -> None:
    """A consent (or its revocation) applies from now on: every delivery about this patient
    not yet made is decided again, and withheld where the consent no longer permits it."""
    if accepted.patient_id is None:
        return
    pending = session.execute(
        select(DeliveryRow, MessageRow).join(MessageRow, MessageRow.id == DeliveryRow.message_id)
        .where(DeliveryRow.patient_ref == f"Patient/{accepted.patient_id}",
               DeliveryRow.status == "queued", DeliveryRow.message_id != accepted.message.id)
    ).all()
    for delivery, message in pending:
        verdict = decide_delivery(session, accepted.settings, event=message.event,
                                  patient_id=accepted.patient_id,
                                  content_types=frozenset((message.content_types or "").split(",")),
                                  receiver_org=delivery.receiver_org)
        if verdict.decision == "deny":
            session.execute(update(DeliveryRow).where(DeliveryRow.id == delivery.id).values(
                status="withheld", decision="deny", basis=verdict.basis,
                reason=f"Withdrawn after consent change: {verdict.reason}",
                next_attempt_at=None))
            accepted.notes.append(f"withdrew delivery {delivery.id} to "
                                  f"Organization/{delivery.receiver_org}")


@handles("care-plan-shared")
def care_plan_shared(_session: Session, accepted: Accepted) -> None:
    """The individual plan is stored as a new version (by its identifier) with its Goals and
    CareTeam; sharing it needs the patient's two consents, which the routing checks."""
    plans = [ref for ref in accepted.focus if ref.startswith("CarePlan/")]
    accepted.notes.extend(f"stored {ref}" for ref in plans)

"""The audit records of a delivery's course that are not disclosures: dead-lettered and
replayed (CONTRACT section 8: every delivery leaves an AuditEvent). Each push that sent the
message, taken or refused, is recorded as a disclosure by the dispatcher instead.

A replay resets the delivery's `attempts` and `created_at` (they drive the backoff and the
max-age window of the new round), so its record keeps what the row held before: the trail
is where a delivery's history is kept whole."""

from __future__ import annotations

from sqlalchemy.orm import Session

from hub.audit.events import DELIVERY, Outcome, agent_name, delivery_event
from hub.audit.recorder import Auditor
from hub.auth.subject import Subject
from hub.messaging.models import DeliveryRow, MessageRow
from hub.store.dates import format_instant

HUB = Subject.hub_itself()


def delivery_state(row: DeliveryRow) -> list[tuple[str, str]]:
    """The delivery's state as an audit record's detail: status, attempts, last error, and
    since when it is under way (its created_at)."""
    return [("status", row.status), ("attempts", str(row.attempts)),
            ("last-error", row.last_error or ""), ("since", format_instant(row.created_at))]


def record_step(session: Session, auditor: Auditor | None, row: DeliveryRow,
                message: MessageRow, text: str, *, outcome: Outcome = "0",
                subject: Subject = HUB) -> None:
    """Record one step of delivery `row` (its state as it is now) in the caller's
    transaction; nothing without an auditor."""
    if auditor is None:
        return
    auditor.event(session, delivery_event(
        delivery_id=row.id, recipient_org=f"Organization/{row.receiver_org}",
        patient_ref=row.patient_ref, message_ref=f"Bundle/{message.bundle_id}", text=text,
        state=delivery_state(row), outcome=outcome, subject=subject,
        base_url=auditor.base_url),
        agent=agent_name(subject), subtype=DELIVERY, patient_ref=row.patient_ref)

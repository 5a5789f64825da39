"""Delivery's own timed check (CONTRACT section 7): deliveries not acknowledged in time.

A delivery delivered (pushed or pulled) and not acknowledged within HUB_ACK_TIMEOUT gives its
sender a `delivery-unacknowledged` notice carrying a Communication that names the message,
the receiver and when it was delivered (the sender's system is the one that can chase it;
coordinators of the sender see it too, as every message to their organisation). Only for
events whose MessageDefinition says `responseRequired` always; messages the hub sent itself
are not chased. The due rows and their sweeps are hub/scheduler's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.config import Settings
from hub.fhir.profiles import conformance
from hub.messaging.models import DeliveryRow, MessageRow
from hub.messaging.outbound import HUB_SENDER, send_notice
from hub.scheduler import due
from hub.scheduler.actions import Act, acts_on, recipients
from hub.scheduler.models import ScheduledCheckRow
from hub.store import service
from hub.store.dates import format_instant

ACK = "ack-timeout"
ACK_SID = "http://carehub.example/fhir/sid/delivery-unacknowledged"


def answer_required(event: str) -> bool:
    """Whether `event`'s MessageDefinition says `responseRequired` always."""
    definition = conformance().message_definition(event)
    return definition is not None and definition.get("responseRequired") == "always"


def expect_ack(session: Session, settings: Settings, delivery_id: int,
               delivered_at: datetime) -> None:
    """A delivery was just delivered: schedule the check that its receiver acknowledges it.
    Only for events whose MessageDefinition says `responseRequired` always: the others are
    answered only on error, so silence is their success. Nothing when HUB_ACK_TIMEOUT is 0,
    or for the hub's own notices."""
    if settings.ack_timeout <= 0:
        return
    found = session.get(DeliveryRow, delivery_id)
    message = session.get(MessageRow, found.message_id) if found else None
    if found is None or message is None or message.sender_org == HUB_SENDER \
            or found.ack_code is not None or not answer_required(message.event):
        return
    due.schedule(session, kind=ACK, target=f"Delivery/{delivery_id}",
                 due_at=delivered_at + timedelta(seconds=settings.ack_timeout),
                 patient_ref=message.patient_ref, recipients=[message.sender_org],
                 anchor_at=delivered_at)


def _unacknowledged(act: Act, row: ScheduledCheckRow, delivery: DeliveryRow,
                    message: MessageRow, patient: dict[str, Any]) -> dict[str, Any]:
    hours = act.settings.ack_timeout / 3600
    text = (f"Your {message.event} message {message.header_id} to "
            f"Organization/{delivery.receiver_org} was delivered at "
            f"{format_instant(row.anchor_at or act.now)} but not acknowledged within "
            f"{hours:g} hours. Please check with the receiver that it was received.")
    body = {"resourceType": "Communication",
            "identifier": [{"system": ACK_SID, "value": str(delivery.id)}],
            "status": "completed",
            "category": [{"text": "delivery not acknowledged"}],
            "subject": {"reference": f"Patient/{patient['id']}"},
            "sent": format_instant(act.now),
            "recipient": [{"reference": f"Organization/{message.sender_org}"}],
            "payload": [{"contentString": text}]}
    sender = Subject.working_for(message.sender_org, "delivery")
    result = service.create(act.session, sender, resource=body,
                            if_none_exist=f"identifier={ACK_SID}|{delivery.id}")
    if result.created:
        act.journal.wrote(result.stored, why=f"Delivery {delivery.id} not acknowledged.")
    assert result.stored.body is not None
    return result.stored.body


@acts_on(ACK)
def ack_overdue(act: Act, row: ScheduledCheckRow) -> str:
    """Tell the sender its delivered message was not acknowledged in time."""
    delivery = act.session.get(DeliveryRow, int(row.target.split("/", 1)[1]))
    if delivery is None or delivery.ack_code is not None or delivery.status != "delivered":
        return "acknowledged" if delivery is not None and delivery.ack_code else "cancelled"
    message = act.session.get_one(MessageRow, delivery.message_id)
    patient = act.read(row.patient_ref) if row.patient_ref else None
    if patient is None:
        return "expired"
    communication = _unacknowledged(act, row, delivery, message, patient)
    sent = send_notice(act.session, act.settings, event="delivery-unacknowledged",
                       focus=[communication], patient=patient, receivers=recipients(row))
    act.journal.sent(sent, why=f"delivery-unacknowledged for delivery {delivery.id}")
    return "notified"


"""The other timed checks (CONTRACT section 7), each a kind of due row with its action.

- discharge-readiness: a ready-for-discharge Task still `requested` HUB_DISCHARGE_READINESS_
  TIMEOUT (24 h) after it was asked (its authoredOn, at the latest its acceptance) gives a
  `discharge-readiness-overdue` notice to the centre and the municipality. Answering or
  withdrawing it cancels the check (hub/scheduler/hooks.py).
- meeting-reminder: HUB_MEETING_REMINDER (24 h) before a meeting's start, a `meeting-reminder`
  to the organisations of its invitation (sender, receivers, Organization participants). A
  moved meeting moves its reminder (and a sent one is sent again for the new time); a
  cancelled meeting drops it; a meeting already begun when the reminder comes due (the hub
  was down) gets none.
- consent-expiry: HUB_CONSENT_EXPIRY_NOTICE (7 days) before an active Consent's
  provision.period ends, a `consent-expiring` notice to its custodian (Consent.organization).
  A new end moves it; revocation drops it.
- ack-timeout: a delivery delivered (pushed or pulled) and not acknowledged within
  HUB_ACK_TIMEOUT gives its sender a `delivery-unacknowledged` notice carrying a
  Communication that names the message, the receiver and when it was delivered (the sender's
  system is the one that can chase it; coordinators of the sender see it too, as every
  message to their organisation). Messages the hub sent itself are not chased.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from hub.config import Settings
from hub.consent.periods import span
from hub.fhir.datetimes import parse
from hub.fhir.profiles import conformance
from hub.messaging.models import DeliveryRow, MessageRow
from hub.messaging.outbound import HUB_SENDER, send_notice
from hub.scheduler import due
from hub.scheduler.actions import Act, acts_on, org_id, recipients
from hub.scheduler.followup import writer
from hub.scheduler.models import ScheduledCheckRow
from hub.store import service
from hub.store.dates import format_instant

READINESS = "discharge-readiness"
MEETING = "meeting-reminder"
CONSENT = "consent-expiry"
ACK = "ack-timeout"
ACK_SID = "http://carehub.example/fhir/sid/delivery-unacknowledged"
CLOSED_MEETING = ("cancelled", "noshow", "fulfilled", "entered-in-error")


def _notify(act: Act, row: ScheduledCheckRow, event: str, focus: dict[str, Any],
            why: str) -> str:
    patient = act.read(row.patient_ref) if row.patient_ref else None
    if patient is None:
        return "expired"  # nobody to write about any more
    sent = send_notice(act.session, act.settings, event=event, focus=[focus], patient=patient,
                       receivers=recipients(row))
    act.journal.sent(sent, why=why)
    return "notified"


# --- ready-for-discharge unanswered ---------------------------------------------------------


def readiness_start(task: dict[str, Any], accepted_at: datetime) -> datetime:
    """When the centre asked: the Task's authoredOn, but never later than its acceptance."""
    authored = parse(task.get("authoredOn"))
    return min(authored.low, accepted_at) if authored else accepted_at


@acts_on(READINESS)
def readiness_overdue(act: Act, row: ScheduledCheckRow) -> str:
    """Unanswered: tell both sides (answered or withdrawn meanwhile: nothing)."""
    task = act.read(row.target)
    if task is None or task.get("status") != "requested":
        return "answered"
    return _notify(act, row, "discharge-readiness-overdue", task,
                   f"discharge-readiness-overdue for {row.target}")


# --- meeting reminders ----------------------------------------------------------------------


def meeting_start(appointment: dict[str, Any]) -> datetime | None:
    """The start of a meeting, or None."""
    start = parse(appointment.get("start"))
    return start.low if start else None


@acts_on(MEETING)
def meeting_reminder(act: Act, row: ScheduledCheckRow) -> str:
    """Remind the participants' organisations, unless the meeting is off or already begun."""
    appointment = act.read(row.target)
    if appointment is None or appointment.get("status") in CLOSED_MEETING:
        return "cancelled"
    start = meeting_start(appointment)
    if start is None or start <= act.now:
        return "expired"
    return _notify(act, row, "meeting-reminder", appointment,
                   f"meeting-reminder for {row.target} starting {format_instant(start)}")


# --- consent expiry -------------------------------------------------------------------------


def consent_end(consent: dict[str, Any]) -> datetime | None:
    """The first moment an active Consent no longer holds (a date-only end runs through that
    day), or None when it has no readable end or is not active."""
    if consent.get("status") != "active":
        return None
    bounds = span(((consent.get("provision") or {}).get("period") or {}).get("end"))
    return bounds[1] if bounds else None


def custodian(consent: dict[str, Any]) -> str | None:
    """The organisation that holds the consent (Consent.organization, the first)."""
    return next((o for o in map(org_id, consent.get("organization", [])) if o), None)


@acts_on(CONSENT)
def consent_expiring(act: Act, row: ScheduledCheckRow) -> str:
    """Tell the custodian, unless the consent was revoked, renewed or has ended already."""
    consent = act.read(row.target)
    end = consent_end(consent) if consent else None
    if consent is None or end is None or end != row.anchor_at:
        return "cancelled"
    if end <= act.now:
        return "expired"
    return _notify(act, row, "consent-expiring", consent,
                   f"consent-expiring for {row.target} ending {format_instant(end)}")


# --- deliveries not acknowledged ------------------------------------------------------------


def _answer_required(event: str) -> bool:
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
            or found.ack_code is not None or not _answer_required(message.event):
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
    result = service.create(act.session, writer(message.sender_org), resource=body,
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


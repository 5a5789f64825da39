"""The message handlers that start, move and cancel timed checks (registered on import).

The follow-up checks of a discharge are made and met by hub/workflows/discharge.py; the
deadlines here are described in hub/workflows/deadlines.py. Each runs in the message's own
transaction, so a check is scheduled exactly when its message is accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy.orm import Session

from hub.errors import HubError
from hub.fhir.refs import org_id
from hub.messaging.handlers import Accepted, handles
from hub.scheduler import due
from hub.scheduler.actions import HUB
from hub.store import service
from hub.workflows.deadlines import (
    CONSENT,
    MEETING,
    READINESS,
    consent_end,
    custodian,
    meeting_start,
    readiness_start,
)
from hub.workflows.followup import TASK_CODE, owner_of, requester_of

OPEN_MEETING = ("proposed", "pending", "booked", "arrived", "checked-in", "waitlist")


def _stored(accepted: Accepted, rtype: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for ref, body in accepted.stored.items():
        if ref.startswith(f"{rtype}/"):
            yield ref, body


def _readiness_tasks(accepted: Accepted) -> Iterator[tuple[str, dict[str, Any]]]:
    for ref, task in _stored(accepted, "Task"):
        if any(c.get("system") == TASK_CODE and c.get("code") == "discharge-readiness"
               for c in (task.get("code") or {}).get("coding", [])):
            yield ref, task


def _destinations(session: Session, accepted: Accepted) -> list[str]:
    try:
        bundle = service.read(session, HUB, resource_type="Bundle",
                              resource_id=accepted.message.bundle_id).body or {}
    except HubError:
        return []
    header = (bundle.get("entry") or [{}])[0].get("resource") or {}
    return [o for o in (org_id(d.get("receiver")) for d in header.get("destination", [])) if o]


@handles("ready-for-discharge")
def readiness_asked(session: Session, accepted: Accepted) -> None:
    """The municipality has HUB_DISCHARGE_READINESS_TIMEOUT to answer."""
    for ref, task in _readiness_tasks(accepted):
        if task.get("status") != "requested":
            continue
        start = readiness_start(task, accepted.message.received_at)
        due_at = due.counted_from(start, accepted.settings.discharge_readiness_timeout,
                                  what="The question's time", expression="Task.authoredOn")
        due.schedule(session, kind=READINESS, target=ref, due_at=due_at,
                     patient_ref=f"Patient/{accepted.patient_id}" if accepted.patient_id
                     else None, recipients=[o for o in (requester_of(task), owner_of(task))
                                            if o], anchor_at=start)


@handles("ready-for-discharge-withdrawn", "discharge-readiness-response")
def readiness_settled(session: Session, accepted: Accepted) -> None:
    """Answered or withdrawn: nobody needs reminding."""
    outcome = "withdrawn" if accepted.event == "ready-for-discharge-withdrawn" else "answered"
    for ref, task in _readiness_tasks(accepted):
        if task.get("status") != "requested":
            due.cancel(session, kind=READINESS, target=ref, outcome=outcome)


@handles("meeting-invitation")
def meeting_planned(session: Session, accepted: Accepted) -> None:
    """Remind before the (new) start; drop the reminder of a cancelled meeting."""
    for ref, appointment in _stored(accepted, "Appointment"):
        start = meeting_start(appointment)
        if appointment.get("status") not in OPEN_MEETING or start is None:
            due.cancel(session, kind=MEETING, target=ref)
            continue
        orgs = [accepted.sender_org, *_destinations(session, accepted),
                *(o for o in (org_id(p.get("actor")) for p in appointment.get("participant", []))
                  if o)]
        due.schedule(session, kind=MEETING, target=ref,
                     due_at=due.counted_from(start, -accepted.settings.meeting_reminder,
                                             what="The meeting's start",
                                             expression="Appointment.start"),
                     patient_ref=f"Patient/{accepted.patient_id}" if accepted.patient_id
                     else None, recipients=orgs, anchor_at=start, move=True)


@handles("consent-changed")
def consent_recorded(session: Session, accepted: Accepted) -> None:
    """Tell the custodian before an active consent runs out; drop it on revocation."""
    for ref, consent in _stored(accepted, "Consent"):
        end = consent_end(consent)
        holder = custodian(consent)
        if end is None or holder is None:
            due.cancel(session, kind=CONSENT, target=ref)
            continue
        due.schedule(session, kind=CONSENT, target=ref,
                     due_at=due.counted_from(end, -accepted.settings.consent_expiry_notice,
                                             what="The consent's end",
                                             expression="Consent.provision.period.end"),
                     patient_ref=f"Patient/{accepted.patient_id}" if accepted.patient_id
                     else None, recipients=[holder], anchor_at=end, move=True)

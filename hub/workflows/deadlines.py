"""The other timed checks (CONTRACT section 7), each a kind of due row with its action.

- discharge-readiness: a ready-for-discharge Task still `requested` HUB_DISCHARGE_READINESS_
  TIMEOUT (24 h) after it was asked (its authoredOn, at the latest its acceptance) gives a
  `discharge-readiness-overdue` notice to the centre and the municipality. Answering or
  withdrawing it cancels the check (hub/workflows/timed.py).
- meeting-reminder: HUB_MEETING_REMINDER (24 h) before a meeting's start, a `meeting-reminder`
  to the organisations of its invitation (sender, receivers, Organization participants). A
  moved meeting moves its reminder (and a sent one is sent again for the new time); a
  cancelled meeting drops it; a meeting already begun when the reminder comes due (the hub
  was down) gets none.
- consent-expiry: HUB_CONSENT_EXPIRY_NOTICE (7 days) before an active Consent's
  provision.period ends, a `consent-expiring` notice to its custodian (Consent.organization).
  A new end moves it; revocation drops it.

Deliveries not acknowledged in time are delivery's own check (hub/delivery/scheduled.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hub.consent.periods import span
from hub.fhir.datetimes import parse
from hub.fhir.refs import org_id
from hub.messaging.outbound import send_notice
from hub.scheduler.actions import Act, acts_on, recipients
from hub.scheduler.models import ScheduledCheckRow
from hub.store.dates import format_instant

READINESS = "discharge-readiness"
MEETING = "meeting-reminder"
CONSENT = "consent-expiry"
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

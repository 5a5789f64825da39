"""Discharge and follow-up (CONTRACT sections 4 and 7).

`discharge-notice` (Encounter finished, period.end = discharge time D; the follow-up plan; an
optional active suicide-risk Flag, SNOMED CT 225444004): three follow-up check Tasks, code
task-code|follow-up-check, `for` the patient, `focus` the Encounter, `requester` the centre
(the sender), `owner` the responsible municipality, `restriction.period.end` the due time:
first contact by D + HUB_FOLLOW_UP_FIRST_CONTACT (72 h; ..._SUICIDE_RISK, 48 h, with the
flag), then D + HUB_FOLLOW_UP_SECOND_CHECK (7 d) and D + HUB_FOLLOW_UP_THIRD_CHECK (30 d).

The owner is the organisation the follow-up plan names as responsible
(CarePlan.activity.detail.performer, the first Organization), else the first destination
that is registered as a municipality. The Tasks are stored by the hub on the centre's behalf
(the centre owns the records, as it sent the notice; the municipality, their owner, reads
them as a party to the Task), and each gets a due row (hub/scheduler). Their identifier
names the Encounter and the check, so a notice sent again (a new version of the same
Encounter) finds the checks the centre's first notice made (Tasks with that identifier that
the centre owns; their ids are random, so no one can take them first) and makes no second
set; the first due times stand. Where the consent gate keeps the discharge-notice from that
municipality, the checks are the centre's own (owner the centre): a Task names its owner as
a party that reads it, and would tell what the notice may not. An overdue check is still
told to the municipality where the hub's notices have a legal basis (hub/workflows/
followup.py), as the gate decides then.

`follow-up-contact` at time C (the contact Encounter's period.start) meets each check of the
patient with C after the discharge day (calendar days in HUB_TIMEZONE; a contact on the
discharge day itself does not count) and C <= due: its Task becomes completed, with the
contact as output. As the CONTRACT rule reads, one early contact meets every check it falls
before, so a contact on day 2 meets the 7-day and 30-day checks too. A contact after a
check's due time does not meet it: that check stays overdue. A timely contact reported only
after the check was escalated still meets it (the Task completes, its overdue Flag ends).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.types import utcnow
from hub.errors import HubError, InvalidResourceError
from hub.fhir import refs
from hub.fhir.datetimes import parse
from hub.fhir.refs import org_id
from hub.messaging.handlers import Accepted, handles
from hub.messaging.models import DeliveryRow, MessageRow
from hub.messaging.routing import decide_delivery
from hub.scheduler import due
from hub.scheduler.journal import Journal, auditor_for
from hub.scheduler.models import ScheduledCheckRow
from hub.store import service
from hub.store.dates import format_instant
from hub.store.query import SearchRequest
from hub.workflows.followup import (
    CHECK_SID,
    KIND,
    OPEN_STATUSES,
    TASK_CODE,
    close_flag,
    requester_of,
    writer,
)

HUB = Subject.hub_itself()
SNOMED = "http://snomed.info/sct"
SUICIDE_RISK = "225444004"
ORG_KIND = "http://carehub.example/fhir/CodeSystem/organization-kind"


@lru_cache(maxsize=4)
def zone(name: str) -> ZoneInfo:
    """The calendar's time zone (the tzdata package supplies it where the OS has none)."""
    return ZoneInfo(name)


CHECK_LABELS = ("first-contact", "second-check", "third-check")


def checks(settings: Settings, suicide_risk: bool) -> list[tuple[str, str, int]]:
    """(label, description, seconds after discharge) of the three checks."""
    first = (settings.follow_up_first_contact_suicide_risk if suicide_risk
             else settings.follow_up_first_contact)
    one, two, three = CHECK_LABELS
    return [
        (one, f"First contact after discharge, within {first // 3600} hours"
         + (" (suicide risk)" if suicide_risk else ""), first),
        (two, f"Follow-up check {settings.follow_up_second_check // 86400} days "
         "after discharge", settings.follow_up_second_check),
        (three, f"Follow-up check {settings.follow_up_third_check // 86400} days "
         "after discharge", settings.follow_up_third_check),
    ]


def _focus(accepted: Accepted, rtype: str) -> tuple[str, dict[str, Any]] | None:
    for ref in [*accepted.focus, *accepted.stored]:
        if ref.startswith(f"{rtype}/") and ref in accepted.stored:
            return ref, accepted.stored[ref]
    return None


def _is_municipality(session: Session, org: str) -> bool:
    try:
        body = service.read(session, HUB, resource_type="Organization", resource_id=org).body
    except HubError:
        return False
    return any(c.get("system") == ORG_KIND and c.get("code") == "municipality"
               for t in (body or {}).get("type", []) for c in t.get("coding", []))


def responsible_municipality(session: Session, accepted: Accepted,
                             plan: dict[str, Any] | None) -> str | None:
    """Who owns the checks: the plan's responsible organisation, else the first destination
    registered as a municipality."""
    for activity in (plan or {}).get("activity", []):
        for performer in (activity.get("detail") or {}).get("performer", []):
            org = org_id(performer)
            if org and org != accepted.sender_org:
                return org
    try:
        bundle = service.read(session, HUB, resource_type="Bundle",
                              resource_id=accepted.message.bundle_id).body or {}
    except HubError:
        return None
    header = (bundle.get("entry") or [{}])[0].get("resource") or {}
    for destination in header.get("destination", []):
        org = org_id(destination.get("receiver"))
        if org and _is_municipality(session, org):
            return org
    return None


def _is_suicide_risk(flag: dict[str, Any], patient_ref: str, at: datetime) -> bool:
    if flag.get("status") != "active" or (flag.get("subject") or {}).get("reference") != \
            patient_ref:
        return False
    if not any(c.get("system") == SNOMED and c.get("code") == SUICIDE_RISK
               for c in (flag.get("code") or {}).get("coding", [])):
        return False
    end = parse((flag.get("period") or {}).get("end"))
    return end is None or end.after > at


def suicide_risk(session: Session, accepted: Accepted, patient_ref: str, at: datetime) -> bool:
    """An active suicide-risk Flag on the patient: in the notice, or stored before."""
    flags = [b for r, b in accepted.stored.items() if r.startswith("Flag/")]
    if not any(_is_suicide_risk(f, patient_ref, at) for f in flags):
        found, _, _ = service.search(session, HUB, request=SearchRequest(
            "Flag", [("patient", patient_ref)], count=200))
        flags = [f.body for f in found if f.body is not None]
    return any(_is_suicide_risk(f, patient_ref, at) for f in flags)


def _task(task_id: str, label: str, text: str, *, encounter: str, patient_ref: str,
          centre: str, owner: str, discharged: datetime, due_at: datetime,
          plan: str | None) -> dict[str, Any]:
    return {
        "resourceType": "Task", "id": task_id,
        "identifier": [{"system": CHECK_SID, "value": f"{encounter.split('/', 1)[1]}/{label}"}],
        **({"basedOn": [{"reference": plan}]} if plan else {}),
        "status": "requested", "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": "follow-up-check",
                             "display": "Follow-up check"}]},
        "description": text,
        "focus": {"reference": encounter},
        "for": {"reference": patient_ref},
        "authoredOn": format_instant(utcnow()),
        "requester": {"reference": f"Organization/{centre}"},
        "owner": {"reference": f"Organization/{owner}"},
        "restriction": {"period": {"start": format_instant(discharged),
                                   "end": format_instant(due_at)}},
    }


def _made_before(session: Session, centre: str, encounter_ref: str) -> dict[str, str]:
    """Ids of the checks an earlier notice of the stay `encounter_ref` made, by label: the
    Tasks carrying their identifier that the centre owns. Anyone may write a Task with that
    identifier, and a client chooses the ids it updates-as-creates, so neither an id derived
    from the stay nor the identifier alone says the check is the hub's: new checks get random
    ids."""
    stay = encounter_ref.split("/", 1)[1]
    ids: dict[str, str] = {}
    for label in CHECK_LABELS:
        for task in service.find_by_identifier(session, HUB, system=CHECK_SID,
                                               value=f"{stay}/{label}",
                                               resource_types=frozenset({"Task"})):
            if service.owner_of(session, resource_type="Task", resource_id=task.id) == centre:
                ids[label] = task.id
                break
    return ids


def _withheld_from(session: Session, accepted: Accepted, org: str) -> str | None:
    """Why the discharge-notice may not go to Organization/`org` (the routing decision of
    hub.consent.gate, asked as routing asks it); None when it may."""
    verdict = decide_delivery(session, accepted.settings, accepted.question(org))
    return verdict.reason if verdict.decision == "deny" else None


@handles("discharge-notice")
def schedule_follow_up(session: Session, accepted: Accepted) -> None:
    """Make the follow-up checks of a discharge (once per Encounter)."""
    found = _focus(accepted, "Encounter")
    if found is None or accepted.patient_id is None:
        return  # the profile requires both; nothing to schedule without them
    encounter_ref, encounter = found
    period_end = (encounter.get("period") or {}).get("end")
    ended = parse(period_end)
    if ended is None:
        raise InvalidResourceError(
            "The discharge Encounter needs period.end, the discharge time: the follow-up "
            "checks are due counted from it.", expression="Encounter.period.end")
    discharged = ended.low
    plan = _focus(accepted, "CarePlan")
    owner = responsible_municipality(session, accepted, plan[1] if plan else None)
    if owner is None:
        raise InvalidResourceError(
            "No municipality to own the follow-up checks: name the responsible organisation in "
            "the follow-up plan (CarePlan.activity.detail.performer) or send the notice to a "
            "municipality.", expression="CarePlan.activity.detail.performer")
    patient_ref = f"Patient/{accepted.patient_id}"
    risk = suicide_risk(session, accepted, patient_ref, discharged)
    centre = accepted.sender_org
    municipality = owner
    withheld = _withheld_from(session, accepted, municipality)
    if withheld is not None:
        # The Tasks would tell the municipality of the discharge the consent gate keeps from
        # it (a Task's owner reads it as a party to it): the checks are the centre's own. An
        # overdue check is still told to the municipality where the hub's notices have a
        # legal basis (HUB_FOLLOW_UP_LEGAL_BASIS), as the gate decides then.
        accepted.notes.append(
            f"Organization/{municipality} is not told of this discharge ({withheld}), so the "
            f"follow-up checks are Organization/{centre}'s own: arrange the follow-up with "
            "the patient.")
        owner = centre
    made_before = _made_before(session, centre, encounter_ref)
    journal = Journal(session, auditor_for(accepted.settings))
    made, kept = [], []
    for label, text, seconds in checks(accepted.settings, risk):
        task_id = made_before.get(label) or str(uuid.uuid4())
        target = f"Task/{task_id}"
        existing = due.find(session, KIND, target)
        if existing is not None and existing.outcome != "cancelled":
            kept.append(f"{label} due {format_instant(existing.due_at)}")
            continue
        due_at = due.counted_from(discharged, seconds, what="The discharge time",
                                  expression="Encounter.period.end")
        body = _task(task_id, label, text, encounter=encounter_ref, patient_ref=patient_ref,
                     centre=centre, owner=owner, discharged=discharged, due_at=due_at,
                     plan=plan[0] if plan else None)
        stored = service.update(session, writer(centre), resource_type="Task",
                                resource_id=task_id, resource=body).stored
        journal.wrote(stored, why=f"Follow-up check after the discharge in {encounter_ref}.")
        # move: a check cancelled with its discharge (discharge-cancelled) opens again
        due.schedule(session, kind=KIND, target=target, due_at=due_at, patient_ref=patient_ref,
                     recipients=[municipality, centre], anchor_at=discharged, move=True)
        made.append(f"{label} by {format_instant(due_at)}")
    if made:
        accepted.notes.append(
            f"Follow-up checks scheduled for Organization/{owner}"
            + (" (suicide risk: first contact within "
               f"{accepted.settings.follow_up_first_contact_suicide_risk // 3600} h)"
               if risk else "") + ": " + "; ".join(made) + ".")
    if kept:
        accepted.notes.append("Follow-up checks of this discharge were scheduled before and "
                              "stand as they were: " + "; ".join(kept) + ".")


@handles("discharge-cancelled")
def cancel_follow_up(session: Session, accepted: Accepted) -> None:
    """The discharge is cancelled (the stay is in progress again): each follow-up check of
    that discharge still open is cancelled (a new Task version, its due row closed). A later
    discharge-notice of the stay schedules them again from its own discharge time."""
    found = _focus(accepted, "Encounter")
    if found is None:
        return
    encounter_ref, _ = found
    journal = Journal(session, auditor_for(accepted.settings))
    cancelled = []
    for label, task_id in _made_before(session, accepted.sender_org, encounter_ref).items():
        due.cancel(session, kind=KIND, target=f"Task/{task_id}")
        try:
            task = service.read(session, HUB, resource_type="Task", resource_id=task_id).body
        except HubError:
            continue
        if not task or task.get("status") not in OPEN_STATUSES:
            continue
        centre = org_id(task.get("requester")) or accepted.sender_org
        stored = service.update(session, writer(centre), resource_type="Task",
                                resource_id=task_id, resource={
                                    **task, "status": "cancelled",
                                    "statusReason": {"text": "The discharge was cancelled."}}
                                ).stored
        why = f"The discharge in {encounter_ref} was cancelled."
        journal.wrote(stored, why=why)
        for flag in close_flag(session, task_id, format_instant(utcnow()), centre):
            journal.wrote(flag, why=why)
        cancelled.append(label)
    if cancelled:
        accepted.notes.append(f"Follow-up checks cancelled with the discharge: "
                              f"{', '.join(cancelled)}.")


def _contact_time(encounter: dict[str, Any]) -> datetime | None:
    period = encounter.get("period") or {}
    when = parse(period.get("start")) or parse(period.get("end"))
    return when.low if when else None


@handles("follow-up-contact")
def meet_follow_up(session: Session, accepted: Accepted) -> None:
    """Complete every check of the patient this contact meets (see the module docstring)."""
    found = _focus(accepted, "Encounter")
    if found is None or accepted.patient_id is None:
        return
    encounter_ref, encounter = found
    # The contact answers the discharge notices about this patient that were sent to its
    # sender: it goes back to their senders under the legal basis reply. A notice withheld
    # from the sender (or never sent to it) is nothing it answers.
    accepted.replying_to.update(session.scalars(
        select(MessageRow.sender_org).distinct()
        .join(DeliveryRow, DeliveryRow.message_id == MessageRow.id)
        .where(MessageRow.event == "discharge-notice",
               MessageRow.patient_ref == f"Patient/{accepted.patient_id}",
               DeliveryRow.receiver_org == accepted.sender_org,
               DeliveryRow.status != "withheld")))
    at = _contact_time(encounter)
    if at is None:
        return
    tz = zone(accepted.settings.timezone)
    check = ScheduledCheckRow
    rows = session.scalars(select(check).where(
        check.kind == KIND, check.patient_ref == f"Patient/{accepted.patient_id}",
        or_(check.closed_at.is_(None), check.outcome == "escalated"))
        .order_by(check.due_at, check.id).with_for_update()).all()
    journal = Journal(session, auditor_for(accepted.settings))
    met, same_day, late = [], 0, 0
    now = format_instant(utcnow())
    for row in rows:
        rtype, _, task_id = row.target.partition("/")
        try:
            task = service.read(session, HUB, resource_type=rtype, resource_id=task_id).body
        except HubError:
            task = None
        if task is not None and accepted.sender_org not in refs.org_ids(
                [task.get("owner"), task.get("requester")]):
            # A check only the organisations it names close, and to any other the answer
            # tells nothing of it (not even that the contact came too early or too late).
            continue
        if row.anchor_at is not None and \
                at.astimezone(tz).date() <= row.anchor_at.astimezone(tz).date():
            same_day += 1
            continue
        if at > row.due_at:
            late += 1
            continue
        if task is None or task.get("status") not in OPEN_STATUSES:
            due.close(row, "cancelled" if task is None or task.get("status") != "completed"
                      else "met")
            continue
        done = {k: v for k, v in task.items() if k != "businessStatus"}
        done.update(status="completed", lastModified=now, output=[{
            "type": {"text": "follow-up contact"},
            "valueReference": {"reference": encounter_ref}}])
        stored = service.update(session, writer(accepted.sender_org), resource_type="Task",
                                resource_id=task_id, resource=done).stored
        journal.wrote(stored, why=f"Follow-up check met by the contact {encounter_ref}.")
        if row.outcome == "escalated":
            for flag in close_flag(session, task_id, now, requester_of(task)):
                journal.wrote(flag, why=f"The overdue check {row.target} was met after all.")
        due.close(row, "met")
        met.append(f"{row.target} (due {format_instant(row.due_at)})")
    if met:
        accepted.notes.append("This contact meets the follow-up checks " + ", ".join(met) + ".")
    if same_day and not met:
        accepted.notes.append("A contact on the discharge day does not meet a follow-up check.")
    if late and not met:
        accepted.notes.append("This contact came after the due time of the open follow-up "
                              "checks; they stay overdue.")

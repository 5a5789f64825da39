"""User-controlled admission (brukerstyrt innleggelse): agreements, requests, answers, figures.

- self-admission-agreement: records the terms (most days a stay, default 5; fewest days
  between stays, default 14; the valid period; the unit and its user-controlled beds).
- self-admission-request: every request is kept. The hub checks the terms at once; a request
  that breaks them, or finds no free bed, is still stored and delivered, and the hub records
  it as rejected (a new version of the Task: statusReason, and the next possible date as
  output valueDate), telling the sender why in a warning of the response. A request within
  the terms holds a bed for its period until the centre answers.
- self-admission-response: the centre accepts (an admission: the stay runs from the arrival
  to the end asked for) or rejects. Accepting what breaks the terms or finds no free bed is
  a 422 that gives the reason and the next possible date; rejecting is always allowed.
- A stay longer than the agreement's maximum is accepted but flagged (a Flag on the patient).

Requests and answers for one unit are serialised on the unit's row (SELECT ... FOR UPDATE;
SQLite's single writer does the same), so two requests cannot both take its last bed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from hub.auth import scopes
from hub.auth.subject import Subject
from hub.db.types import utcnow
from hub.errors import GoneError, NotFoundError
from hub.fhir.datetimes import parse
from hub.messaging.handlers import Accepted, handles
from hub.store import service
from hub.workflows.models import (
    SelfAdmissionAgreementRow,
    SelfAdmissionRequestRow,
    SelfAdmissionUnitRow,
)
from hub.workflows.stored import requesters
from hub.workflows.tasks import (
    HUB,
    fail,
    focus_of,
    label,
    message_header,
    org_of,
    ref_of,
)

TERMS_URL = "http://carehub.example/fhir/StructureDefinition/self-admission-terms"
BEDS_URL = "http://carehub.example/fhir/StructureDefinition/user-controlled-beds"
OUTCOME_SYSTEM = "http://carehub.example/fhir/CodeSystem/self-admission-outcome"
FLAG_SYSTEM = "http://carehub.example/fhir/NamingSystem/self-admission-long-stay"
DEFAULT_MAX_DAYS_PER_STAY = 5
DEFAULT_MIN_DAYS_BETWEEN_STAYS = 14
HORIZON_DAYS = 732  # how far ahead the hub looks for the next possible date
DAY = timedelta(days=1)
HOLDING = ("requested", "accepted")  # requests that take a bed for their period
_OUTCOMES = {"agreement-not-active": "The agreement is not active",
             "outside-valid-period": "Outside the agreement's valid period",
             "too-soon": "Too soon after (or before) another stay",
             "no-free-bed": "No free user-controlled bed"}
_OFFSET = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


# --- stays and dates ------------------------------------------------------------------------

@dataclass(frozen=True)
class Stay:
    """A stay asked for or agreed: [start, end), in the time zone its sender wrote."""

    start: datetime
    end: datetime
    zone: tzinfo = UTC

    @property
    def days(self) -> int:
        """Days (døgn) it lasts, counting a begun day as a day; at least one."""
        return max(1, math.ceil((self.end - self.start) / DAY))

    def day(self, at: datetime) -> date:
        """The calendar date of `at` in the sender's time zone."""
        return at.astimezone(self.zone).date()

    def last_day(self, end: datetime) -> date:
        """The last calendar date before the (exclusive) end `end`, in the sender's zone."""
        return self.day(end - timedelta(microseconds=1))

    def moved(self, start: datetime) -> Stay:
        """The same length, from `start`."""
        return Stay(start, start + (self.end - self.start), self.zone)


def moment(value: Any, *, end: bool = False) -> datetime | None:
    """The instant a FHIR date/dateTime stands for; with `end`, a bare date means the end of
    that day (a last day is a whole day)."""
    parsed = parse(value)
    if parsed is None:
        return None
    return parsed.after if end and parsed.precision in ("year", "month", "day") else parsed.low


def _zone(value: Any) -> tzinfo:
    m = _OFFSET.search(value) if isinstance(value, str) else None
    if m is None or m.group(1) == "Z":
        return UTC
    sign = 1 if m.group(1)[0] == "+" else -1
    return timezone(sign * timedelta(hours=int(m.group(1)[1:3]), minutes=int(m.group(1)[4:6])))


def stay_of(period: dict[str, Any]) -> Stay:
    """The stay a Task's restriction.period asks for (profiles require start and end)."""
    start, end = moment(period.get("start")), moment(period.get("end"), end=True)
    assert start is not None  # the profiles require both, as dateTimes
    assert end is not None
    return Stay(start, max(end, start), _zone(period.get("start")))


# --- the terms ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Refusal:
    """Why a stay cannot be granted, and the first date one of the same length could be."""

    code: str
    reason: str
    next_on: date | None = None

    def sentence(self) -> str:
        """The reason and the next possible date, for a clerk."""
        after = (f" The next possible date for a stay of this length is "
                 f"{self.next_on.isoformat()}." if self.next_on else
                 " No later date within the agreement's valid period has room for it.")
        return f"{self.reason[:1].upper()}{self.reason[1:]}." + (
            "" if self.code == "agreement-not-active" else after)


@dataclass(frozen=True)
class _Held:
    start: datetime
    end: datetime
    agreement_id: str


def _holds(session: Session, unit_id: str, since: datetime, exclude: str) -> list[_Held]:
    rows = session.execute(select(
        SelfAdmissionRequestRow.start_at, SelfAdmissionRequestRow.end_at,
        SelfAdmissionRequestRow.agreement_id).where(
        SelfAdmissionRequestRow.unit_id == unit_id,
        SelfAdmissionRequestRow.status.in_(HOLDING),
        SelfAdmissionRequestRow.end_at > since,
        SelfAdmissionRequestRow.task_id != exclude)).all()
    return [_Held(r.start_at, r.end_at, r.agreement_id) for r in rows]


def _busiest(holds: list[_Held], stay: Stay) -> int:
    """The most beds taken at one moment of the stay."""
    overlapping = [h for h in holds if h.start < stay.end and stay.start < h.end]
    moments = {stay.start, *(h.start for h in overlapping if h.start > stay.start)}
    return max((sum(1 for h in overlapping if h.start <= m < h.end) for m in moments),
               default=0)


def _refusal(agreement: SelfAdmissionAgreementRow, unit: SelfAdmissionUnitRow,
             holds: list[_Held], stay: Stay) -> Refusal | None:
    """The first term `stay` breaks (valid period, days between stays, beds), or None."""
    until = agreement.valid_until_at
    if stay.start < agreement.valid_from_at or (until is not None and stay.end > until):
        return Refusal("outside-valid-period", (
            f"the stay asked for ({stay.day(stay.start)} to {stay.last_day(stay.end)}) is "
            f"outside the agreement's valid period ({stay.day(agreement.valid_from_at)} to "
            f"{stay.last_day(until) if until else 'open-ended'})"))
    gap = timedelta(days=agreement.min_days_between_stays)
    for held in holds:
        if held.agreement_id != agreement.agreement_id:
            continue
        if held.start < stay.end + gap and stay.start < held.end + gap:
            where = (f"after the stay that ends {stay.last_day(held.end)}"
                     if held.start <= stay.start
                     else f"before the stay that starts {stay.day(held.start)}")
            return Refusal("too-soon", (
                f"the stay asked for is too soon {where} under this agreement: at least "
                f"{agreement.min_days_between_stays} days must pass between stays"))
    if _busiest(holds, stay) >= unit.beds:
        return Refusal("no-free-bed", (
            f"all {unit.beds} user-controlled beds of {unit.name or 'the unit'} are taken for "
            f"part of the stay asked for ({stay.day(stay.start)} to "
            f"{stay.last_day(stay.end)})"))
    return None


def assess(session: Session, agreement: SelfAdmissionAgreementRow,
           unit: SelfAdmissionUnitRow, stay: Stay, *, exclude: str) -> Refusal | None:
    """Why `stay` cannot be granted under `agreement` now (with the next possible date), or
    None. Call with the unit's row locked; `exclude` is the request's own Task id."""
    if agreement.status != "active":
        return Refusal("agreement-not-active", (
            f"the agreement ServiceRequest/{agreement.agreement_id} is {agreement.status}, "
            "not active"))
    since = stay.start - timedelta(days=agreement.min_days_between_stays)
    holds = _holds(session, unit.unit_id, since, exclude)
    first = _refusal(agreement, unit, holds, stay)
    if first is None:
        return None
    until = agreement.valid_until_at
    for k in range(1, HORIZON_DAYS + 1):
        later = stay.moved(stay.start + k * DAY)
        if until is not None and later.end > until:
            break
        if _refusal(agreement, unit, holds, later) is None:
            return Refusal(first.code, first.reason, stay.day(later.start))
    return first


# --- rows -----------------------------------------------------------------------------------

def _locked_unit(session: Session, unit_id: str) -> SelfAdmissionUnitRow | None:
    return session.execute(select(SelfAdmissionUnitRow).where(
        SelfAdmissionUnitRow.unit_id == unit_id).with_for_update()).scalar_one_or_none()


def _terms(agreement: dict[str, Any]) -> tuple[int, int]:
    ext = next((e for e in agreement.get("extension") or []
                if isinstance(e, dict) and e.get("url") == TERMS_URL), {})
    values = {e.get("url"): e.get("valueInteger") for e in ext.get("extension") or []
              if isinstance(e, dict)}
    most, fewest = values.get("maxDaysPerStay"), values.get("minDaysBetweenStays")
    return (DEFAULT_MAX_DAYS_PER_STAY if most is None else int(most),
            DEFAULT_MIN_DAYS_BETWEEN_STAYS if fewest is None else int(fewest))


def _unit_body(session: Session, accepted: Accepted, ref: str | None) -> dict[str, Any] | None:
    if ref is None or not ref.startswith("Location/"):
        return None
    if ref in accepted.stored:
        return accepted.stored[ref]
    try:
        return service.read(session, HUB, resource_type="Location",
                            resource_id=ref.split("/", 1)[1]).body
    except (NotFoundError, GoneError):
        return None


@handles("self-admission-agreement")
def record_agreement(session: Session, accepted: Accepted) -> None:
    """Records (or updates, for a new version) the agreement's terms and its unit's beds."""
    ref, agreement = focus_of(accepted, "ServiceRequest")
    centre = accepted.sender_org
    if centre not in {org_of(p) for p in agreement.get("performer") or []}:
        fail(session, accepted, ref, (
            f"{label(agreement)}: performer must name the centre that offers the place and "
            f"sends the agreement (Organization/{centre})."), "performer")
    patient = f"Patient/{accepted.patient_id}"
    if ref_of(agreement.get("subject")) != patient:
        fail(session, accepted, ref, f"{label(agreement)}: subject must be the Patient this "
             "message carries.", "subject")
    unit_ref = ref_of((agreement.get("locationReference") or [{}])[0])
    unit_body = _unit_body(session, accepted, unit_ref)
    if unit_body is None:
        fail(session, accepted, ref, (
            f"{label(agreement)}: locationReference names no unit the hub knows; send the "
            "unit (a Location with extension user-controlled-beds) in the message."),
            "locationReference")
    beds = next((e.get("valueInteger") for e in unit_body.get("extension") or []
                 if isinstance(e, dict) and e.get("url") == BEDS_URL), None)
    if beds is None:
        fail(session, accepted, ref, (
            f"The unit {unit_ref} does not say how many user-controlled beds it has: give it "
            f"extension {BEDS_URL} (valueInteger)."), "locationReference")
    managing = org_of(unit_body.get("managingOrganization"))
    if managing not in (None, centre):
        fail(session, accepted, ref, (
            f"The unit {unit_ref} belongs to Organization/{managing}; only that centre can "
            "offer its beds in an agreement."), "locationReference")
    existing = session.get(SelfAdmissionAgreementRow, ref.split("/", 1)[1])
    if existing is not None and existing.patient_ref != patient:
        fail(session, accepted, ref, (
            f"{label(agreement)} is the agreement of {existing.patient_ref}; an agreement "
            "cannot move to another patient. Send a new agreement with a new identifier."),
            "subject")
    period = agreement.get("occurrencePeriod") or {}
    valid_from = moment(period.get("start"))
    assert valid_from is not None  # the profile requires it
    now = utcnow()
    unit_id = str(unit_ref).split("/", 1)[1]
    unit = _locked_unit(session, unit_id)
    if unit is None:
        unit = SelfAdmissionUnitRow(unit_id=unit_id)
        session.add(unit)
    unit.name, unit.managing_org = unit_body.get("name"), managing
    unit.beds, unit.updated_at = int(beds), now
    session.flush()  # the unit row before the agreement row that refers to it
    header = message_header(session, accepted)
    parties = {centre, *(org_of(p) for p in agreement.get("performer") or []),
               org_of(agreement.get("requester")),
               *(org_of(d.get("receiver")) for d in header.get("destination") or [])}
    row = existing or SelfAdmissionAgreementRow(agreement_id=ref.split("/", 1)[1])
    most, fewest = _terms(agreement)
    row.patient_ref, row.unit_id, row.centre_org = patient, unit_id, centre
    row.status = str(agreement.get("status"))
    row.max_days_per_stay, row.min_days_between_stays = most, fewest
    row.valid_from_at = valid_from
    row.valid_until_at = moment(period.get("end"), end=True)
    row.parties = "," + ",".join(sorted(p for p in parties if p)) + ","
    row.updated_at = now
    session.add(row)
    session.flush()
    accepted.notes.append(
        f"Self-admission agreement {ref} recorded ({row.status}): up to {most} days a stay, at "
        f"least {fewest} days between stays, valid from {period.get('start')} to "
        f"{period.get('end') or 'further notice'}; {unit.name or unit_ref} has {unit.beds} "
        "user-controlled beds.")


def _flag_long_stay(session: Session, agreement: SelfAdmissionAgreementRow, task_id: str,
                    stay: Stay) -> str:
    """A Flag on the patient: a stay longer than the agreement allows (owned by the centre,
    who follows it up)."""
    centre = Subject.working_for(agreement.centre_org, "self-admission")
    flag = {
        "resourceType": "Flag",
        "identifier": [{"system": FLAG_SYSTEM, "value": task_id}],
        "status": "active",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/flag-category",
            "code": "admin", "display": "Administrative"}]}],
        "code": {"text": (f"Self-admission stay of {stay.days} days asked for; the agreement "
                          f"(ServiceRequest/{agreement.agreement_id}) allows "
                          f"{agreement.max_days_per_stay} days a stay.")},
        "subject": {"reference": agreement.patient_ref},
        "period": {"start": stay.start.isoformat(), "end": stay.end.isoformat()},
        "author": {"reference": f"Organization/{agreement.centre_org}"},
    }
    return service.create(session, centre, resource=flag).stored.id


def _note_long_stay(session: Session, accepted: Accepted, row: SelfAdmissionRequestRow,
                    agreement: SelfAdmissionAgreementRow, stay: Stay) -> None:
    row.over_maximum = stay.days > agreement.max_days_per_stay
    if not row.over_maximum:
        return
    if row.flag_id is None:
        row.flag_id = _flag_long_stay(session, agreement, row.task_id, stay)
    accepted.warnings.append(
        f"The stay is {stay.days} days, longer than the {agreement.max_days_per_stay} days a "
        f"stay the agreement allows; it is flagged on the patient (Flag/{row.flag_id}) for "
        "the centre to follow up.")


def _reject_as_hub(session: Session, task_ref: str, task: dict[str, Any],
                   refusal: Refusal, centre: str) -> None:
    """The hub answers, for the centre and by the centre's terms, a request that cannot be
    granted: a new version of its Task, written as the Task's owner (the centre) may."""
    body = {k: v for k, v in task.items() if k != "meta"}
    body["status"] = "rejected"
    body["statusReason"] = {"coding": [{"system": OUTCOME_SYSTEM, "code": refusal.code,
                                        "display": _OUTCOMES[refusal.code]}],
                            "text": refusal.sentence()}
    body["businessStatus"] = {"text": "Rejected by CareHub: the request breaks the terms of "
                                      "the agreement or finds no free bed."}
    if refusal.next_on is not None:
        body["output"] = [{"type": {"text": "next possible date"},
                           "valueDate": refusal.next_on.isoformat()}]
    service.update(session, Subject.working_for(centre, "self-admission"), resource_type="Task",
                   resource_id=task_ref.split("/", 1)[1], resource=body)


@handles("self-admission-request")
def record_request(session: Session, accepted: Accepted) -> None:
    """Keeps every request and checks it against the terms and the free beds."""
    task_ref, task = focus_of(accepted, "Task")
    task_id = task_ref.split("/", 1)[1]
    target = ref_of(task.get("focus")) or ""
    agreement = (session.get(SelfAdmissionAgreementRow, target.split("/", 1)[1])
                 if target.startswith("ServiceRequest/") else None)
    if agreement is None:
        fail(session, accepted, task_ref, (
            f"{label(task)}: focus names no self-admission agreement the hub knows. Name the "
            "agreement (a ServiceRequest) by the identifier the centre sent it with."), "focus")
    if ref_of(task.get("for")) != agreement.patient_ref:
        fail(session, accepted, task_ref, (
            f"{label(task)}: the agreement ServiceRequest/{agreement.agreement_id} is for "
            f"{agreement.patient_ref}; a request is for the agreement's own patient."), "for")
    if org_of(task.get("owner")) != agreement.centre_org:
        fail(session, accepted, task_ref, (
            f"{label(task)}: owner must be the centre of the agreement, "
            f"Organization/{agreement.centre_org}."), "owner")
    if f",{accepted.sender_org}," not in agreement.parties:
        fail(session, accepted, task_ref, (
            f"Organization/{accepted.sender_org} is not party to the agreement "
            f"ServiceRequest/{agreement.agreement_id}; only its centre and the organisations "
            "it was sent to may ask for a stay under it."), "requester")
    accepted.replying_to.add(agreement.centre_org)  # a request answers the centre's offer
    unit = _locked_unit(session, agreement.unit_id)
    assert unit is not None  # an agreement's unit row is written with it
    stay = stay_of((task.get("restriction") or {}).get("period") or {})
    refusal = assess(session, agreement, unit, stay, exclude=task_id)
    now = utcnow()
    row = session.get(SelfAdmissionRequestRow, task_id) or SelfAdmissionRequestRow(
        task_id=task_id, received_at=now)
    row.agreement_id, row.unit_id = agreement.agreement_id, unit.unit_id
    row.patient_ref, row.requester_org = agreement.patient_ref, accepted.sender_org
    row.start_at, row.end_at, row.days = stay.start, stay.end, stay.days
    row.over_maximum = False
    if refusal is None:
        row.status, row.decided_by, row.decided_at = "requested", None, None
        row.reason_code = row.reason = None
        row.next_possible_on = None
        session.add(row)
        _note_long_stay(session, accepted, row, agreement, stay)
        accepted.notes.append(
            f"Self-admission request {task_ref} recorded within the terms of "
            f"ServiceRequest/{agreement.agreement_id}: a bed is free in "
            f"{unit.name or 'the unit'} for the {stay.days} days asked for, and is held "
            "until the centre answers (self-admission-response).")
    else:
        row.status, row.decided_by, row.decided_at = "rejected", "hub", now
        row.reason_code, row.reason = refusal.code, refusal.sentence()
        row.next_possible_on = refusal.next_on
        session.add(row)
        _reject_as_hub(session, task_ref, task, refusal, agreement.centre_org)
        accepted.warnings.append(
            f"Self-admission request {task_ref} is recorded, but the hub has rejected it: "
            f"{refusal.sentence()}")
    session.flush()


@handles("self-admission-response")
def record_response(session: Session, accepted: Accepted) -> None:
    """The centre's answer: an admission (checked against the terms and beds again), or a
    rejection (always allowed)."""
    task_ref, task = focus_of(accepted, "Task")
    row = session.get(SelfAdmissionRequestRow, task_ref.split("/", 1)[1])
    if row is None:
        fail(session, accepted, task_ref, (
            f"{label(task)} is no self-admission request the hub has recorded; answer a "
            "request by the identifier it was sent with."), "identifier")
    accepted.replying_to.update(requesters(session, task_ref, task))
    now = utcnow()
    if task.get("status") == "rejected":
        if row.status != "rejected":
            row.status, row.decided_by, row.decided_at = "rejected", "centre", now
            row.reason_code = "centre"
            row.reason = (task.get("statusReason") or {}).get("text")
        accepted.notes.append(f"Rejection of self-admission request {task_ref} recorded.")
        return
    agreement = session.get_one(SelfAdmissionAgreementRow, row.agreement_id)
    unit = _locked_unit(session, row.unit_id)
    assert unit is not None
    asked = stay_of((task.get("restriction") or {}).get("period") or {})
    arrival_text = next((o.get("valueDateTime") for o in task.get("output") or []
                         if isinstance(o, dict) and o.get("valueDateTime")), None)
    arrival = moment(arrival_text) or asked.start
    if arrival >= asked.end:
        fail(session, accepted, task_ref, (
            f"{label(task)}: the arrival ({arrival_text}) is not before the end of the stay "
            f"asked for ({asked.last_day(asked.end)})."), "output")
    stay = Stay(arrival, asked.end, asked.zone)
    refusal = assess(session, agreement, unit, stay, exclude=row.task_id)
    if refusal is not None:
        fail(session, accepted, task_ref,
             f"{label(task)} cannot be accepted: {refusal.sentence()} Reject it instead "
             "(status rejected, with statusReason).", "status")
    row.start_at, row.end_at, row.days = stay.start, stay.end, stay.days
    _note_long_stay(session, accepted, row, agreement, stay)
    row.status, row.decided_by, row.decided_at = "accepted", "centre", now
    row.reason_code = row.reason = None
    row.next_possible_on = None
    session.flush()
    accepted.notes.append(
        f"Admission recorded: a self-admission stay of {stay.days} days in "
        f"{unit.name or 'the unit'} from {arrival_text or stay.start.isoformat()} to "
        f"{asked.last_day(asked.end)}.")


# --- figures --------------------------------------------------------------------------------

def _may_see(subject: Subject, parties: set[str], resource_type: str) -> bool:
    if subject.sees_everything:
        return True
    if subject.organization_id is None or subject.organization_id not in parties:
        return False
    if subject.kind == "user":
        return subject.role == "coordinator"
    return scopes.allows(subject.scopes, resource_type, "read")


def _counts(session: Session, *where: Any) -> dict[str, Any]:
    r = SelfAdmissionRequestRow
    accepted = r.status == "accepted"
    row = session.execute(select(
        func.count(),
        func.coalesce(func.sum(case((accepted, 1), else_=0)), 0),
        func.coalesce(func.sum(case((accepted, r.days), else_=0)), 0),
        func.coalesce(func.sum(case((accepted & r.over_maximum, 1), else_=0)), 0),
        func.coalesce(func.sum(case((r.status == "requested", 1), else_=0)), 0),
        func.coalesce(func.sum(case((r.status == "rejected", 1), else_=0)), 0),
    ).where(*where)).one()
    reasons = session.execute(select(r.reason_code, func.count()).where(
        *where, r.status == "rejected").group_by(r.reason_code).order_by(r.reason_code)).all()
    requests, admissions = int(row[0]), int(row[1])
    return {"requests": requests, "admissions": admissions,
            "share": round(admissions / requests, 4) if requests else 0,
            "days": int(row[2]), "over": int(row[3]), "pending": int(row[4]),
            "rejected": int(row[5]),
            "reasons": [(str(code or "unknown"), int(n)) for code, n in reasons]}


def _parameters(head: list[dict[str, Any]], counts: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        *head,
        {"name": "requests", "valueInteger": counts["requests"]},
        {"name": "admissions", "valueInteger": counts["admissions"]},
        {"name": "share-admitted", "valueDecimal": counts["share"]},
        {"name": "days-used", "valueInteger": counts["days"]},
        {"name": "stays-over-maximum", "valueInteger": counts["over"]},
        {"name": "pending", "valueInteger": counts["pending"]},
        {"name": "rejected", "valueInteger": counts["rejected"],
         **({"part": [{"name": code, "valueInteger": n} for code, n in counts["reasons"]]}
            if counts["reasons"] else {})},
    ]}


def agreement_figures(session: Session, subject: Subject, *,
                      agreement_id: str) -> dict[str, Any]:
    """Parameters: requests, admissions, share admitted, days used, stays over the maximum,
    pending and rejected (by reason) under one agreement. NotFoundError unless the caller
    acts for an organisation party to it (a client with read access to ServiceRequest, or a
    coordinator)."""
    row = session.get(SelfAdmissionAgreementRow, agreement_id)
    if row is None or not _may_see(subject, set(row.parties.strip(",").split(",")),
                                   "ServiceRequest"):
        raise NotFoundError(f"ServiceRequest/{agreement_id} is no self-admission agreement "
                            "known to you.")
    return _parameters([
        {"name": "agreement", "valueReference": {"reference": f"ServiceRequest/{agreement_id}"}},
        {"name": "patient", "valueReference": {"reference": row.patient_ref}},
        {"name": "unit", "valueReference": {"reference": f"Location/{row.unit_id}"}},
        {"name": "max-days-per-stay", "valueInteger": row.max_days_per_stay},
        {"name": "min-days-between-stays", "valueInteger": row.min_days_between_stays},
    ], _counts(session, SelfAdmissionRequestRow.agreement_id == agreement_id))


def unit_figures(session: Session, subject: Subject, *, unit_id: str) -> dict[str, Any]:
    """The same figures for every agreement on one unit, with its beds. NotFoundError unless
    the caller acts for the unit's centre or an organisation party to one of its agreements."""
    unit = session.get(SelfAdmissionUnitRow, unit_id)
    parties = {p for (text,) in session.execute(select(SelfAdmissionAgreementRow.parties).where(
        SelfAdmissionAgreementRow.unit_id == unit_id)) for p in text.strip(",").split(",")}
    if unit is None or not _may_see(subject, parties | {unit.managing_org or ""}, "Location"):
        raise NotFoundError(f"Location/{unit_id} is no unit with user-controlled beds known "
                            "to you.")
    agreements = session.execute(select(func.count()).where(
        SelfAdmissionAgreementRow.unit_id == unit_id)).scalar_one()
    return _parameters([
        {"name": "unit", "valueReference": {"reference": f"Location/{unit_id}"}},
        {"name": "beds", "valueInteger": unit.beds},
        {"name": "agreements", "valueInteger": int(agreements)},
    ], _counts(session, SelfAdmissionRequestRow.unit_id == unit_id))

"""A coordinator's pending transitions: what their organisation has to act on or watch.

Everything is read through the store's search as the signed-in coordinator, so the consent
gate and organisation isolation decide what appears (a patient another organisation has no
consent for does not), and each cross-organisation decision lands in the audit trail with the
page view. Dead letters come from the delivery service, which shows a person only the
deliveries of messages their organisation sent or received.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.delivery import service as deliveries
from hub.fhir.identifiers import DNR_SYSTEM, FNR_SYSTEM
from hub.store import query as search_mod
from hub.store import service
from hub.store.dates import parse_range
from hub.store.resources import StoredResource
from hub.ui.i18n import N_
from hub.workflows.followup import TASK_CODE, is_overdue

OPEN_STATUSES = "draft,requested,received,accepted,ready,in-progress,on-hold"
LIMIT = 200
"""At most this many of each kind are read for the page."""
LOCAL = ZoneInfo("Europe/Oslo")
MEETING_KINDS = {"network": N_("Network meeting"), "cooperation": N_("Cooperation meeting"),
                 "responsibility": N_("Responsibility meeting")}
ANSWERS = {"accepted": N_("Will come"), "declined": N_("Will not come"),
           "tentative": N_("Might come"), "needs-action": N_("Not answered yet")}
EVENTS = {
    "consent-changed": N_("Consent changed"), "care-plan-shared": N_("Individual plan shared"),
    "admission-notice": N_("Admission notice"),
    "self-admission-agreement": N_("Self-admission agreement"),
    "self-admission-request": N_("Self-admission request"),
    "self-admission-response": N_("Answer to a self-admission request"),
    "meeting-invitation": N_("Meeting invitation"), "meeting-response": N_("Answer to a meeting"),
    "ready-for-discharge": N_("Ready for discharge"),
    "ready-for-discharge-withdrawn": N_("Ready for discharge withdrawn"),
    "discharge-readiness-response": N_("Answer to ready for discharge"),
    "discharge-notice": N_("Discharge notice"), "follow-up-contact": N_("Follow-up contact"),
    "follow-up-overdue": N_("Follow-up check overdue"),
    "discharge-readiness-overdue": N_("Ready for discharge unanswered"),
    "meeting-reminder": N_("Meeting reminder"), "consent-expiring": N_("Consent expiring"),
    "delivery-unacknowledged": N_("Delivery not acknowledged"),
}
"""The message events in words (translated where shown)."""
Body = Mapping[str, Any]
FOLLOW_UP_CHECK = N_("Follow-up check after discharge")


@dataclass(frozen=True)
class When:
    """A moment as people read it: Norwegian local time, and how far from now."""

    at: datetime | None
    text: str
    relative: str
    date_only: bool = False

    @property
    def iso(self) -> str:
        """The instant for a <time datetime=...> attribute."""
        return self.at.isoformat() if self.at else ""


def _relative(at: datetime, now: datetime) -> str:
    days = (at - now) / timedelta(days=1)
    if abs(days) < 1:
        hours = round(abs(days) * 24)
        span = "less than an hour" if hours == 0 else f"{hours} hour{'s' * (hours != 1)}"
    else:
        whole = round(abs(days))
        span = f"{whole} day{'s' * (whole != 1)}"
    if span == "less than an hour":
        return "within the hour"
    return f"in {span}" if days > 0 else f"{span} ago"


def when(value: Any, now: datetime, *, date_only: bool = False) -> When:
    """A FHIR date or dateTime as `When` ("not given" when missing or unreadable)."""
    span = parse_range(value) if isinstance(value, str) else None
    if span is None:
        return When(None, "not given", "")
    at = span[0]
    local = at.astimezone(LOCAL)
    text = local.strftime("%d.%m.%Y") if date_only or len(value) <= 10 else \
        local.strftime("%d.%m.%Y %H:%M")
    return When(at, text, _relative(at, now), date_only or len(value) <= 10)


@dataclass(frozen=True)
class PatientLabel:
    """A patient as coordinators see them: name, birth date, the masked fødselsnummer or
    D-nummer that tells two namesakes apart, and the id of their page (None: not shown)."""

    name: str
    born: str = ""
    masked: str = ""
    id: str | None = None

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})" if self.masked else self.name


HIDDEN = PatientLabel(N_("A patient not shown to you"))


@dataclass(frozen=True)
class DischargeLine:
    """An open ready-for-discharge Task."""

    patient: PatientLabel
    planned: When
    status: str
    centre: str
    municipality: str
    can_receive: When | None
    undelivered: bool = False  # the message asking for the answer is a dead letter


@dataclass(frozen=True)
class FollowUpLine:
    """An open follow-up check after discharge."""

    patient: PatientLabel
    due: When
    overdue: bool
    owner: str
    what: str


@dataclass(frozen=True)
class SelfAdmissionLine:
    """A self-admission request not yet answered."""

    patient: PatientLabel
    stay_from: When
    stay_to: When
    requester: str
    asked: When


@dataclass(frozen=True)
class MeetingLine:
    """A booked meeting ahead, and the patient's answer."""

    patient: PatientLabel
    kind: str
    theme: str
    start: When
    answer: str
    wishes: str


@dataclass(frozen=True)
class FlagLine:
    """An active Flag on a patient."""

    patient: PatientLabel
    what: str
    since: When
    author: str  # "": set by the hub itself


@dataclass(frozen=True)
class DeadLetterLine:
    """A delivery the hub gave up on, which the coordinator may replay."""

    id: int
    event: str
    patient: PatientLabel
    sender: str
    receiver: str
    attempts: int
    error: str
    since: When


@dataclass
class Transitions:
    """Everything in a coordinator's pending transitions, and the patients it names."""

    discharges: list[DischargeLine] = field(default_factory=list)
    follow_ups: list[FollowUpLine] = field(default_factory=list)
    self_admissions: list[SelfAdmissionLine] = field(default_factory=list)
    meetings: list[MeetingLine] = field(default_factory=list)
    flags: list[FlagLine] = field(default_factory=list)
    dead_letters: list[DeadLetterLine] = field(default_factory=list)
    patients: tuple[str, ...] = ()

    @property
    def overdue(self) -> int:
        """How many follow-up checks are overdue."""
        return sum(f.overdue for f in self.follow_ups)


def reading_subject(subject: Subject) -> Subject:
    """A coordinator reads as their organisation's systems would (read scopes), no more: the
    consent gate and isolation still decide each record."""
    return dataclasses.replace(subject, scopes=frozenset({"system/*.read"}))


def _search(session: Session, subject: Subject, rtype: str,
            criteria: list[tuple[str, str]], sort: list[str] | None = None
            ) -> list[StoredResource]:
    request = search_mod.SearchRequest(rtype, criteria, count=LIMIT, sort=sort or [])
    matches, _, _ = service.search(session, subject, request=request)
    return [m for m in matches if m.body is not None]


def _ref(value: Any) -> str:
    return str(value.get("reference", "")) if isinstance(value, dict) else ""


def _codes(concept: Any) -> set[tuple[str, str]]:
    if not isinstance(concept, dict):
        return set()
    return {(str(c.get("system")), str(c.get("code"))) for c in concept.get("coding", [])}


def _text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    return next((str(c.get("display") or c.get("code")) for c in concept.get("coding", [])), "")


class _Names:
    """Names of the patients and organisations the page shows, read as the coordinator."""

    def __init__(self, session: Session, subject: Subject) -> None:
        self.session, self.subject = session, subject
        self.patients: dict[str, PatientLabel] = {}
        self.orgs = {f"Organization/{o.id}": str((o.body or {}).get("name") or o.id)
                     for o in _search(session, subject, "Organization", [])}

    def load_patients(self, refs: Iterable[str]) -> None:
        ids = sorted({r.split("/", 1)[1] for r in refs if r.startswith("Patient/")})
        for start in range(0, len(ids), 50):
            for p in _search(self.session, self.subject, "Patient",
                             [("_id", ",".join(ids[start:start + 50]))]):
                assert p.body is not None
                name = (p.body.get("name") or [{}])[0]
                given = " ".join(name.get("given", []))
                full = f"{given} {name.get('family', '')}".strip() or "(no name)"
                self.patients[f"Patient/{p.id}"] = PatientLabel(
                    full, str(p.body.get("birthDate") or ""), _masked(p.body), p.id)

    def patient(self, ref: str) -> PatientLabel:
        return self.patients.get(ref, HIDDEN)

    def org(self, ref: str) -> str:
        return self.orgs.get(ref, ref or "not given")


def _masked(body: Body) -> str:
    """The fødselsnummer or D-nummer with its personal part hidden: `131169 *****`."""
    for ident in body.get("identifier") or []:
        value = str(ident.get("value", "")) if isinstance(ident, dict) else ""
        if ident.get("system") in (FNR_SYSTEM, DNR_SYSTEM) and len(value) == 11:
            return f"{value[:6]} *****"
    return ""


def _own(body: Body, org_ref: str, *fields: str) -> bool:
    return any(_ref(body.get(f)) == org_ref for f in fields)


def _finished_encounters(session: Session, subject: Subject, refs: Iterable[str]) -> set[str]:
    ids = sorted({r.split("/", 1)[1] for r in refs if r.startswith("Encounter/")})
    if not ids:
        return set()
    return {f"Encounter/{e.id}" for e in _search(session, subject, "Encounter",
                                                  [("_id", ",".join(ids))])
            if e.body is not None and e.body.get("status") in ("finished", "cancelled")}


def _can_receive(body: Body, now: datetime) -> When | None:
    can = next((o.get("valueDateTime") for o in body.get("output", [])
                if isinstance(o, dict) and o.get("valueDateTime")), None)
    return when(can, now) if can else None


def pending_transitions(session: Session, subject: Subject, *,
                        now: datetime) -> Transitions:
    """The coordinator's organisation's open discharges, follow-up checks (overdue first),
    self-admission requests, meetings ahead, active flags and dead letters."""
    reader = reading_subject(subject)
    org_ref = f"Organization/{subject.organization_id}"
    names = _Names(session, reader)

    def tasks(code: str, statuses: str) -> list[Body]:
        found = _search(session, reader, "Task", [("code", f"{TASK_CODE}|{code}"),
                                                  ("status", statuses)])
        return [t.body for t in found if t.body is not None]

    discharges = [t for t in tasks("discharge-readiness", "requested,accepted")
                  if _own(t, org_ref, "requester", "owner")]
    finished = _finished_encounters(session, reader, (_ref(t.get("focus")) for t in discharges))
    discharges = [t for t in discharges if _ref(t.get("focus")) not in finished]
    checks = tasks("follow-up-check", OPEN_STATUSES)
    requests = [t for t in tasks("self-admission-request", "requested,received")
                if _own(t, org_ref, "requester", "owner")]
    meetings = [a.body for a in _search(session, reader, "Appointment",
                                        [("status", "booked"), ("date", f"ge{now.isoformat()}")],
                                        sort=["date"]) if a.body is not None]
    flags = [f.body for f in _search(session, reader, "Flag", [("status", "active")])
             if f.body is not None]

    dead = deliveries.list_deliveries(session, subject, statuses=["dead-letter"], limit=50)
    patient_refs = [_ref(t.get("for")) for t in discharges + checks + requests]
    patient_refs += [listed.delivery.patient_ref or "" for listed in dead]
    patient_refs += [_ref(f.get("subject")) for f in flags]
    patient_refs += [_ref(p.get("actor")) for m in meetings for p in m.get("participant", [])]
    names.load_patients(patient_refs)
    out = Transitions(patients=tuple(r for r in dict.fromkeys(patient_refs)
                                     if r in names.patients))

    for t in sorted(discharges, key=lambda b: when(
            (b.get("restriction") or {}).get("period", {}).get("start"), now).iso):
        period = (t.get("restriction") or {}).get("period", {})
        out.discharges.append(DischargeLine(
            names.patient(_ref(t.get("for"))), when(period.get("start"), now),
            str(t.get("status")), names.org(_ref(t.get("requester"))),
            names.org(_ref(t.get("owner"))), _can_receive(t, now)))

    lines = []
    for t in checks:
        due = when(((t.get("restriction") or {}).get("period") or {}).get("end"), now)
        overdue = is_overdue(t)
        lines.append(FollowUpLine(names.patient(_ref(t.get("for"))), due, overdue,
                                  names.org(_ref(t.get("owner"))),
                                  str(t.get("description") or FOLLOW_UP_CHECK)))
    far = datetime.max.replace(tzinfo=now.tzinfo)
    out.follow_ups = sorted(lines, key=lambda f: (not f.overdue, f.due.at or far))

    for t in requests:
        period = (t.get("restriction") or {}).get("period", {})
        out.self_admissions.append(SelfAdmissionLine(
            names.patient(_ref(t.get("for"))), when(period.get("start"), now),
            when(period.get("end"), now), names.org(_ref(t.get("requester"))),
            when(t.get("authoredOn"), now)))

    out.meetings = meeting_lines(session, reader, meetings, now, names)

    for f in flags:
        out.flags.append(FlagLine(names.patient(_ref(f.get("subject"))),
                                  _text(f.get("code")) or "flag",
                                  when((f.get("period") or {}).get("start"), now),
                                  names.org(_ref(f.get("author")))
                                  if f.get("author") else ""))
    out.flags.sort(key=lambda f: f.since.iso, reverse=True)

    for listed in dead:
        d, m = listed.delivery, listed.message
        out.dead_letters.append(DeadLetterLine(
            d.id, m.event, names.patient(d.patient_ref or ""),
            names.org(f"Organization/{m.sender_org}"),
            names.org(f"Organization/{d.receiver_org}"), d.attempts,
            d.last_error or d.reason or "", when(d.created_at.isoformat(), now)))
    blocked = {(ln.patient.id, ln.receiver) for ln in out.dead_letters
               if ln.event == "ready-for-discharge"}
    out.discharges = [dataclasses.replace(ln, undelivered=(ln.patient.id, ln.municipality)
                                          in blocked) for ln in out.discharges]
    return out


def meeting_lines(session: Session, reader: Subject, meetings: Sequence[Body],
                  now: datetime, names: _Names | None = None) -> list[MeetingLine]:
    """The meetings with the patient's latest answer and what they want raised."""
    if names is None:
        names = _Names(session, reader)
        names.load_patients(_ref(p.get("actor")) for m in meetings
                            for p in m.get("participant", []))
    answers: dict[str, Body] = {}
    ids = [str(m.get("id")) for m in meetings]
    if ids:
        for r in _search(session, reader, "AppointmentResponse",
                         [("appointment", ",".join(f"Appointment/{i}" for i in ids))],
                         sort=["_lastUpdated"]):
            assert r.body is not None
            if _ref(r.body.get("actor")).startswith("Patient/"):
                answers[_ref(r.body.get("appointment"))] = r.body  # the latest wins
    out = []
    for m in meetings:
        patient: Body = next((p for p in m.get("participant", [])
                              if _ref(p.get("actor")).startswith("Patient/")), {})
        answer = answers.get(f"Appointment/{m.get('id')}")
        status = str((answer or {}).get("participantStatus") or patient.get("status")
                     or "needs-action")
        kind = next((code for t in m.get("serviceType", []) for _, code in _codes(t)), "")
        out.append(MeetingLine(
            names.patient(_ref(patient.get("actor"))), MEETING_KINDS.get(kind, N_("Meeting")),
            str(m.get("description") or ""), when(m.get("start"), now),
            ANSWERS.get(status, status), str((answer or {}).get("comment") or "")))
    return out


def only_named(pending: Transitions, text: str) -> Transitions:
    """The transitions of the patients whose name contains `text` (any case)."""
    wanted = text.strip().casefold()
    if not wanted:
        return pending

    def keep(lines: Sequence[Any]) -> list[Any]:
        return [ln for ln in lines if wanted in ln.patient.name.casefold()]

    return Transitions(keep(pending.discharges), keep(pending.follow_ups),
                       keep(pending.self_admissions), keep(pending.meetings),
                       keep(pending.flags), keep(pending.dead_letters), pending.patients)

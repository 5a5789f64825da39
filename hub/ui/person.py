"""The person's page: what a coordinator goes through with the person (CONTRACT section 8 and
the studies behind the hub: the person's own voice in planning).

The individual plan with the person's goals in their own words and whether they took part,
meetings ahead with their answer and what they want raised, their consents in plain words,
self-admission stays and requests, and follow-up checks after discharge. Everything is read
through the store's search as the signed-in coordinator (read scopes), so the consent gate
decides each record: a person another organisation may not see is not found at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.store import query as search_mod
from hub.store import service
from hub.store.dates import parse_range
from hub.store.resources import StoredResource
from hub.ui.disclosures import Person, person_of
from hub.ui.i18n import N_
from hub.ui.transitions import MeetingLine, meeting_lines, reading_subject
from hub.workflows.followup import TASK_CODE, is_overdue

Body = Mapping[str, Any]
LIMIT = 200
TASK_STATES = {"requested": N_("Asked, not answered yet"), "received": N_("Received"),
               "accepted": N_("Accepted"), "rejected": N_("Turned down"),
               "cancelled": N_("Cancelled"), "in-progress": N_("In progress"),
               "completed": N_("Done"), "on-hold": N_("On hold"), "ready": N_("Ready"),
               "draft": N_("Draft"), "failed": N_("Failed")}


@dataclass(frozen=True)
class GoalLine:
    """One goal of the plan, in the words it was written down in."""

    text: str
    own_words: bool  # expressed by the person themselves
    status: str


@dataclass(frozen=True)
class PlanView:
    """The individual plan as the person and coordinator read it together."""

    title: str
    author: str
    created: datetime | None
    took_part: bool
    goals: list[GoalLine]
    team: list[tuple[str, str]]  # (role, who)


@dataclass(frozen=True)
class ConsentLine:
    """A consent, in plain words."""

    custodian: str
    status: str
    recipients: list[str]
    denied: list[str]
    start: datetime | None
    end: datetime | None
    individual_plan: bool
    only_types: list[str]


@dataclass(frozen=True)
class TaskLine:
    """A self-admission request or a follow-up check."""

    start: datetime | None
    end: datetime | None
    status: str
    overdue: bool
    note: str
    who: str


@dataclass
class PersonPage:
    """Everything on the person's page that the coordinator may see."""

    person: Person
    plans: list[PlanView] = field(default_factory=list)
    meetings: list[MeetingLine] = field(default_factory=list)
    consents: list[ConsentLine] = field(default_factory=list)
    self_admissions: list[TaskLine] = field(default_factory=list)
    follow_ups: list[TaskLine] = field(default_factory=list)


def _ref(value: Any) -> str:
    return str(value.get("reference", "")) if isinstance(value, dict) else ""


def _at(value: Any) -> datetime | None:
    span = parse_range(value) if isinstance(value, str) else None
    return span[0] if span else None


def _search(session: Session, subject: Subject, rtype: str,
            criteria: list[tuple[str, str]]) -> list[StoredResource]:
    request = search_mod.SearchRequest(rtype, criteria, count=LIMIT, sort=["-_lastUpdated"])
    matches, _, _ = service.search(session, subject, request=request)
    return [m for m in matches if m.body is not None]


def person_page(session: Session, subject: Subject, *, patient_id: str,
                now: datetime) -> PersonPage | None:
    """The person's page as `subject` (a coordinator) may see it; None when the person is
    not shown to them (no consent to share with their organisation, nothing it sent)."""
    reader = reading_subject(subject)
    found = _search(session, reader, "Patient", [("_id", patient_id)])
    if len(found) != 1 or found[0].id != patient_id or found[0].body is None:
        return None  # one person, the one asked for
    patient_ref = f"Patient/{patient_id}"
    orgs = {f"Organization/{o.id}": str((o.body or {}).get("name") or o.id)
            for o in _search(session, reader, "Organization", [])}
    page = PersonPage(person_of(found[0].body))
    about = [("patient", patient_ref)]
    goals = {f"Goal/{g.id}": g.body for g in _search(session, reader, "Goal", about)
             if g.body is not None}
    teams = {f"CareTeam/{t.id}": t.body for t in _search(session, reader, "CareTeam", about)
             if t.body is not None}
    for plan in _search(session, reader, "CarePlan", about):
        assert plan.body is not None
        view = _plan(plan.body, goals, teams, orgs, patient_ref)
        if view is not None:
            page.plans.append(view)
    meetings = [a.body for a in _search(session, reader, "Appointment",
                                        [*about, ("date", f"ge{now.isoformat()}")])
                if a.body is not None and a.body.get("status") in ("booked", "proposed",
                                                                    "pending")]
    meetings.sort(key=lambda m: str(m.get("start", "")))
    page.meetings = meeting_lines(session, reader, meetings, now)
    page.consents = [_consent(c.body, orgs) for c in _search(session, reader, "Consent", about)
                     if c.body is not None]
    for task in _search(session, reader, "Task", [*about, ("code", f"{TASK_CODE}|"
                                                                   "self-admission-request")]):
        assert task.body is not None
        page.self_admissions.append(_task(task.body, orgs, "requester"))
    for task in _search(session, reader, "Task", [*about, ("code", f"{TASK_CODE}|"
                                                                   "follow-up-check")]):
        assert task.body is not None
        page.follow_ups.append(_task(task.body, orgs, "owner"))
    page.self_admissions.sort(key=lambda t: t.start or now, reverse=True)
    page.follow_ups.sort(key=lambda t: t.end or now)
    return page


def _plan(body: Body, goals: Mapping[str, Body], teams: Mapping[str, Body],
          orgs: Mapping[str, str], patient_ref: str) -> PlanView | None:
    if body.get("status") not in ("active", "draft", "on-hold", "completed"):
        return None
    lines = []
    for ref in body.get("goal", []):
        goal = goals.get(_ref(ref))
        if goal is None:
            continue
        text = str((goal.get("description") or {}).get("text") or "")
        lines.append(GoalLine(text, _ref(goal.get("expressedBy")) == patient_ref,
                              str(goal.get("lifecycleStatus") or "")))
    team: list[tuple[str, str]] = []
    took_part = any(g.own_words for g in lines) or any(
        str(e.get("url", "")).endswith("/plan-participation")
        and e.get("valueCode") == "took-part" for e in body.get("extension", [])
        if isinstance(e, dict))
    for ref in body.get("careTeam", []):
        for p in (teams.get(_ref(ref)) or {}).get("participant", []):
            member = _ref(p.get("member"))
            role = ", ".join(str(r.get("text") or "") for r in p.get("role", []))
            if member == patient_ref:
                took_part = True
            team.append((role, orgs.get(member, N_("the person") if member == patient_ref
                                         else member)))
    return PlanView(str(body.get("title") or N_("Individual plan")),
                    orgs.get(_ref(body.get("author")), ""), _at(body.get("created")),
                    took_part, lines, team)


def _consent(body: Body, orgs: Mapping[str, str]) -> ConsentLine:
    provision = body.get("provision") or {}

    def names(refs: Sequence[Any]) -> list[str]:
        return [orgs.get(_ref(a.get("reference")), _ref(a.get("reference")))
                for a in refs if isinstance(a, dict)]

    denied = [n for sub in provision.get("provision", []) if isinstance(sub, dict)
              and sub.get("type") == "deny" for n in names(sub.get("actor", []))]
    period = provision.get("period") or {}
    plan = any(c.get("code") == "individual-plan" for cat in body.get("category", [])
               for c in cat.get("coding", []))
    custodian = ", ".join(orgs.get(_ref(o), _ref(o)) for o in body.get("organization", []))
    return ConsentLine(custodian, str(body.get("status", "")),
                       names(provision.get("actor", [])), denied, _at(period.get("start")),
                       _at(period.get("end")), plan,
                       [str(c.get("code")) for c in provision.get("class", [])
                        if isinstance(c, dict)])


def _task(body: Body, orgs: Mapping[str, str], who: str) -> TaskLine:
    period = (body.get("restriction") or {}).get("period") or {}
    reason = str((body.get("statusReason") or {}).get("text") or "")
    return TaskLine(_at(period.get("start")), _at(period.get("end")),
                    TASK_STATES.get(str(body.get("status")), str(body.get("status"))),
                    is_overdue(body), reason or str(body.get("description") or ""),
                    orgs.get(_ref(body.get(who)), ""))

"""The individual plan (individuell plan): care-plan-shared (CONTRACT section 4, issue 6).

What the profile carehub-care-plan (and carehub-goal, carehub-care-team) already checks
before anything is stored: the plan says it is an individual plan (category), has a subject,
a period with a start, at least one Goal and a CareTeam; each activity says what is done and
who is responsible (detail.performer); the next revision (extension plan-revision-date) is
not before the plan starts; each Goal has a category and an expressedBy; the CareTeam names
its coordinator.

What this handler checks against the store, after intake stored the message (each broken
rule is a 422 and nothing of the message is kept):
- The plan, its Goals and its CareTeams are about the message's patient, and every Goal is
  expressed by the patient: an individual plan holds the patient's own goals.
- Every Goal and CareTeam the plan names exists (in the message or stored), and every Goal or
  CareTeam the message carries is one the plan names.
- Each activity names, in detail.performer, an organisation registered with the hub.
- One current plan per patient. A plan with the same identifier (or the hub's fullUrl of a
  stored plan) is a new version of it (intake places it). A current (active or on-hold)
  individual plan with another identifier, while the patient has another current one, is
  refused: send it as a new version of that plan, or end that one first (completed or
  revoked). On PostgreSQL a transaction lock per patient keeps two plans sent at once from
  both passing; SQLite writes one transaction at a time anyway.
- Consent (CONTRACT section 5; the regulation on individual plans needs the patient's consent
  to it). The plan is always kept; the consent gate (hub/consent/gate.py) shares it only with
  receivers that a Consent of the patient, recorded by the plan's author with category
  individual-plan, permits. Without one the plan is withheld (the response names the missing
  consent per receiver) and recording it later releases what was withheld for that reason.

The response notes say what was stored: a new plan or version N, the goals, the care team and
its coordinator, the patient's participation and the next revision.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from hub.consent.gate import Gate
from hub.consent.periods import check_period
from hub.db.types import utcnow
from hub.errors import InvalidResourceError, Issue
from hub.fhir import vocab
from hub.messaging.handlers import Accepted, handles
from hub.store import service
from hub.store.query import SearchRequest
from hub.workflows.stored import HUB, body, identifier, problem, ref, reject, shown

BASE = "http://carehub.example/fhir"
PARTICIPATION_URL = f"{BASE}/StructureDefinition/plan-participation"
REVISION_URL = f"{BASE}/StructureDefinition/plan-revision-date"
ROLE_SYSTEM = f"{BASE}/CodeSystem/care-team-role"
CURRENT = ("active", "on-hold")
PARTICIPATION_WORDS = {"took-part": "the patient took part in making it",
                       "declined": "the patient was asked and declined to take part",
                       "could-not": "the patient could not take part"}


@handles("care-plan-shared")
def individual_plan(session: Session, accepted: Accepted) -> None:
    """Check the stored plan against the rules above and say what was stored. Raises
    InvalidResourceError (422) naming each broken rule."""
    plan_ref = next(r for r in accepted.focus if r.startswith("CarePlan/"))
    plan = accepted.stored[plan_ref]
    patient = f"Patient/{accepted.patient_id}"
    issues: list[Issue] = []
    if ref(plan.get("subject")) != patient:
        issues.append(problem(
            f"The plan's subject is {shown(plan.get('subject'))}, but the message is about "
            f"{patient}: an individual plan is about the patient the message carries.",
            accepted.where(plan_ref, "subject")))
    goals = _members(session, accepted, plan_ref, plan, "goal", "Goal", issues)
    teams = _members(session, accepted, plan_ref, plan, "careTeam", "CareTeam", issues)
    for goal_ref, goal in goals:
        issues.extend(_goal_issues(accepted, goal_ref, goal, patient))
    for team_ref, team in teams:
        if ref(team.get("subject")) != patient:
            issues.append(problem(
                f"The care team {team_ref} is about {shown(team.get('subject'))}, not the "
                f"plan's patient {patient}.", accepted.where(team_ref, "subject")))
    issues.extend(_activity_issues(session, accepted, plan_ref, plan))
    reject(issues)
    consent_note = _consent_rule(session, accepted, patient)
    if plan.get("status") in CURRENT:
        _one_current_plan(session, accepted, plan_ref, patient)
    accepted.notes.extend(_notes(plan_ref, plan, goals, teams,
                                 unchanged=plan_ref in accepted.unchanged))
    if consent_note:
        accepted.notes.append(consent_note)


def _members(session: Session, accepted: Accepted, plan_ref: str, plan: dict[str, Any],
             key: str, rtype: str, issues: list[Issue]) -> list[tuple[str, dict[str, Any]]]:
    """The plan's Goals (or CareTeams), each (Type/id, body); every one it names must exist,
    and every one the message carries must be named by the plan."""
    found: list[tuple[str, dict[str, Any]]] = []
    for i, element in enumerate(plan.get(key) or []):
        target = ref(element)
        member = body(session, accepted, target, rtype)
        if member is None or target is None:
            issues.append(problem(
                f"CarePlan.{key}[{i}] names {shown(element)}, which is no {rtype} of this "
                f"message nor one stored at the hub: send the {rtype} in the message and point "
                "at its fullUrl.", accepted.where(plan_ref, f"{key}[{i}]"), "not-found"))
        else:
            found.append((target, member))
    named = {target for target, _ in found}
    for carried in accepted.stored:
        if carried.startswith(f"{rtype}/") and carried not in named:
            issues.append(problem(
                f"The message carries {carried}, which the plan does not name in "
                f"CarePlan.{key}: list it there, or leave it out of the message.",
                accepted.where(carried)))
    return found


def _goal_issues(accepted: Accepted, goal_ref: str, goal: dict[str, Any],
                 patient: str) -> list[Issue]:
    what = repr(str((goal.get("description") or {}).get("text") or goal_ref))
    issues = []
    if ref(goal.get("subject")) != patient:
        issues.append(problem(
            f"The goal {what} is about {shown(goal.get('subject'))}, not the plan's patient "
            f"{patient}.", accepted.where(goal_ref, "subject")))
    if ref(goal.get("expressedBy")) != patient:
        issues.append(problem(
            f"The goal {what} is expressed by {shown(goal.get('expressedBy'))}, not by the "
            f"patient ({patient}): an individual plan holds the patient's own goals. Set "
            "Goal.expressedBy to the patient, or write what others want as an activity of "
            "the plan.", accepted.where(goal_ref, "expressedBy")))
    return issues


def _activity_issues(session: Session, accepted: Accepted, plan_ref: str,
                     plan: dict[str, Any]) -> list[Issue]:
    issues = []
    for i, activity in enumerate(plan.get("activity") or []):
        detail = (activity.get("detail") or {}) if isinstance(activity, dict) else {}
        performers = detail.get("performer") or []
        orgs = [r for r in map(ref, performers) if r and r.startswith("Organization/")]
        if not any(service.exists(session, HUB, resource_type="Organization",
                                  resource_id=org.split("/", 1)[1]) for org in orgs):
            named = ", ".join(shown(p) for p in performers) or "no one"
            issues.append(problem(
                f"The activity {str(detail.get('description') or i)!r} names {named} as "
                "performer, but no organisation registered with the hub: name the "
                "organisation responsible for it (Organization/<id>, or by "
                "organisasjonsnummer) in detail.performer.",
                accepted.where(plan_ref, f"activity[{i}].detail.performer")))
    return issues


def _consent_rule(session: Session, accepted: Accepted, patient: str) -> str | None:
    """A note when no consent to the individual plan, recorded by its author, is in force:
    the plan is kept and withheld until there is one."""
    assert accepted.patient_id is not None
    consents = Gate(session, HUB).consents_by(accepted.patient_id, accepted.sender_org)
    now = utcnow()
    if any(vocab.is_plan_consent(c) and c.get("status") == "active"
           and check_period((c.get("provision") or {}).get("period"), now) == "in"
           for c in consents):
        return None
    return (f"No active consent to the individual plan of {patient} is recorded by "
            f"Organization/{accepted.sender_org}: the plan is kept, and no receiver gets it "
            "until you record one (a Consent with category "
            f"{BASE}/CodeSystem/consent-category|individual-plan naming each receiver in "
            "provision.actor with role IRCP); then it is delivered without sending it again.")


def _lock_patient(session: Session, patient: str) -> None:
    """Serialise plan checks for one patient across transactions (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"individual-plan:{patient}".encode()).digest()[:8],
                             "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _one_current_plan(session: Session, accepted: Accepted, plan_ref: str,
                      patient: str) -> None:
    _lock_patient(session, patient)
    found, _, _ = service.search(session, HUB, request=SearchRequest(
        "CarePlan", [("subject", patient), ("status", ",".join(CURRENT))], count=100))
    others = [r for r in found if r.relative_url != plan_ref and r.body is not None
              and vocab.is_individual_plan(r.body)]
    if others:
        other = others[0]
        assert other.body is not None
        ident = identifier(other.body)
        as_version = (f"as a new version of that plan (identifier {ident})" if ident else
                      f"as a new version of that plan (fullUrl {accepted.settings.fhir_base}/"
                      f"{other.relative_url})")
        raise InvalidResourceError(
            f"{patient} already has a current individual plan, {other.relative_url} "
            f"(status {other.body.get('status')}); a patient has one current plan. Send this "
            f"plan {as_version}, or end that plan first (a new version of it with status "
            "completed or revoked).", expression=accepted.where(plan_ref, "identifier"))


def _notes(plan_ref: str, plan: dict[str, Any], goals: list[tuple[str, dict[str, Any]]],
           teams: list[tuple[str, dict[str, Any]]], *, unchanged: bool) -> list[str]:
    version = str((plan.get("meta") or {}).get("versionId") or "1")
    stored = ("kept: the same as its stored version " + version if unchanged else
              "stored as a new plan" if version == "1" else f"stored as version {version}")
    notes = [f"Individual plan {plan_ref} (status {plan.get('status')}) {stored}."]
    if goals:
        notes.append(f"{len(goals)} goal{'s' if len(goals) > 1 else ''} of the patient's own: "
                     + "; ".join(_goal_words(ref_, goal) for ref_, goal in goals) + ".")
    for team_ref, team in teams:
        coordinators = [shown(p.get("member")) for p in team.get("participant") or []
                        if _is_coordinator(p)]
        notes.append(f"Care team {team_ref}, coordinator {', '.join(coordinators)}.")
    extensions = {e.get("url"): e for e in plan.get("extension") or [] if isinstance(e, dict)}
    participation = extensions.get(PARTICIPATION_URL, {}).get("valueCode")
    if participation:
        notes.append(f"Participation: {PARTICIPATION_WORDS.get(participation, participation)}.")
    else:
        notes.append("The plan does not say whether the patient took part in making it: add "
                     f"the extension {PARTICIPATION_URL} (took-part, declined or could-not) "
                     "to the next version.")
    revision = extensions.get(REVISION_URL, {}).get("valueDate")
    if revision:
        notes.append(f"Next revision with the patient: {revision}.")
    return notes


def _goal_words(goal_ref: str, goal: dict[str, Any]) -> str:
    kinds = [c.get("code") or "" for cat in goal.get("category") or []
             for c in cat.get("coding") or []] or [
        str(cat.get("text")) for cat in goal.get("category") or [] if cat.get("text")]
    what = str((goal.get("description") or {}).get("text") or "")
    return f"{goal_ref} ({', '.join(kinds)}) {what!r}"


def _is_coordinator(participant: dict[str, Any]) -> bool:
    for role in participant.get("role") or []:
        codes = {(c.get("system"), c.get("code")) for c in role.get("coding") or []}
        words = str(role.get("text") or "").strip().lower()
        if (ROLE_SYSTEM, "coordinator") in codes or words in ("koordinator", "coordinator"):
            return True
    return False

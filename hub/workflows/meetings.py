"""Meetings about a patient: meeting-invitation and meeting-response (CONTRACT section 4).

Kinds (Appointment.serviceType, CodeSystem meeting-type):
- network: the patient's own meeting. The patient chooses who comes (relatives as
  RelatedPerson, friends, services) and the theme (`description`); the patient is a
  *required* participant.
- cooperation, responsibility: meetings of the services (the responsibility group works on the
  individual plan). The patient is still a participant, required or optional: invited, or asked
  what to raise (their answer's `comment`).
A meeting without the patient among its participants is refused whatever its kind: the
studies of centre-municipality coordination describe exactly that failure.

What the profile carehub-meeting checks before anything is stored: the kind, the theme, start
before end, every participant's actor, `required` and `status`; status booked (or, for a
booked meeting, cancelled, fulfilled, noshow or entered-in-error); a cancelled meeting says
why (cancelationReason). carehub-meeting-response: the meeting, who answers, and accepted,
declined or tentative.

What these handlers check against the store (each broken rule is a 422; nothing is kept):
- Invitation: the message's patient is a participant (required in a network meeting); a
  RelatedPerson invited is a relation of this patient. A meeting the hub has not seen is
  sent as booked. A new version of a stored meeting (same identifier, or the hub's fullUrl)
  changes or cancels it only while the version it replaces is booked: a meeting already
  cancelled, fulfilled or marked noshow is not changed again; book a new one.
- Response: the meeting it answers is stored (`appointment` by the invitation's identifier
  or the hub's id) and its sender may see it (the organiser, or an organisation the
  patient's consent lets see it; to any other the meeting is unknown), is about the
  message's patient, and is booked now (a cancelled or past meeting is not answered); the
  one answering (`actor`) is a participant. Declines are recorded like any answer.
- The answer is recorded in the meeting itself: a new version of the stored Appointment whose
  participant carries the answer as its status (written as the organiser's record, with an
  If-Match on the version read, retried when another answer landed in between, so answers
  that arrive at once are all kept). The AppointmentResponse, with the patient's agenda
  wishes in `comment`, is stored as sent.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy.orm import Session

from hub.auth.isolation import PARTICIPANT_ANSWER
from hub.auth.subject import Subject
from hub.errors import GoneError, InvalidResourceError, Issue, PreconditionFailedError
from hub.messaging.handlers import Accepted, handles
from hub.store import service
from hub.workflows.stored import HUB, body, owner, problem, ref, reject, shown

MEETING_TYPE = "http://carehub.example/fhir/CodeSystem/meeting-type"
KIND_WORDS = {"network": "network meeting", "cooperation": "cooperation meeting",
              "responsibility": "responsibility group meeting"}
ANSWER_TRIES = 5
ANSWERS = ("accepted", "declined", "tentative")


def meeting_kind(meeting: dict[str, Any]) -> str:
    """The meeting-type code of an Appointment ('' when it has none)."""
    for service_type in meeting.get("serviceType") or []:
        for coding in service_type.get("coding") or []:
            if coding.get("system") == MEETING_TYPE and isinstance(coding.get("code"), str):
                return str(coding["code"])
    return ""


def _described(meeting_ref: str, meeting: dict[str, Any], *, first: bool = False) -> str:
    """'the network meeting Appointment/x (start, theme)'; `first`: starting a sentence."""
    kind = meeting_kind(meeting)
    return (f"{'The' if first else 'the'} {KIND_WORDS.get(kind, 'meeting')} {meeting_ref} "
            f"({meeting.get('start', 'no time')}, {meeting.get('description', '')!r})")


@handles("meeting-invitation")
def meeting_invitation(session: Session, accepted: Accepted) -> None:
    """Check the stored meeting (and the version it replaces) and say what was recorded.
    Raises InvalidResourceError (422) naming each broken rule."""
    meeting_ref = next(r for r in accepted.focus if r.startswith("Appointment/"))
    meeting = accepted.stored[meeting_ref]
    patient = f"Patient/{accepted.patient_id}"
    kind = meeting_kind(meeting)
    issues = _participant_issues(session, accepted, meeting_ref, meeting, patient, kind)
    reject(issues)
    version = int((meeting.get("meta") or {}).get("versionId") or 1)
    status = meeting.get("status")
    before = (meeting if meeting_ref in accepted.unchanged else
              _replaced(session, meeting_ref, version))
    if before is None and status != "booked":
        raise InvalidResourceError(
            f"The hub has no meeting with this identifier, and a new meeting is sent as "
            f"booked; this one is {status}. To change or cancel a meeting, send it with the "
            "identifier of its invitation.", expression=accepted.where(meeting_ref, "status"))
    if before is not None:
        if before.get("status") != "booked":
            raise InvalidResourceError(
                f"{_described(meeting_ref, before, first=True)} is {before.get('status')} at "
                "the hub; only a booked meeting can be changed or cancelled. To meet again, "
                "send an invitation to a new meeting (a new identifier).",
                expression=accepted.where(meeting_ref, "status"))
        _note_answers_set_back(accepted, before, meeting)
    done = ("booked" if before is None else
            f"sent again unchanged ({status}), version {version}"
            if meeting_ref in accepted.unchanged else
            f"{'cancelled' if status == 'cancelled' else f'changed ({status})'}, version "
            f"{version}")
    accepted.notes.append(
        f"{_described(meeting_ref, meeting, first=True)} {done}; participants: "
        + "; ".join(f"{shown(p.get('actor'))} ({p.get('required')}, {p.get('status')})"
                    for p in meeting.get("participant") or []) + ".")


def _replaced(session: Session, meeting_ref: str, version: int) -> dict[str, Any] | None:
    """The version of the meeting this message replaced (None: a new meeting, or one
    deleted since, which a new invitation books afresh)."""
    if version == 1:
        return None
    try:
        return service.vread(session, HUB, resource_type="Appointment",
                             resource_id=meeting_ref.split("/", 1)[1],
                             version_id=str(version - 1)).body
    except GoneError:
        return None


def _note_answers_set_back(accepted: Accepted, before: dict[str, Any],
                           meeting: dict[str, Any]) -> None:
    """Say which answers recorded at the hub a new version of the meeting sets back to
    needs-action (the organiser's system may not have had them); they stay in history."""
    answered = {ref(p.get("actor")): p.get("status") for p in before.get("participant") or []
                if p.get("status") in ANSWERS}
    set_back = [f"{actor} ({answered[actor]})" for actor in
                (ref(p.get("actor")) for p in meeting.get("participant") or []
                 if p.get("status") == "needs-action") if actor in answered]
    if set_back and meeting.get("status") == "booked":
        accepted.notes.append(
            "This version sets answers the hub had recorded back to needs-action: "
            f"{', '.join(set_back)}. If the meeting did not move, send it with their answers; "
            "otherwise they are asked again.")


def _participant_issues(session: Session, accepted: Accepted, meeting_ref: str,
                        meeting: dict[str, Any], patient: str, kind: str) -> list[Issue]:
    issues: list[Issue] = []
    participants = [p for p in meeting.get("participant") or [] if isinstance(p, dict)]
    own = [p for p in participants if ref(p.get("actor")) == patient]
    words = KIND_WORDS.get(kind, "meeting")
    if not own:
        issues.append(problem(
            f"The patient ({patient}) is not among the participants of this {words}: the "
            "patient is invited to every meeting about them (in a cooperation or "
            "responsibility meeting at least asked what to raise). Add a participant whose "
            "actor is the message's Patient entry.", accepted.where(meeting_ref, "participant")))
    elif kind == "network" and not any(p.get("required") == "required" for p in own):
        issues.append(problem(
            f"In a network meeting the patient ({patient}) chooses who comes and what is "
            "discussed, so the patient is a required participant: set participant.required to "
            "'required' for the patient.", accepted.where(meeting_ref, "participant")))
    for i, participant in enumerate(participants):
        actor = ref(participant.get("actor"))
        relative = body(session, accepted, actor, "RelatedPerson")
        if relative is not None and ref(relative.get("patient")) != patient:
            issues.append(problem(
                f"The relative {actor} invited is a relation of "
                f"{shown(relative.get('patient'))}, not of the meeting's patient ({patient}).",
                accepted.where(meeting_ref, f"participant[{i}].actor")))
    return issues


@handles("meeting-response")
def meeting_response(session: Session, accepted: Accepted) -> None:
    """Record an answer in the meeting it answers. Raises InvalidResourceError (422) when the
    meeting is unknown, not about this patient, no longer booked, or the one answering is
    not invited."""
    answer_ref = next(r for r in accepted.focus if r.startswith("AppointmentResponse/"))
    answer = accepted.stored[answer_ref]
    patient = f"Patient/{accepted.patient_id}"
    meeting_ref = ref(answer.get("appointment"))
    meeting = body(session, accepted, meeting_ref, "Appointment")
    named = answer.get("appointment")
    if meeting is not None and not _seen_by_sender(session, accepted, str(meeting_ref)):
        # Only who may see the meeting answers it: an organisation the invitation never
        # reached (no consent, not a participant) neither changes it nor learns of it, so the
        # refusal is the one for a meeting the hub does not have, naming it as it was sent
        # (not by the hub's id, which intake found for its identifier).
        meeting = None
        if isinstance(named, dict) and named.get("identifier"):
            named = {k: v for k, v in named.items() if k != "reference"}
    if meeting_ref is None or meeting is None:
        raise InvalidResourceError(
            f"The answer is to {shown(named)}, which is no meeting the hub "
            "has: name the meeting by the identifier of its invitation (appointment."
            "identifier) or as Appointment/<id>.",
            expression=accepted.where(answer_ref, "appointment"))
    actor = ref(answer.get("actor"))
    _check_answerable(accepted, answer_ref, meeting_ref, meeting, patient, actor)
    organiser = owner(session, meeting_ref)
    if organiser is not None:
        accepted.replying_to.add(organiser)  # the answer goes back to the organiser
    status = str(answer.get("participantStatus"))
    version = _record_answer(session, accepted, meeting_ref, actor, status)
    who = "The patient" if actor == patient else str(actor)
    notes = [f"{who} answered {status} to {_described(meeting_ref, meeting)}; "
             + (f"recorded in the meeting, version {version}." if version else
                "the meeting already had that answer.")]
    if answer.get("comment"):
        notes.append(f"Wants raised: {answer['comment']!r} (kept in {answer_ref}).")
    if (actor == patient and status == "declined" and meeting_kind(meeting) == "network"):
        notes.append("The patient is a required participant of this network meeting and "
                     "declined: the organiser should agree a new time with the patient, or "
                     "cancel the meeting.")
    accepted.notes.extend(notes)


def _seen_by_sender(session: Session, accepted: Accepted, meeting_ref: str) -> bool:
    """Whether the message's sender may see the stored meeting (the consent gate's decision
    for that organisation, as for a read)."""
    if meeting_ref in accepted.stored:  # the message itself carries it: its sender wrote it
        return True
    return service.exists(session, Subject.working_for(accepted.sender_org, "messaging"),
                          resource_type="Appointment", resource_id=meeting_ref.split("/", 1)[1])


def _check_answerable(accepted: Accepted, answer_ref: str, meeting_ref: str,
                      meeting: dict[str, Any], patient: str, actor: str | None) -> None:
    issues: list[Issue] = []
    actors = [ref(p.get("actor")) for p in meeting.get("participant") or []]
    if patient not in actors:
        issues.append(problem(
            f"{_described(meeting_ref, meeting, first=True)} is not about the message's "
            f"patient ({patient}); send the answer with the patient the meeting is about.",
            accepted.where(answer_ref, "appointment")))
    elif meeting.get("status") != "booked":
        reason = (meeting.get("cancelationReason") or {}).get("text")
        issues.append(problem(
            f"{_described(meeting_ref, meeting, first=True)} is {meeting.get('status')}"
            + (f" ({reason})" if reason else "")
            + "; only a booked meeting is answered.",
            accepted.where(answer_ref, "appointment")))
    elif actor is None or actor not in actors:
        invited = ", ".join(a for a in actors if a)
        issues.append(problem(
            f"The answer is from {shown(accepted.stored[answer_ref].get('actor'))}, who is not "
            f"invited to {meeting_ref} (invited: {invited}). Only a participant answers; ask "
            "the organiser to invite them (a new version of the invitation) first.",
            accepted.where(answer_ref, "actor")))
    reject(issues)


def _record_answer(session: Session, accepted: Accepted, meeting_ref: str, actor: str | None,
                   status: str) -> int | None:
    """Write the answer into the stored meeting; the new version, or None when unchanged."""
    rid = meeting_ref.split("/", 1)[1]
    writer = Subject.working_for(accepted.sender_org, "messaging")
    for _ in range(ANSWER_TRIES):
        current = service.read(session, HUB, resource_type="Appointment", resource_id=rid)
        meeting = copy.deepcopy(current.body or {})
        changed = False
        for participant in meeting.get("participant") or []:
            if ref(participant.get("actor")) == actor and participant.get("status") != status:
                participant["status"] = status
                changed = True
        if not changed:
            return None
        try:
            return service.update(session, writer, resource_type="Appointment",
                                  resource_id=rid, resource=meeting, if_match=current.etag,
                                  part=PARTICIPANT_ANSWER).stored.version_id
        except PreconditionFailedError:
            continue  # another answer landed since the read: read it and apply this one again
    raise PreconditionFailedError(
        f"{meeting_ref} is being answered by many at once; send this answer again.")

"""Admission, the ready-for-discharge dialogue, and who may change a Task's status.

A Task's status belongs to its two parties (CONTRACT section 4): the requester
(Task.requester) sets requested and cancelled, the owner (Task.owner) sets accepted, rejected,
in-progress and completed. The businessStatus overdue is the hub's escalation of a follow-up
check (hub/workflows/followup.py): no party sets or removes it while the Task is open.
`check_status_change` is the one place that decides; it runs on every Task any message
carries (the acting organisation is the message's sender) and on PUT /fhir/Task/{id} (the
caller's organisation).
"""

from __future__ import annotations

from typing import Any, NoReturn

from sqlalchemy.orm import Session

from hub.auth import scopes
from hub.auth.subject import Subject
from hub.errors import GoneError, InvalidResourceError, NotFoundError
from hub.fhir import refs
from hub.fhir.vocab import EVENTS
from hub.messaging.handlers import Accepted, handles
from hub.store import service
from hub.store.query import SearchRequest
from hub.workflows.followup import is_overdue
from hub.workflows.stored import requesters

HUB = Subject.hub_itself()
TASK_CODE_SYSTEM = "http://carehub.example/fhir/CodeSystem/task-code"
REQUESTER_SETS = ("requested", "cancelled")
OWNER_SETS = ("accepted", "rejected", "in-progress", "completed")
FINAL = frozenset({"cancelled", "rejected", "completed", "failed", "entered-in-error"})
OPEN = ("requested", "accepted", "in-progress")
# Where each open status may go (staying put is no change of status and always allowed).
_NEXT = {
    "requested": frozenset({"accepted", "rejected", "in-progress", "cancelled"}),
    "accepted": frozenset({"rejected", "in-progress", "completed", "cancelled"}),
    "in-progress": frozenset({"completed", "cancelled"}),
}
_FIXED = ("requester", "owner", "for", "focus")  # the parties and the subject of a Task
_ENDED_STAY = frozenset({"finished", "cancelled", "entered-in-error"})


# --- small readers, shared with hub.workflows.selfadmission ---------------------------------

org_of = refs.org_id
ref_of = refs.relative


def task_code(task: dict[str, Any]) -> str | None:
    """The CareHub task-code of a Task, or None."""
    for coding in (task.get("code") or {}).get("coding") or []:
        if isinstance(coding, dict) and coding.get("system") == TASK_CODE_SYSTEM:
            return str(coding.get("code"))
    return None


def label(resource: dict[str, Any]) -> str:
    """How a clerk recognises a resource: the identifier its sender gave it, else Type/id."""
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value"):
            return f"{resource.get('resourceType')} with identifier {ident['value']}"
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def previous_version(session: Session, accepted: Accepted, ref: str) -> dict[str, Any] | None:
    """The version of `ref` this message replaced (None when the message created it): the one
    before the current one, or the current one itself when the message sent it again
    unchanged (no new version was written)."""
    if ref in accepted.unchanged:
        return accepted.stored[ref]
    if str(((accepted.stored.get(ref) or {}).get("meta") or {}).get("versionId")) == "1":
        return None  # created by this message: no history to read (bench/ingest.py)
    rtype, rid = ref.split("/", 1)
    versions, _ = service.history(session, HUB, resource_type=rtype, resource_id=rid, count=2,
                                  offset=0)
    return versions[1].body if len(versions) > 1 else None


def focus_of(accepted: Accepted, resource_type: str) -> tuple[str, dict[str, Any]]:
    """The message's focus resource of a type ("Type/id", stored body); the event's
    MessageDefinition has made sure there is one."""
    ref = next(r for r in accepted.focus if r.startswith(f"{resource_type}/"))
    return ref, accepted.stored[ref]


def message_header(session: Session, accepted: Accepted) -> dict[str, Any]:
    """The MessageHeader of the accepted message, as received."""
    stored = service.read(session, HUB, resource_type="Bundle",
                          resource_id=accepted.message.bundle_id)
    assert stored.body is not None
    header: dict[str, Any] = stored.body["entry"][0]["resource"]
    return header


def entry_path(session: Session, accepted: Accepted, ref: str) -> str:
    """'Bundle.entry[i].resource' of the entry that became `ref` (for an issue's expression)."""
    rtype, rid = ref.split("/", 1)
    stored = service.read(session, HUB, resource_type="Bundle",
                          resource_id=accepted.message.bundle_id)
    assert stored.body is not None
    mine = {(i.get("system"), i.get("value"))
            for i in accepted.stored[ref].get("identifier") or [] if isinstance(i, dict)}
    for index, entry in enumerate(stored.body.get("entry") or []):
        resource = entry.get("resource") or {}
        if index == 0 or resource.get("resourceType") != rtype:
            continue
        theirs = {(i.get("system"), i.get("value"))
                  for i in resource.get("identifier") or [] if isinstance(i, dict)}
        if mine & theirs or str(entry.get("fullUrl", "")).endswith(f"/{rtype}/{rid}"):
            return f"Bundle.entry[{index}].resource"
    return rtype


def fail(session: Session, accepted: Accepted, ref: str, diagnostics: str,
         element: str) -> NoReturn:
    """Raise the 422 of a broken rule about `element` of the entry that became `ref`."""
    raise InvalidResourceError(
        diagnostics, expression=f"{entry_path(session, accepted, ref)}.{element}")


# --- who may change a Task's status ---------------------------------------------------------

def _final_reason(previous: dict[str, Any]) -> str:
    status = previous.get("status")
    if status == "cancelled" and task_code(previous) == "discharge-readiness":
        return ("was withdrawn by the centre (ready-for-discharge-withdrawn), which is final: "
                "there is nothing left to answer or change. A new question is a new "
                "ready-for-discharge with a new Task identifier")
    why = (previous.get("statusReason") or {}).get("text")
    text = f"is {status}" + (f" ({why})" if why else "")
    later = [o.get("valueDate") for o in previous.get("output") or []
             if isinstance(o, dict) and o.get("valueDate")]
    if later:
        text += f"; the next possible date was given as {later[0]}"
    return text + (", which is final; send a new Task with a new identifier instead")


def check_status_change(previous: dict[str, Any] | None, new: dict[str, Any], *,
                        actor: str, where: str = "Task") -> None:
    """Raise InvalidResourceError (422) unless `actor` (an organisation id) may take the Task
    from `previous` (the stored version; None for a new Task) to `new`: a new Task starts as
    requested; final statuses stay; the requester sets requested and cancelled, the owner
    accepted, rejected, in-progress and completed; requester, owner, for and focus are fixed."""
    status = str(new.get("status"))
    name = label(new)
    if status in REQUESTER_SETS:
        role = "requester"
    elif status in OWNER_SETS:
        role = "owner"
    else:
        raise InvalidResourceError(
            f"{name}: status '{status}' is not used here. The requester sets requested or "
            "cancelled; the owner sets accepted, rejected, in-progress or completed.",
            expression=f"{where}.status")
    old = str(previous.get("status")) if previous is not None else None
    if previous is None and status != "requested":
        raise InvalidResourceError(
            f"{name} is not stored here, and a new Task starts as requested (this one is "
            f"{status}). To answer or withdraw a Task, give the identifier it was sent with.",
            expression=f"{where}.identifier")
    if previous is not None:
        for element in _FIXED:
            before, after = ref_of(previous.get(element)), ref_of(new.get(element))
            if before != after:
                raise InvalidResourceError(
                    f"{name}: Task.{element} was {before or 'not given'} and cannot change "
                    f"(this version says {after or 'nothing'}); a Task keeps its parties "
                    "and subject.", expression=f"{where}.{element}")
    if old is not None and old != status:
        if old in FINAL:
            raise InvalidResourceError(
                f"{name} {_final_reason(previous or {})}; it cannot become {status}.",
                expression=f"{where}.status")
        allowed = _NEXT.get(old)
        if allowed is not None and status not in allowed:
            raise InvalidResourceError(
                f"{name} cannot go from {old} to {status}; from {old} it can become "
                f"{', '.join(sorted(allowed))}.", expression=f"{where}.status")
    if is_overdue(previous) != is_overdue(new) and status not in FINAL:
        raise InvalidResourceError(
            f"{name}: businessStatus overdue is the hub's mark of a follow-up check that fell "
            "due unmet; no organisation sets or removes it. It goes when the check is met "
            "(completed) or the Task ends.", expression=f"{where}.businessStatus")
    party = org_of((previous or new).get(role))
    if party is None:
        raise InvalidResourceError(
            f"{name} names no {role} organisation (Task.{role} = Organization/<id>); the "
            f"hub must know whose Task it is before anyone sets it to {status}.",
            expression=f"{where}.{role}")
    if party != actor:
        raise InvalidResourceError(
            f"Only the Task's {role}, Organization/{party}, may set it to {status}; this "
            f"comes from Organization/{actor}. (The requester sets requested and cancelled; "
            "the owner accepted, rejected, in-progress and completed.)",
            expression=f"{where}.status")


@handles(*EVENTS, first=True)
def task_roles(session: Session, accepted: Accepted) -> None:
    """Every Task a message carries changes status only as its parties' roles allow."""
    for ref, body in accepted.stored.items():
        if ref.startswith("Task/"):
            try:
                check_status_change(previous_version(session, accepted, ref), body,
                                    actor=accepted.sender_org)
            except InvalidResourceError as err:
                where = entry_path(session, accepted, ref)
                expression = (err.expression or "Task").replace("Task", where, 1)
                raise InvalidResourceError(err.diagnostics, expression=expression) from None


def check_rest_update(session: Session, subject: Subject, *, resource_id: str,
                      resource: dict[str, Any]) -> None:
    """The same rule for PUT /fhir/Task/{id} on a stored Task the caller can see, acting for
    the caller's organisation (people and the hub itself, who act for none, are not checked
    here; what the caller cannot see is left to the store, which reveals nothing)."""
    if subject.organization_id is None:
        return
    reader = subject if scopes.allows(subject.scopes, "Task", "read") else HUB
    try:
        current = service.read(session, reader, resource_type="Task", resource_id=resource_id)
    except (NotFoundError, GoneError):
        return
    check_status_change(current.body, resource, actor=subject.organization_id)


# --- admission ------------------------------------------------------------------------------

def _check_stay(session: Session, accepted: Accepted, ref: str,
                encounter: dict[str, Any]) -> None:
    """An Encounter the centre reports as in progress: the patient of the message, the sender
    as its serviceProvider, and not a stay that already ended."""
    provider = org_of(encounter.get("serviceProvider"))
    if provider != accepted.sender_org:
        fail(session, accepted, ref,
             f"{label(encounter)}: serviceProvider must be the centre the patient stays at, "
             f"which sends this message (Organization/{accepted.sender_org}); it is "
             f"{ref_of(encounter.get('serviceProvider')) or 'not given'}.", "serviceProvider")
    if ref_of(encounter.get("subject")) != f"Patient/{accepted.patient_id}":
        fail(session, accepted, ref,
             f"{label(encounter)}: subject must be the Patient this message carries.",
             "subject")
    previous = previous_version(session, accepted, ref)
    if previous is not None and previous.get("status") in _ENDED_STAY:
        fail(session, accepted, ref,
             f"{label(encounter)} is {previous.get('status')}: that stay has ended and cannot "
             "be in progress again. A new admission is a new Encounter with a new identifier.",
             "status")


@handles("admission-notice")
def admission_notice(session: Session, accepted: Accepted) -> None:
    """Records the admission: the Encounter (in progress, class IMP) of the sender's unit."""
    ref, encounter = focus_of(accepted, "Encounter")
    _check_stay(session, accepted, ref, encounter)
    start = (encounter.get("period") or {}).get("start")
    accepted.notes.append(f"Admission recorded: {ref} in progress since {start} at "
                          f"Organization/{accepted.sender_org}.")


# --- the ready-for-discharge dialogue -------------------------------------------------------

def _readiness_task(accepted: Accepted) -> tuple[str, dict[str, Any]]:
    return focus_of(accepted, "Task")


@handles("ready-for-discharge")
def ready_for_discharge(session: Session, accepted: Accepted) -> None:
    """Opens the dialogue: one open question per stay, to a municipality that receives it."""
    encounter_ref, encounter = focus_of(accepted, "Encounter")
    _check_stay(session, accepted, encounter_ref, encounter)
    task_ref, task = _readiness_task(accepted)
    if ref_of(task.get("focus")) != encounter_ref:
        fail(session, accepted, task_ref,
             f"{label(task)}: focus must be the Encounter of this message (the stay the "
             "patient is ready to leave).", "focus")
    if ref_of(task.get("for")) != f"Patient/{accepted.patient_id}":
        fail(session, accepted, task_ref,
             f"{label(task)}: for must be the Patient this message carries.", "for")
    owner = org_of(task.get("owner"))
    receivers = {org_of(d.get("receiver"))
                 for d in message_header(session, accepted).get("destination") or []}
    if owner not in receivers:
        fail(session, accepted, task_ref,
             f"{label(task)}: owner ({ref_of(task.get('owner')) or 'not given'}) must be the "
             "municipality that is to answer, and a receiver of this message "
             "(MessageHeader.destination).", "owner")
    others, _, _ = service.search(session, HUB, request=SearchRequest(
        "Task", [("code", f"{TASK_CODE_SYSTEM}|discharge-readiness"),
                 ("focus", encounter_ref), ("status", ",".join(OPEN))], count=10))
    still_open = [o for o in others if o.id != task_ref.split("/", 1)[1]]
    if still_open:
        body = still_open[0].body or {}
        fail(session, accepted, task_ref,
             f"The stay {encounter_ref} already has an open ready-for-discharge "
             f"({label(body)}, {body.get('status')}). Withdraw it "
             "(ready-for-discharge-withdrawn) before asking again, or update that Task.",
             "focus")
    planned = (task.get("restriction") or {}).get("period", {}).get("start")
    accepted.notes.append(f"Ready-for-discharge recorded: planned discharge {planned}; "
                          f"waiting for Organization/{owner} to answer.")


@handles("ready-for-discharge-withdrawn")
def ready_for_discharge_withdrawn(session: Session, accepted: Accepted) -> None:
    """The centre withdraws a question that is still requested or accepted."""
    task_ref, task = _readiness_task(accepted)
    previous = previous_version(session, accepted, task_ref)
    if previous is not None and previous.get("status") not in ("requested", "accepted",
                                                                "cancelled"):
        fail(session, accepted, task_ref,
             f"{label(task)} is {previous.get('status')}; only a ready-for-discharge that is "
             "requested or accepted can be withdrawn.", "status")
    accepted.notes.append(f"Ready-for-discharge withdrawn: {task_ref} is cancelled.")


@handles("discharge-readiness-response")
def discharge_readiness_response(session: Session, accepted: Accepted) -> None:
    """The municipality's answer: when it can receive the patient, or why it cannot."""
    task_ref, task = _readiness_task(accepted)
    accepted.replying_to.update(requesters(session, task_ref, task))
    if task.get("status") == "accepted":
        when = next((o.get("valueDateTime") for o in task.get("output") or []
                     if isinstance(o, dict) and o.get("valueDateTime")), None)
        accepted.notes.append(f"Answer recorded: Organization/{accepted.sender_org} can "
                              f"receive the patient from {when}.")
    else:
        why = (task.get("statusReason") or {}).get("text") or "no reason given as text"
        accepted.notes.append(f"Answer recorded: Organization/{accepted.sender_org} cannot "
                              f"receive the patient ({why}).")

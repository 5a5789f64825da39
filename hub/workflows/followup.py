"""Overdue follow-up checks (CONTRACT section 7): a check past due and unmet gets
businessStatus overdue (a new version of its Task), an active Flag on the patient, and a
follow-up-overdue notice to the owning municipality and the centre.

The checks themselves are made and met by hub/workflows/discharge.py.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.fhir.refs import org_id
from hub.messaging.outbound import send_notice
from hub.scheduler.actions import Act, acts_on, recipients
from hub.scheduler.models import ScheduledCheckRow
from hub.store import service
from hub.store.dates import format_instant
from hub.store.resources import StoredResource

KIND = "follow-up"
TASK_CODE = "http://carehub.example/fhir/CodeSystem/task-code"
BUSINESS_STATUS = "http://carehub.example/fhir/CodeSystem/task-business-status"
CHECK_SID = "http://carehub.example/fhir/sid/follow-up-check"
"""Identifier system of the hub's follow-up check Tasks (value: Encounter id / which check)."""
FLAG_SID = "http://carehub.example/fhir/sid/follow-up-overdue-flag"
"""Identifier system of the hub's overdue Flags (value: the Task id), so each is made once."""
OPEN_STATUSES = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")
OVERDUE = {"coding": [{"system": BUSINESS_STATUS, "code": "overdue",
                       "display": "Overdue"}]}


def is_overdue(task: Any) -> bool:
    """Whether a Task body carries the hub's overdue mark (businessStatus OVERDUE)."""
    status = task.get("businessStatus") if isinstance(task, dict) else None
    codings = status.get("coding") if isinstance(status, dict) else None
    return isinstance(codings, list) and any(
        isinstance(c, dict) and c.get("system") == BUSINESS_STATUS and c.get("code") == "overdue"
        for c in codings)


def writer(org: str | None) -> Subject:
    """The hub writing on behalf of `org`: what it makes belongs to that organisation (the
    centre), which reads and changes it like its own; others read it as consent permits."""
    if org is None:
        return Subject.hub_itself()
    return Subject.working_for(org, "scheduler")


def owner_of(task: dict[str, Any]) -> str | None:
    """The owning organisation of a Task."""
    return org_id(task.get("owner"))


def requester_of(task: dict[str, Any]) -> str | None:
    """The requesting organisation of a Task."""
    return org_id(task.get("requester"))


def _flag(task: dict[str, Any], at: str) -> dict[str, Any]:
    return {
        "resourceType": "Flag",
        "identifier": [{"system": FLAG_SID, "value": str(task["id"])}],
        "status": "active",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/flag-category", "code": "admin",
            "display": "Administrative"}]}],
        "code": {"coding": [{"system": TASK_CODE, "code": "follow-up-check",
                             "display": "Follow-up check"}],
                 "text": f"Follow-up after discharge overdue: {task.get('description', '')}"
                 .strip().rstrip(":")},
        "subject": task["for"],
        "period": {"start": at},
        **({"encounter": task["focus"]} if str(task.get("focus", {}).get("reference", ""))
           .startswith("Encounter/") else {}),
    }


@acts_on(KIND)
def escalate(act: Act, row: ScheduledCheckRow) -> str:
    """The check fell due unmet: mark its Task overdue, flag the patient, notify both sides.
    A Task no longer open (completed or cancelled meanwhile) closes the row without a word."""
    task = act.read(row.target)
    if task is None or task.get("status") not in OPEN_STATUSES:
        return "met" if task is not None and task.get("status") == "completed" else "cancelled"
    centre = requester_of(task)
    as_centre = writer(centre)
    task = {**task, "businessStatus": OVERDUE, "lastModified": format_instant(act.now)}
    stored = service.update(act.session, as_centre, resource_type="Task",
                            resource_id=str(task["id"]), resource=task).stored
    act.journal.wrote(stored, why=f"Follow-up check {row.target} is overdue "
                                  f"(due {format_instant(row.due_at)}).")
    assert stored.body is not None
    flag = service.create(act.session, as_centre, resource=_flag(stored.body,
                                                                 format_instant(act.now)),
                          if_none_exist=f"identifier={FLAG_SID}|{task['id']}")
    if flag.created:
        act.journal.wrote(flag.stored, why=f"Flag for the overdue check {row.target}.")
    patient = act.read(str(task["for"]["reference"]))
    if patient is None:
        return "escalated"
    # The Task's parties and whom the check was scheduled to tell (the municipality also
    # where the discharge was kept from it and the centre owns the check): the gate decides.
    receivers = dict.fromkeys(o for o in (owner_of(task), *recipients(row), centre) if o)
    sent = send_notice(act.session, act.settings, event="follow-up-overdue",
                       focus=[stored.body], patient=patient, receivers=list(receivers))
    act.journal.sent(sent, why=f"follow-up-overdue for {row.target}")
    return "escalated"


def close_flag(session: Session, task_id: str, at: str,
               centre: str | None) -> list[StoredResource]:
    """Set the overdue Flag of a Task inactive (the check was met after all), for the centre
    that owns it; the versions written."""
    out = []
    for flag in service.find_by_identifier(session, writer(centre), system=FLAG_SID,
                                           value=task_id, resource_types=frozenset({"Flag"})):
        body = flag.body or {}
        if body.get("status") == "active":
            period = {**(body.get("period") or {}), "end": at}
            out.append(service.update(session, writer(centre), resource_type="Flag",
                                      resource_id=flag.id,
                                      resource={**body, "status": "inactive",
                                                "period": period}).stored)
    return out

"""Admission, the ready-for-discharge dialogue, and who may change a Task's status (issue 6,
CONTRACT section 4): the one rule on its own, then end to end over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.errors import InvalidResourceError
from hub.store import service
from hub.workflows.tasks import check_status_change
from tests.workflows import adm_messages
from tests.workflows.adm_messages import (
    CENTRE,
    KARI,
    KLEPP,
    TASK_CODE,
    TIME,
    URI,
    Clients,
    admission,
    issues,
    post,
    readiness_answer,
    ready,
    said,
    withdrawn,
)

parties = adm_messages.parties  # the fixture: Jæren DPS, Time kommune, Klepp kommune


def task(status: str | None, *, requester: str | None = CENTRE, owner: str = TIME,
         code: str = "discharge-readiness", **extra: Any) -> dict[str, Any] | None:
    """A Task version between the centre (requester) and Time kommune (owner)."""
    if status is None:
        return None
    body: dict[str, Any] = {
        "resourceType": "Task", "identifier": [{"system": URI, "value": "klar-1"}],
        "status": status, "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": code}]},
        "for": {"reference": "Patient/p1"}, "focus": {"reference": "Encounter/e1"},
        "owner": {"reference": f"Organization/{owner}"}, **extra}
    if requester:
        body["requester"] = {"reference": f"Organization/{requester}"}
    return body


ALLOWED = [
    # previous status, new status, acting organisation
    (None, "requested", CENTRE),
    ("requested", "requested", CENTRE),          # sent again, e.g. a new planned date
    ("requested", "accepted", TIME),
    ("requested", "rejected", TIME),
    ("requested", "cancelled", CENTRE),
    ("accepted", "accepted", TIME),              # a corrected date
    ("accepted", "in-progress", TIME),
    ("accepted", "cancelled", CENTRE),
    ("in-progress", "completed", TIME),
    ("rejected", "rejected", TIME),              # rejecting again changes nothing
]


@pytest.mark.parametrize(("old", "new", "actor"), ALLOWED)
def test_a_party_sets_the_statuses_of_its_role(old: str | None, new: str, actor: str) -> None:
    check_status_change(task(old), task(new) or {}, actor=actor)


REFUSED = [
    # previous, new, actor, what the clerk reads, the element named
    (task(None), task("accepted"), TIME, "is not stored here, and a new Task starts as "
     "requested", "Task.identifier"),
    (task("requested"), task("accepted"), CENTRE,
     "Only the Task's owner, Organization/time-kommune, may set it to accepted", "Task.status"),
    (task("requested"), task("cancelled"), TIME,
     "Only the Task's requester, Organization/jaeren-dps, may set it to cancelled",
     "Task.status"),
    (task("cancelled"), task("accepted"), TIME,
     "was withdrawn by the centre (ready-for-discharge-withdrawn)", "Task.status"),
    (task("rejected", code="self-admission-request",
          statusReason={"text": "No free bed."}, output=[{"valueDate": "2026-03-06"}]),
     task("accepted", code="self-admission-request"), TIME,
     "is rejected (No free bed.); the next possible date was given as 2026-03-06, which is "
     "final", "Task.status"),
    (task("completed"), task("in-progress"), TIME, "is completed, which is final",
     "Task.status"),
    (task("in-progress"), task("requested"), CENTRE,
     "cannot go from in-progress to requested", "Task.status"),
    (task("requested"), task("draft"), CENTRE, "status 'draft' is not used here",
     "Task.status"),
    (task("requested"), task("accepted", owner=KLEPP), KLEPP,
     "Task.owner was Organization/time-kommune and cannot change", "Task.owner"),
    (task(None, requester=None), task("requested", requester=None), CENTRE,
     "names no requester organisation", "Task.requester"),
]


@pytest.mark.parametrize(("old", "new", "actor", "text", "element"), REFUSED)
def test_any_other_change_is_refused_with_the_reason(
        old: dict[str, Any] | None, new: dict[str, Any], actor: str, text: str,
        element: str) -> None:
    with pytest.raises(InvalidResourceError) as err:
        check_status_change(old, new, actor=actor)
    assert text in err.value.diagnostics
    assert err.value.status == 422
    assert err.value.expression == element


def ok(clients: Clients, message: dict[str, Any]) -> Any:
    r = post(clients, message)
    assert r.status_code == 200, r.text
    return r


def refused(clients: Clients, message: dict[str, Any], text: str, expression: str) -> None:
    r = post(clients, message)
    assert r.status_code == 422, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    first = issues(r)[0]
    assert text in first["diagnostics"], first
    assert first["expression"] == [expression]


def found(clients: Clients, rtype: str, name: str) -> list[dict[str, Any]]:
    bundle = clients[CENTRE].get(f"/fhir/{rtype}", params={"identifier": f"{URI}|{name}"})
    return [e["resource"] for e in bundle.json().get("entry", [])]


def test_admission_notice_records_the_stay(parties: Clients) -> None:
    r = ok(parties, admission(KARI, stay="opphold-1"))
    assert "Admission recorded" in said(r)
    [stay] = found(parties, "Encounter", "opphold-1")
    assert (stay["status"], stay["class"]["code"]) == ("in-progress", "IMP")
    refused(parties, admission(KARI, stay="opphold-2", provider=KLEPP),
            "serviceProvider must be the centre the patient stays at",
            "Bundle.entry[1].resource.serviceProvider")
    assert found(parties, "Encounter", "opphold-2") == []
    without = admission(KARI, stay="opphold-3")
    del without["entry"][1]["resource"]["serviceProvider"]
    refused(parties, without, "Encounter.serviceProvider is required",
            "Bundle.entry[1].resource.serviceProvider")


def test_a_stay_that_ended_is_not_admitted_again(parties: Clients, database: Database) -> None:
    ok(parties, admission(KARI, stay="opphold-1"))
    [stay] = found(parties, "Encounter", "opphold-1")
    with database.session(write=True) as s:  # the stay ends (as a discharge-notice would)
        service.update(s, Subject.working_for(CENTRE, "test"), resource_type="Encounter",
                       resource_id=stay["id"],
                       resource={**stay, "status": "finished",
                                 "period": {**stay["period"], "end": "2026-11-20T12:00:00Z"}})
    refused(parties, admission(KARI, stay="opphold-1"), "that stay has ended",
            "Bundle.entry[1].resource.status")
    assert found(parties, "Encounter", "opphold-1")[0]["status"] == "finished"


PLANNED = "2026-11-16T12:00:00Z"


def test_ready_for_discharge_dialogue(parties: Clients) -> None:
    ok(parties, admission(KARI, stay="opphold"))
    r = ok(parties, ready(KARI, stay="opphold", name="klar-1"))
    assert "waiting for Organization/time-kommune to answer" in said(r)
    refused(parties, ready(KARI, stay="opphold", name="klar-2"),
            "already has an open ready-for-discharge", "Bundle.entry[2].resource.focus")
    assert found(parties, "Task", "klar-2") == []
    # Only the centre withdraws; then the question is closed for good.
    refused(parties, withdrawn(KARI, stay="opphold", name="klar-1", sender=TIME),
            "Only the Task's requester, Organization/jaeren-dps, may set it to cancelled",
            "Bundle.entry[1].resource.status")
    ok(parties, withdrawn(KARI, stay="opphold", name="klar-1"))
    refused(parties, readiness_answer(KARI, stay="opphold", name="klar-1"),
            "was withdrawn by the centre", "Bundle.entry[1].resource.status")
    assert found(parties, "Task", "klar-1")[0]["status"] == "cancelled"
    # A new question, answered by the municipality only, with a date or a reason.
    ok(parties, ready(KARI, stay="opphold", name="klar-2", planned=PLANNED))
    refused(parties, readiness_answer(KARI, stay="opphold", name="klar-2",
                                      planned=PLANNED, sender=CENTRE),
            "Only the Task's owner, Organization/time-kommune, may set it to accepted",
            "Bundle.entry[1].resource.status")
    refused(parties, readiness_answer(KARI, stay="opphold", name="klar-2",
                                      planned=PLANNED, when=None),
            "rule cdr-2", "Bundle.entry[1].resource")
    refused(parties, readiness_answer(KARI, stay="opphold", name="klar-2",
                                      planned=PLANNED, status="rejected",
                                      when=None), "rule cdr-3", "Bundle.entry[1].resource")
    r = ok(parties, readiness_answer(KARI, stay="opphold", name="klar-2", planned=PLANNED,
                                     when="2026-11-17T09:00:00+01:00"))
    assert "can receive the patient from 2026-11-17T09:00:00+01:00" in said(r)
    [answered] = found(parties, "Task", "klar-2")
    assert answered["status"] == "accepted"
    assert answered["output"][0]["valueDateTime"] == "2026-11-17T09:00:00+01:00"


def test_the_question_goes_to_a_municipality_that_receives_it(parties: Clients) -> None:
    ok(parties, admission(KARI, stay="opphold"))
    refused(parties, ready(KARI, stay="opphold", name="klar", owner=KLEPP, to=(TIME,)),
            "must be the municipality that is to answer, and a receiver of this message",
            "Bundle.entry[2].resource.owner")
    assert found(parties, "Task", "klar") == []


def test_only_a_requested_or_accepted_question_is_withdrawn(parties: Clients,
                                                            database: Database) -> None:
    ok(parties, admission(KARI, stay="opphold"))
    ok(parties, ready(KARI, stay="opphold", name="klar"))
    [question] = found(parties, "Task", "klar")
    with database.session(write=True) as s:  # the municipality has begun to receive
        service.update(s, Subject.working_for(TIME, "test"), resource_type="Task",
                       resource_id=question["id"], resource={**question,
                                                             "status": "in-progress"})
    refused(parties, withdrawn(KARI, stay="opphold", name="klar"),
            "only a ready-for-discharge that is requested or accepted can be withdrawn",
            "Bundle.entry[1].resource.status")


def test_rest_updates_of_a_task_follow_the_same_roles(parties: Clients) -> None:
    ok(parties, admission(KARI, stay="opphold"))
    ok(parties, ready(KARI, stay="opphold", name="klar"))
    [question] = found(parties, "Task", "klar")
    centre = parties[CENTRE]
    r = centre.put(f"/fhir/Task/{question['id']}", json={**question, "status": "accepted"})
    assert r.status_code == 422, r.text
    assert "Only the Task's owner, Organization/time-kommune" in r.json()["issue"][0][
        "diagnostics"]
    assert found(parties, "Task", "klar")[0]["meta"]["versionId"] == "1"
    r = centre.put(f"/fhir/Task/{question['id']}", json={**question, "status": "cancelled"})
    assert r.status_code == 200, r.text
    r = centre.put(f"/fhir/Task/{question['id']}", json={**question, "status": "requested"})
    assert r.status_code == 422, r.text
    assert "was withdrawn by the centre" in r.json()["issue"][0]["diagnostics"]

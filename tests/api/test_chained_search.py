"""Chains of several links and `_has`, tried as an attacking municipality would: every link
goes only through what the caller may see, else the chain is an existence oracle. Each attack
has its control: the party the consent names (or the owner) matches.

Jæren DPS owns the patient's Patient, ServiceRequest, Consent and Flag; Klepp kommune holds a
record of its own about the patient (so it may read the Patient) and is named in no consent;
Time kommune is named in the consent."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.config import Settings
from hub.db.engine import Database
from hub.fhir.identifiers import FNR_SYSTEM, ORGNR_SYSTEM
from tests.access_clients import other_client
from tests.factories import consent, encounter, fnr, patient
from tests.messaging.test_story import register_story_organizations
from tests.plans import sqlite_plan, statements_of

NUMBER = fnr(date(1975, 6, 1))
BY_NUMBER = f"{FNR_SYSTEM}|{NUMBER}"
DPS_ORGNR = f"{ORGNR_SYSTEM}|983974791"


def _post(c: TestClient, resource: dict[str, Any]) -> str:
    r = c.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _search(c: TestClient, url: str, **params: str) -> tuple[list[str], list[str]]:
    """(ids matched, diagnostics of the outcome entry)."""
    r = c.get(url, params=params)
    assert r.status_code == 200, r.text
    entries = r.json().get("entry", [])
    return ([e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"],
            [i["diagnostics"] for e in entries if e["search"]["mode"] == "outcome"
             for i in e["resource"]["issue"]])


def _ids(c: TestClient, url: str, **params: str) -> list[str]:
    found, ignored = _search(c, url, **params)
    assert ignored == []
    return found


def _task(patient_id: str, focus: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order",
            "for": {"reference": f"Patient/{patient_id}"}, "focus": {"reference": focus},
            **extra}


@dataclass
class Story:
    dps: TestClient
    time: TestClient
    klepp: TestClient
    patient: str
    request: str  # the centre's ServiceRequest about the patient
    klepp_task: str  # Klepp's own Task, focused on the centre's ServiceRequest


@pytest.fixture
def story(settings: Settings, database: Database) -> Iterator[Story]:
    register_story_organizations(database, klepp=True)
    with other_client(settings, database, "jaeren-dps") as dps, \
            other_client(settings, database, "time-kommune") as time, \
            other_client(settings, database, "klepp-kommune") as klepp:
        pid = _post(dps, patient(NUMBER, managingOrganization={
            "reference": "Organization/jaeren-dps"}))
        _post(dps, encounter(f"Patient/{pid}"))
        sr = _post(dps, {"resourceType": "ServiceRequest", "status": "active",
                         "intent": "order", "subject": {"reference": f"Patient/{pid}"}})
        _post(klepp, encounter(f"Patient/{pid}"))  # Klepp holds a record about the patient
        task = _post(klepp, _task(pid, f"ServiceRequest/{sr}"))
        yield Story(dps, time, klepp, pid, sr, task)


def test_chains_of_two_and_three_links(story: Story) -> None:
    dps, pid = story.dps, story.patient
    [enc] = _ids(dps, "/fhir/Encounter", patient=pid)
    assert _ids(dps, "/fhir/Encounter",
                **{"subject:Patient.organization.identifier": DPS_ORGNR}) == [enc]
    assert _ids(dps, "/fhir/Encounter",
                **{"subject:Patient.organization.identifier": f"{ORGNR_SYSTEM}|1"}) == []
    mine = _post(dps, _task(pid, f"ServiceRequest/{story.request}"))
    assert _ids(dps, "/fhir/Task",
                **{"focus:ServiceRequest.subject:Patient.identifier": BY_NUMBER}) == [mine]
    assert _ids(dps, "/fhir/Task", **{
        "focus:ServiceRequest.subject:Patient.organization.identifier": DPS_ORGNR}) == [mine]
    assert _ids(dps, "/fhir/Task", **{
        "focus:ServiceRequest.subject:Patient.organization.identifier": "nope"}) == []


def test_a_chain_through_a_hidden_record_matches_nothing(story: Story,
                                                         settings: Settings) -> None:
    """Klepp's own Task points at the centre's ServiceRequest, which Klepp may not see: no
    chain through it may tell Klepp what it says (whom it is about, its status). Control:
    once the centre records a consent naming Klepp, the same chains match."""
    klepp, task = story.klepp, story.klepp_task
    assert klepp.get(f"/fhir/ServiceRequest/{story.request}").status_code == 404
    through = {"focus:ServiceRequest.subject:Patient.identifier": BY_NUMBER}
    one_link = {"focus:ServiceRequest.status": "active"}
    assert _ids(klepp, "/fhir/Task", **through) == []
    assert _ids(klepp, "/fhir/Task", **one_link) == []
    # a consent naming Klepp for Encounters only: the gate's pre-filter admits the request,
    # its decision does not, and the chain follows the decision
    _post(story.dps, consent(story.patient, "klepp-kommune", classes=["Encounter"]))
    assert klepp.get(f"/fhir/ServiceRequest/{story.request}").status_code == 404
    assert _ids(klepp, "/fhir/Task", **through) == []
    assert _ids(klepp, "/fhir/Task", **one_link) == []
    _post(story.dps, consent(story.patient, "klepp-kommune"))
    assert klepp.get(f"/fhir/ServiceRequest/{story.request}").status_code == 200
    assert _ids(klepp, "/fhir/Task", **through) == [task]
    assert _ids(klepp, "/fhir/Task", **one_link) == [task]


def test_has_counts_only_what_the_caller_may_see(story: Story) -> None:
    """Klepp may read the Patient (it holds a record about it), but not the centre's Consent
    or Flag: `_has` must not tell it that the patient has them. Controls: the centre, and
    Time, which the consent names, match."""
    pid = story.patient
    _post(story.dps, consent(pid, "time-kommune"))
    _post(story.dps, {"resourceType": "Flag", "status": "active",
                      "code": {"text": "Suicide risk"}, "subject": {"reference": f"Patient/{pid}"}})
    has_consent = {"_has:Consent:patient:status": "active"}
    has_flag = {"_has:Flag:patient:status": "active"}
    assert _ids(story.klepp, "/fhir/Patient", _id=pid) == [pid]
    assert _ids(story.klepp, "/fhir/Patient", **has_consent) == []
    assert _ids(story.klepp, "/fhir/Patient", **has_flag) == []
    assert _ids(story.dps, "/fhir/Patient", **has_consent) == [pid]
    assert _ids(story.dps, "/fhir/Patient", **has_flag) == [pid]
    assert _ids(story.time, "/fhir/Patient", **has_consent) == [pid]
    assert _ids(story.dps, "/fhir/Patient", **{"_has:Flag:patient:status": "inactive"}) == []
    # a consent naming Klepp for Encounters only: Klepp may see that Consent, not the Flag
    _post(story.dps, consent(pid, "klepp-kommune", classes=["Encounter"]))
    assert _ids(story.klepp, "/fhir/Patient", **has_consent) == [pid]
    assert _ids(story.klepp, "/fhir/Patient", **has_flag) == []


def test_nested_has(story: Story) -> None:
    """Patients with an Encounter that a requested Task is focused on."""
    dps, pid = story.dps, story.patient
    nested = {"_has:Encounter:subject:_has:Task:focus:status": "requested"}
    assert _ids(dps, "/fhir/Patient", **nested) == []
    [enc] = _ids(dps, "/fhir/Encounter", patient=pid)
    _post(dps, _task(pid, f"Encounter/{enc}"))
    assert _ids(dps, "/fhir/Patient", **nested) == [pid]
    # Klepp's Encounter is its own, but the Task is the centre's: hidden, so no match
    assert _ids(story.klepp, "/fhir/Patient", **nested) == []


def test_what_stays_unsupported_is_reported_never_applied(story: Story) -> None:
    dps = story.dps
    for name in ("subject:Patient.link:Patient.organization:Organization.partof.identifier",
                 "subject:Patient.identifier:exact", "subject:Patient.shoe-size",
                 "status.identifier", "_has:Flag:patient:status:not", "_has:Shoe:patient:x",
                 "_has:Flag:encounter:status"):
        found, ignored = _search(dps, "/fhir/Encounter" if not name.startswith("_has")
                                 else "/fhir/Patient", **{name: "x"})
        assert found, name  # ignored, so not "no match"
        assert name in ignored[0], (name, ignored)


def test_chain_and_has_searches_stay_index_driven(story: Story) -> None:
    """SQLite's plans of the new links start from the index rows a link matches, never a
    scan of a table nor a walk of every record the caller owns."""
    database = story.klepp.app.state.database
    if database.dialect != "sqlite":
        pytest.skip("reads SQLite's plan; PostgreSQL plans by its statistics")
    for url, params in (
            ("/fhir/Task", {"focus:ServiceRequest.subject:Patient.identifier": BY_NUMBER}),
            ("/fhir/Encounter", {"subject:Patient.organization.identifier": DPS_ORGNR}),
            ("/fhir/Patient", {"_has:Flag:patient:status": "active"}),
            ("/fhir/Patient", {"_has:Encounter:subject:_has:Task:focus:status": "requested"})):
        ran = statements_of(database.engine, lambda u=url, p=params: _ids(story.klepp, u, **p))
        searches = [(st, p) for st, p in ran if "search_" in st and st.startswith("SELECT")]
        assert searches, url
        for statement, args in searches:
            plan = sqlite_plan(database.engine, statement, args)
            assert "SCAN " not in plan, (params, plan)
            # nor a read of every reference of a type, or every resource of one
            assert "(resource_type=? AND param=?)" not in plan, (params, plan)
            assert "ix_resources_type_updated" not in plan, (params, plan)


def test_declared_in_the_capability_statement(story: Story) -> None:
    meta = story.dps.get("/fhir/metadata").json()
    task = {r["type"]: r for r in meta["rest"][0]["resource"]}["Task"]
    params = {p["name"]: p for p in task["searchParam"]}
    assert params["_has"]["type"] == "special"
    assert "3 references" in params["focus"]["documentation"]
    assert "documentation" not in params["status"]
    assert "searchRevInclude" not in task  # _revinclude is not served


def test_a_link_through_too_many_foreign_records_is_a_400(story: Story,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each foreign record a link goes through is named in the SQL: past the bound the
    search is refused with an OperationOutcome (never a 500); the caller's own records are
    not counted."""
    from hub.store import chains

    _post(story.dps, consent(story.patient, "time-kommune"))
    monkeypatch.setattr(chains, "MAX_JUDGED", 0)
    r = story.time.get("/fhir/Patient", params={"_has:Consent:patient:status": "active"})
    assert r.status_code == 400, r.text
    assert "narrow" in r.json()["issue"][0]["diagnostics"]
    assert _ids(story.dps, "/fhir/Patient",
                **{"_has:Consent:patient:status": "active"}) == [story.patient]

"""Issue 12, tried as an attacking municipality would: one test per way in, each with the
positive control that the rightful party still can (CONTRACT sections 3 and 5).

The story's organisations: Jæren DPS (the centre, which records the consent and owns the
patient's records), Time kommune (named in the consent) and Klepp kommune (an attacker with
a valid token, named in nothing).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.engine import Database
from hub.db.models import ResourceRow
from hub.delivery.dispatcher import sweep
from hub.messaging.models import DeliveryRow, MessageRow
from hub.store import service
from hub.ui.disclosures import Filters, disclosure_log
from tests.access_clients import other_client
from tests.audit.trail import settle
from tests.auth_helpers import register_and_token
from tests.factories import fnr as fnr_of
from tests.messaging.test_story import EXAMPLES, load, register_story_organizations

FNR = "13116900216"
FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
IRCP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP"}]}
PLAN_CATEGORY = {"coding": [{"system": "http://carehub.example/fhir/CodeSystem/consent-category",
                             "code": "individual-plan"}]}

Hub = dict[str, TestClient]


@pytest.fixture
def hub(settings: Settings, database: Database) -> Iterator[Hub]:
    """The story's two organisations and Klepp kommune, each with a client."""
    register_story_organizations(database, time_endpoint="https://time.example/fhir/messages",
                                 klepp=True)
    with other_client(settings, database, "jaeren-dps") as dps, \
            other_client(settings, database, "time-kommune") as time, \
            other_client(settings, database, "klepp-kommune") as klepp:
        yield {"jaeren-dps": dps, "time-kommune": time, "klepp-kommune": klepp}


def example(number: int) -> dict[str, Any]:
    return load(EXAMPLES[number - 1])


def post(hub: Hub, message: dict[str, Any], *, as_org: str | None = None) -> Any:
    sender = as_org or message["entry"][0]["resource"]["sender"]["reference"].split("/")[1]
    return hub[sender].post("/fhir/$process-message", json=message)


def accepted(hub: Hub, message: dict[str, Any], *, as_org: str | None = None) -> dict[str, Any]:
    r = post(hub, message, as_org=as_org)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def said(answer: dict[str, Any]) -> str:
    return " ".join(i["diagnostics"] for i in answer["entry"][1]["resource"]["issue"])


def story(hub: Hub, *numbers: int) -> None:
    for n in numbers:
        accepted(hub, example(n))


def resent_by(message: dict[str, Any], org: str) -> dict[str, Any]:
    """`message` as another organisation would send it: new header id, its own sender."""
    out = copy.deepcopy(message)
    header = out["entry"][0]["resource"]
    header["id"] = str(uuid.uuid4())
    header["sender"] = {"reference": f"Organization/{org}"}
    return out


def renewed(message: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(message)
    out["entry"][0]["resource"]["id"] = str(uuid.uuid4())
    return out


def entry(message: dict[str, Any], rtype: str) -> dict[str, Any]:
    return next(e for e in message["entry"] if e["resource"]["resourceType"] == rtype)


def patient_id(hub: Hub) -> str:
    found = hub["jaeren-dps"].get("/fhir/Patient", params={
        "identifier": f"{FNR_SYSTEM}|{FNR}"}).json()["entry"]
    assert len(found) == 1
    return str(found[0]["resource"]["id"])


def only(c: TestClient, url: str, **params: str) -> list[dict[str, Any]]:
    r = c.get(url, params=params)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])
            if e.get("search", {}).get("mode") != "outcome"]


def consent(custodian: str, patient: str, *, permit: list[str] | None = None,
            deny: list[str] | None = None, plan: bool = False) -> dict[str, Any]:
    """A Consent recorded by `custodian`: a root permit naming `permit`, or an opt-out
    (root deny) naming `deny`."""
    kind, named = ("deny", deny or []) if deny is not None else ("permit", permit or [])
    category = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]
    return {
        "resourceType": "Consent", "status": "active",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": category + ([PLAN_CATEGORY] if plan else []),
        "patient": {"reference": f"Patient/{patient}"},
        "dateTime": "2026-11-30T10:00:00+00:00",
        "organization": [{"reference": f"Organization/{custodian}"}],
        "provision": {"type": kind, "actor": [
            {"role": IRCP, "reference": {"reference": f"Organization/{o}"}} for o in named]},
    }


def encounter(hub: Hub) -> dict[str, Any]:
    found = only(hub["jaeren-dps"], "/fhir/Encounter")
    assert found
    return found[0]


# --- 1. overwriting another organisation's records through $process-message ---------------


def test_a_message_links_to_the_centres_patient_and_leaves_it_unchanged(hub: Hub) -> None:
    story(hub, 1, 2, 3, 4)
    pid = patient_id(hub)
    before = hub["jaeren-dps"].get(f"/fhir/Patient/{pid}").json()
    attack = example(5)  # Time kommune's meeting answer, with the patient renamed
    entry(attack, "Patient")["resource"]["name"] = [{"family": "Angriper", "given": ["Eve"]}]
    answer = accepted(hub, attack)
    assert "Queued for Organization/jaeren-dps" in said(answer)
    after = hub["jaeren-dps"].get(f"/fhir/Patient/{pid}").json()
    assert after["meta"]["versionId"] == before["meta"]["versionId"]
    assert after["name"] == before["name"]
    # control: the owner's own message changes it
    mine = renewed(example(3))
    entry(mine, "Patient")["resource"]["name"] = [{"family": "Nordmann", "given": ["Kari", "B"]}]
    accepted(hub, mine)
    owned = hub["jaeren-dps"].get(f"/fhir/Patient/{pid}").json()
    assert owned["name"][0]["given"] == ["Kari", "B"]
    assert int(owned["meta"]["versionId"]) == int(before["meta"]["versionId"]) + 1


def test_a_consent_resent_under_its_identifier_by_another_is_refused(hub: Hub) -> None:
    story(hub, 1)
    stored = only(hub["jaeren-dps"], "/fhir/Consent")[0]
    attack = resent_by(example(1), "klepp-kommune")
    consent_entry = entry(attack, "Consent")["resource"]
    consent_entry["organization"] = [{"reference": "Organization/klepp-kommune"}]
    consent_entry["provision"]["actor"][0]["reference"] = {
        "reference": "Organization/klepp-kommune"}
    attack["entry"][0]["resource"]["destination"] = [{
        "endpoint": "urn:x", "receiver": {"reference": "Organization/klepp-kommune"}}]
    r = post(hub, attack)
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1]"]
    assert "another organisation" in issue["diagnostics"]
    again = hub["jaeren-dps"].get(f"/fhir/Consent/{stored['id']}").json()
    assert again["meta"]["versionId"] == "1"
    assert again["provision"]["actor"] == stored["provision"]["actor"]
    # control: the custodian sends a new version of it
    mine = renewed(example(1))
    entry(mine, "Consent")["resource"]["status"] = "inactive"
    accepted(hub, mine)
    assert hub["jaeren-dps"].get(f"/fhir/Consent/{stored['id']}").json()["status"] == "inactive"


def test_a_message_cannot_repoint_another_organisations_endpoint(
        hub: Hub, settings: Settings, database: Database) -> None:
    story(hub, 1)
    org = hub["time-kommune"].get("/fhir/Organization/time-kommune").json()
    endpoint_id = org["endpoint"][0]["reference"].split("/")[1]
    attack = resent_by(example(1), "klepp-kommune")  # a consent of Klepp's own ...
    own = entry(attack, "Consent")["resource"]
    own["organization"] = [{"reference": "Organization/klepp-kommune"}]
    own["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}]
    attack["entry"].append({  # ... and Time kommune's Endpoint, pointed at Klepp
        "fullUrl": f"{settings.fhir_base}/Endpoint/{endpoint_id}",
        "resource": {"resourceType": "Endpoint", "id": endpoint_id, "status": "active",
                     "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/"
                                        "endpoint-connection-type", "code": "hl7-fhir-msg"},
                     "payloadType": [{"text": "FHIR message"}],
                     "address": "https://attacker.example/steal"}})
    r = post(hub, attack)
    assert r.status_code == 422, r.text
    assert "Bundle.entry[3]" in r.json()["issue"][0]["expression"][0]
    stored = hub["klepp-kommune"].get(f"/fhir/Endpoint/{endpoint_id}").json()
    assert stored["address"] == "https://time.example/fhir/messages"
    # REST too
    put = hub["klepp-kommune"].put(f"/fhir/Endpoint/{endpoint_id}",
                                   json={**stored, "address": "https://attacker.example/"})
    assert put.status_code == 403
    # control: the hub itself (what the `hub org` commands act as) changes it
    with database.session(write=True) as s:
        service.update(s, Subject.hub_itself(), resource_type="Endpoint",
                       resource_id=endpoint_id,
                       resource={**stored, "address": "https://time.example/fhir/v2"})
    assert hub["time-kommune"].get(f"/fhir/Endpoint/{endpoint_id}").json()["address"] == \
        "https://time.example/fhir/v2"


def test_rest_writes_to_another_organisations_record_are_refused(hub: Hub) -> None:
    story(hub, 1, 2, 3)
    own = encounter(hub)
    url = f"/fhir/Encounter/{own['id']}"
    # Time kommune may read it (statutory notice) or not, but it never writes it
    for org in ("time-kommune", "klepp-kommune"):
        r = hub[org].put(url, json={**own, "status": "cancelled"})
        assert r.status_code in (403, 409), r.text
        assert hub[org].delete(url).status_code in (204, 403)
    assert hub["jaeren-dps"].get(url).json()["meta"]["versionId"] == own["meta"]["versionId"]
    # control: the owner
    r = hub["jaeren-dps"].put(url, json={**own, "status": "finished"})
    assert r.status_code == 200, r.text


# --- 2. opening records with a consent of one's own ------------------------------------------


def test_a_consent_naming_oneself_opens_nothing_of_another_organisation(hub: Hub) -> None:
    story(hub, 1, 2, 3)
    pid = patient_id(hub)
    enc = encounter(hub)
    klepp = hub["klepp-kommune"]
    # as custodian, naming another: refused
    theirs = consent("jaeren-dps", pid, permit=["klepp-kommune"])
    r = klepp.post("/fhir/Consent", json=theirs)
    assert r.status_code == 422, r.text
    assert "custodian" in r.json()["issue"][0]["diagnostics"]
    # as its own custodian: kept, but it opens only Klepp's own records
    mine = consent("klepp-kommune", pid, permit=["klepp-kommune"])
    assert klepp.post("/fhir/Consent", json=mine).status_code == 201
    assert klepp.get(f"/fhir/Encounter/{enc['id']}").status_code == 404
    assert only(klepp, "/fhir/Encounter") == []
    assert only(klepp, "/fhir/CarePlan") == []
    # nor does the $consent-trail show it the centre's consents
    trail = klepp.get(f"/fhir/Patient/{pid}/$consent-trail")
    if trail.status_code == 200:
        seen = [e["resource"] for e in trail.json()["entry"]]
        assert all(r.get("resourceType") != "Consent"
                   or r["organization"][0]["reference"] == "Organization/klepp-kommune"
                   for r in seen), seen
        assert not any("jaeren-dps" in json.dumps(r) for r in seen
                       if r.get("resourceType") == "AuditEvent")
    # by message as well: a consent-changed naming the centre as custodian
    attack = resent_by(example(1), "klepp-kommune")
    entry(attack, "Consent")["resource"]["identifier"] = [
        {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}]
    r = post(hub, attack)
    assert r.status_code == 422, r.text
    # control: Time kommune, named by the centre's consent, reads the centre's plan
    assert [p["id"] for p in only(hub["time-kommune"], "/fhir/CarePlan")]
    trail = hub["jaeren-dps"].get(f"/fhir/Patient/{pid}/$consent-trail")
    assert trail.status_code == 200


def test_an_opt_out_outranks_a_consent_another_organisation_records(hub: Hub) -> None:
    story(hub, 1, 2)
    pid = patient_id(hub)
    dps = hub["jaeren-dps"]
    plan = only(dps, "/fhir/CarePlan")[0]
    assert hub["time-kommune"].get(f"/fhir/CarePlan/{plan['id']}").status_code == 200
    # the patient opts out of sharing with Time kommune, recorded by the centre
    assert dps.post("/fhir/Consent", json=consent("jaeren-dps", pid,
                                                  deny=["time-kommune"])).status_code == 201
    # Time kommune records a permit naming itself: no effect on the centre's plan
    time = hub["time-kommune"]
    assert time.post("/fhir/Consent", json=consent("time-kommune", pid,
                                                   permit=["time-kommune"])).status_code == 201
    assert time.get(f"/fhir/CarePlan/{plan['id']}").status_code == 404
    assert only(time, "/fhir/CarePlan") == []


# --- 3. an opt-out is not shown to the organisation it names ---------------------------------


def test_an_opt_out_is_never_shown_to_the_organisation_it_denies(hub: Hub) -> None:
    story(hub, 1)
    pid = patient_id(hub)
    dps = hub["jaeren-dps"]
    opt_out = consent("jaeren-dps", pid, deny=["klepp-kommune"])
    created = dps.post("/fhir/Consent", json=opt_out)
    assert created.status_code == 201
    cid = created.json()["id"]
    klepp = hub["klepp-kommune"]
    assert klepp.get(f"/fhir/Consent/{cid}").status_code == 404
    assert klepp.get(f"/fhir/Consent/{cid}/_history/1").status_code == 404
    assert only(klepp, "/fhir/Consent") == []
    assert only(klepp, "/fhir/Consent", patient=f"Patient/{pid}") == []
    # nor by message: a consent-changed of it to Klepp is withheld
    message = renewed(example(1))
    body = entry(message, "Consent")["resource"]
    body["provision"] = {"type": "deny", "actor": [
        {"role": IRCP, "reference": {"reference": "Organization/klepp-kommune"}}]}
    body["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}]
    message["entry"][0]["resource"]["destination"] = [{
        "endpoint": "urn:x", "receiver": {"reference": "Organization/klepp-kommune"}}]
    answer = accepted(hub, message)
    assert "Withheld from Organization/klepp-kommune" in said(answer)
    # control: the custodian sees it; Time kommune sees the permit that names it
    assert dps.get(f"/fhir/Consent/{cid}").status_code == 200
    assert len(only(hub["time-kommune"], "/fhir/Consent")) == 1


# --- 4. every version judged on its own -----------------------------------------------------


def test_vread_and_history_judge_each_version(hub: Hub) -> None:
    story(hub, 1)
    pid = patient_id(hub)
    dps, time = hub["jaeren-dps"], hub["time-kommune"]
    # another patient, with no consent for Time kommune
    other = dps.post("/fhir/Patient", json={
        "resourceType": "Patient",
        "identifier": [{"system": FNR_SYSTEM, "value": "01017010170"}]}).json()["id"]
    flag = {"resourceType": "Flag", "status": "active", "code": {"text": "Voldsrisiko"},
            "subject": {"reference": f"Patient/{other}"}}
    fid = dps.post("/fhir/Flag", json=flag).json()["id"]
    # corrected: it was about the story's patient all along
    assert dps.put(f"/fhir/Flag/{fid}", json={
        **flag, "id": fid, "subject": {"reference": f"Patient/{pid}"}}).status_code == 200
    url = f"/fhir/Flag/{fid}"
    assert time.get(url).status_code == 200  # v2: the consent permits Time kommune
    assert time.get(f"{url}/_history/2").status_code == 200
    assert time.get(f"{url}/_history/1").status_code == 404  # v1: another patient
    versions = time.get(f"{url}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in versions["entry"]] == ["2"]
    assert "Patient/" + other not in json.dumps(versions)
    # control: the owner sees both
    mine = dps.get(f"{url}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in mine["entry"]] == ["2", "1"]


# --- 5. scopes bound _include --------------------------------------------------------------


def test_include_is_bounded_by_token_scopes(
        hub: Hub, settings: Settings, database: Database) -> None:
    story(hub, 1, 3, 9)
    dps = hub["jaeren-dps"]
    tasks_only = register_and_token(dps, database, org_id="jaeren-dps",
                                    scope="system/Task.read")
    r = dps.get("/fhir/Task", params={"_include": "Task:patient"},
                headers={"Authorization": f"Bearer {tasks_only}"})
    assert r.status_code == 200, r.text
    types = {e["resource"]["resourceType"] for e in r.json()["entry"]
             if e["search"]["mode"] != "outcome"}
    assert types == {"Task"}
    r = dps.get("/fhir/Task", params={"_include": "Task:focus"},
                headers={"Authorization": f"Bearer {tasks_only}"})
    assert {e["resource"]["resourceType"] for e in r.json()["entry"]
            if e["search"]["mode"] != "outcome"} == {"Task"}
    # control: a token with Patient.read gets the patient included
    both = register_and_token(dps, database, org_id="jaeren-dps",
                              scope="system/Task.read system/Patient.read")
    r = dps.get("/fhir/Task", params={"_include": "Task:patient"},
                headers={"Authorization": f"Bearer {both}"})
    assert {e["resource"]["resourceType"] for e in r.json()["entry"]
            if e["search"]["mode"] != "outcome"} == {"Task", "Patient"}


# --- 6. minimum necessary on a legal basis ---------------------------------------------------


def _pulled(hub: Hub, database: Database, settings: Settings, org: str) -> list[dict[str, Any]]:
    sweep(database, settings.model_copy(update={"delivery_timeout": 0.5}))
    r = hub[org].get("/fhir/Bundle", params={"message.receiver": f"Organization/{org}"})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json()["entry"]]


def test_a_statutory_admission_notice_carries_administrative_content_only(
        hub: Hub, settings: Settings, database: Database) -> None:
    admission = example(3)
    enc = entry(admission, "Encounter")["resource"]
    enc["reasonCode"] = [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                      "code": "F32.2"}]}]
    enc["text"] = {"status": "generated",
                   "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Alvorlig depresjon</div>"}
    admission["entry"][0]["resource"]["destination"].append(
        {"endpoint": "urn:x", "receiver": {"reference": "Organization/klepp-kommune"}})
    answer = accepted(hub, admission)
    assert "Queued for Organization/klepp-kommune" in said(answer)  # statutory, no consent
    with database.session(write=False) as s:
        rows = s.query(DeliveryRow).all()
        assert {r.receiver_org: r.basis for r in rows}["klepp-kommune"] == \
            "statutory-notification"
    got = _pulled(hub, database, settings, "klepp-kommune")
    assert len(got) == 1
    text = json.dumps(got[0])
    assert "F32.2" not in text
    assert "depresjon" not in text
    delivered = entry(got[0], "Encounter")["resource"]
    assert delivered["status"] == "in-progress"
    assert delivered["class"]["code"] == "IMP"
    assert delivered["period"] == enc["period"]
    assert "SUBSETTED" in json.dumps(delivered["meta"])
    # control: a receiver on the patient's consent (Time kommune, after 01) gets all of it
    story(hub, 1)
    again = renewed(admission)
    accepted(hub, again)
    full = [b for b in _pulled(hub, database, settings, "time-kommune")
            if entry(b, "MessageHeader")["resource"]["id"] == again["entry"][0]["resource"]["id"]]
    assert "F32.2" in json.dumps(full)


# --- 7. paging leaves no trace of the hidden --------------------------------------------------


def test_paging_and_totals_count_only_what_the_caller_may_see(hub: Hub) -> None:
    dps, klepp = hub["jaeren-dps"], hub["klepp-kommune"]
    hidden = dps.post("/fhir/Flag", json={
        "resourceType": "Flag", "status": "active", "code": {"text": "hidden"},
        "subject": {"reference": "Patient/someone"}})
    assert hidden.status_code == 201
    own = klepp.post("/fhir/Flag", json={"resourceType": "Flag", "status": "active",
                                          "code": {"text": "mine"},
                                          "subject": {"reference": "Patient/another"}})
    assert own.status_code == 201
    for params in ({"_count": "0"}, {"_count": "0", "_total": "accurate"},
                   {"_count": "1"}, {"_count": "1", "_total": "accurate"},
                   {"_count": "1", "_sort": "_lastUpdated"}):
        page = klepp.get("/fhir/Flag", params=params).json()
        nexts = [ln["url"] for ln in page.get("link", []) if ln["relation"] == "next"]
        assert nexts == [], (params, page.get("link"))
        if "total" in page:
            assert page["total"] == 1
    assert [f["id"] for f in only(klepp, "/fhir/Flag", _count="1")] == [own.json()["id"]]
    # control: the owner of both pages through two
    assert only(dps, "/fhir/Flag", _total="accurate")  # its own
    page = dps.get("/fhir/Flag", params={"_count": "1", "_total": "accurate"}).json()
    assert page["total"] == 1


# --- 8. one decision: $disclosure-check answers what routing does -----------------------------


def test_disclosure_check_answers_what_routing_does_for_the_individual_plan(hub: Hub) -> None:
    consent_message = example(1)
    # a consent to share, without the individual-plan category
    body = entry(consent_message, "Consent")["resource"]
    body["category"] = [c for c in body["category"]
                        if "individual-plan" not in json.dumps(c)]
    accepted(hub, consent_message)
    pid = patient_id(hub)
    check = hub["jaeren-dps"].get(f"/fhir/Patient/{pid}/$disclosure-check", params={
        "recipient": "Organization/time-kommune", "event": "care-plan-shared"}).json()
    answer = accepted(hub, example(2))
    decision = next(p["valueCode"] for p in check["parameter"] if p["name"] == "decision")
    assert decision == "deny"
    assert "Withheld from Organization/time-kommune" in said(answer)
    assert "individual-plan" in said(answer)
    # control: recording the patient's consent to the plan releases it, and both say permit
    fixed = renewed(example(1))
    accepted(hub, fixed)
    check = hub["jaeren-dps"].get(f"/fhir/Patient/{pid}/$disclosure-check", params={
        "recipient": "Organization/time-kommune", "event": "care-plan-shared"}).json()
    assert next(p["valueCode"] for p in check["parameter"] if p["name"] == "decision") == \
        "permit"


def test_recording_the_plan_consent_releases_what_was_withheld(
        hub: Hub, database: Database) -> None:
    consent_message = example(1)
    body = entry(consent_message, "Consent")["resource"]
    body["category"] = [c for c in body["category"] if "individual-plan" not in json.dumps(c)]
    accepted(hub, consent_message)
    answer = accepted(hub, example(2))
    assert "Withheld from Organization/time-kommune" in said(answer)
    with database.session(write=False) as s:
        plan = s.query(DeliveryRow).filter(DeliveryRow.status == "withheld").one()
        assert plan.withheld_for == "individual-plan-consent"
    released = accepted(hub, renewed(example(1)))  # now with the category
    assert "released the care-plan-shared message" in said(released)
    with database.session(write=False) as s:
        row = s.get(DeliveryRow, plan.id)
        assert row is not None
        assert row.status == "queued"
        assert row.withheld_for is None


def test_a_refused_message_keeps_nothing(hub: Hub, database: Database) -> None:
    story(hub, 1)
    with database.session(write=False) as s:
        before = len(service.search(s, Subject.hub_itself(), request=_all("Consent"))[0])
    attack = resent_by(example(1), "klepp-kommune")
    entry(attack, "Consent")["resource"]["organization"] = [
        {"reference": "Organization/klepp-kommune"}]
    attack["entry"].append({"fullUrl": "urn:uuid:" + str(uuid.uuid4()), "resource": {
        "resourceType": "Flag", "status": "active", "code": {"text": "x"},
        "identifier": [{"system": "urn:x", "value": "1"}],
        "subject": {"reference": attack["entry"][2]["fullUrl"]}}})
    assert post(hub, attack).status_code == 422
    with database.session(write=False) as s:
        assert len(service.search(s, Subject.hub_itself(), request=_all("Consent"))[0]) == before
        assert service.search(s, Subject.hub_itself(), request=_all("Flag"))[0] == []


def _all(rtype: str) -> Any:
    from hub.store.query import SearchRequest
    return SearchRequest(resource_type=rtype, criteria=[], count=100)


# --- one Patient per person: REST links to it; copies do not make messages ambiguous ------


def _klepps_creates(database: Database, pid: str) -> list[tuple[str, bool]]:
    """(decision, shown among reads) of each disclosure-log line of Klepp creating the
    person, oldest first."""
    settle(database)
    with database.session(write=False) as s:
        lines = disclosure_log(s, pid, Filters(), names={}, timeline=[], zone=UTC).lines
    return [(ln.decision, ln.is_read) for ln in reversed(lines)
            if ln.recipient == "Organization/klepp-kommune" and ln.interaction == "create"]


def test_a_patient_posted_by_rest_with_a_known_number_is_the_person_left_unchanged(
        hub: Hub, database: Database) -> None:
    """CONTRACT section 3: the hub keeps one Patient per fødselsnummer. Klepp's POST of a
    Patient with the number is that Patient (200 and its location): nothing is written, the
    centre's Patient keeps its content, and Klepp, which holds no records about the person,
    is not shown it. Controls: an unknown number is created (201); once Klepp holds a
    record about the person it may read the Patient; the centre's messages still update it."""
    story(hub, 1, 2, 3, 4)
    pid = patient_id(hub)
    centre = hub["jaeren-dps"].get(f"/fhir/Patient/{pid}").json()
    shadow = {"resourceType": "Patient", "name": [{"family": "Skygge"}],
              "identifier": [{"system": FNR_SYSTEM, "value": FNR}]}
    r = hub["klepp-kommune"].post("/fhir/Patient", json=shadow)
    assert r.status_code == 200, r.text
    # the person's Patient is named, not its version or when it last changed (probe E, F3)
    assert r.headers["Location"].endswith(f"/fhir/Patient/{pid}")
    assert "etag" not in r.headers
    assert "last-modified" not in r.headers
    assert r.json()["resourceType"] == "OperationOutcome"
    assert f"Patient/{pid}" in r.text
    assert centre["name"][0]["family"] not in r.text
    assert hub["jaeren-dps"].get(f"/fhir/Patient/{pid}").json() == centre
    assert hub["klepp-kommune"].get(f"/fhir/Patient/{pid}").status_code == 404
    # the auditor sees that Klepp asked for the person and was shown nothing
    assert _klepps_creates(database, pid) == [("deny", True)]
    # the same under the hl7.no alias of the system, and in a transaction
    alias = {**shadow, "identifier": [{"system": "http://hl7.no/fhir/NamingSystem/FNR",
                                       "value": FNR}]}
    assert hub["klepp-kommune"].post("/fhir/Patient", json=alias).status_code == 200
    urn = f"urn:uuid:{uuid.uuid4()}"
    done = hub["klepp-kommune"].post("/fhir", json={
        "resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": urn, "resource": shadow, "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Flag", "status": "active", "code": {"text": "x"},
                          "subject": {"reference": urn}},
             "request": {"method": "POST", "url": "Flag"}}]})
    assert done.status_code == 200, done.text
    linked, flag = (e["response"] for e in done.json()["entry"])
    assert linked["status"] == "200 OK"
    assert linked["location"] == f"Patient/{pid}"
    assert "etag" not in linked
    assert "lastModified" not in linked
    assert "resource" not in done.json()["entry"][0]
    assert centre["name"][0]["family"] not in json.dumps(done.json())
    assert flag["status"].startswith("201")
    found = hub["jaeren-dps"].get("/fhir/Patient", params={"identifier": f"{FNR_SYSTEM}|{FNR}"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [pid]
    assert hub["jaeren-dps"].get(f"/fhir/Patient/{pid}").json() == centre
    # control: Klepp now holds a record about the person (its Flag), so it may read it
    seen = hub["klepp-kommune"].post("/fhir/Patient", json=shadow)
    assert (seen.status_code, seen.json()["id"]) == (200, pid)
    assert seen.headers["etag"] == f'W/"{seen.json()["meta"]["versionId"]}"'
    assert seen.json()["name"] == centre["name"]
    # ... and the auditor sees it shown to Klepp, among the reads by other organisations
    assert _klepps_creates(database, pid)[-1] == ("permit", True)
    # control: a number the hub never saw is a new Patient
    other = {**shadow, "identifier": [{"system": FNR_SYSTEM, "value": fnr_of(date(1970, 5, 6))}]}
    made = hub["klepp-kommune"].post("/fhir/Patient", json=other)
    assert made.status_code == 201
    assert made.json()["id"] != pid
    # control: the centre's next message about the person updates its Patient
    mine = renewed(example(3))
    entry(mine, "Patient")["resource"]["name"] = [{"family": "Nordmann", "given": ["Kari", "C"]}]
    accepted(hub, mine)
    assert hub["jaeren-dps"].get(f"/fhir/Patient/{pid}").json()["name"][0]["given"] == [
        "Kari", "C"]


def test_a_put_of_a_second_patient_for_a_known_person_is_refused(hub: Hub) -> None:
    """A Patient under an id of Klepp's choosing, or a Patient of Klepp's given the
    centre's patient's number, would be a second Patient for the person: 422 naming the
    Patient to refer to, nothing written. Control: Klepp changes its own Patient freely."""
    story(hub, 1, 2, 3, 4)
    pid = patient_id(hub)
    person = {"resourceType": "Patient", "name": [{"family": "Skygge"}],
              "identifier": [{"system": FNR_SYSTEM, "value": FNR}]}
    r = hub["klepp-kommune"].put("/fhir/Patient/skygge", json={**person, "id": "skygge"})
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["code"] == "duplicate"
    assert f"Patient/{pid}" in r.text
    assert hub["klepp-kommune"].get("/fhir/Patient/skygge").status_code == 404
    number = fnr_of(date(1970, 5, 6))
    own = hub["klepp-kommune"].post("/fhir/Patient", json={
        **person, "identifier": [{"system": FNR_SYSTEM, "value": number}]}).json()
    taken = {**own, "identifier": [*own["identifier"], {"system": FNR_SYSTEM, "value": FNR}]}
    r = hub["klepp-kommune"].put(f"/fhir/Patient/{own['id']}", json=taken)
    assert r.status_code == 422, r.text
    assert hub["klepp-kommune"].get(f"/fhir/Patient/{own['id']}").json()["meta"][
        "versionId"] == "1"
    renamed = {**own, "name": [{"family": "Annen"}]}
    assert hub["klepp-kommune"].put(f"/fhir/Patient/{own['id']}",
                                    json=renamed).status_code == 200


def test_a_second_patient_from_before_the_rule_does_not_block_the_centres_messages(
        hub: Hub, database: Database) -> None:
    """A database from before the one-Patient rule may hold a second Patient with a known
    number (made by REST then; written here as it was, past the REST rule). Messages still
    mean the centre's own, and another organisation's its own."""
    story(hub, 1, 2, 3, 4)
    pid = patient_id(hub)
    shadow = {"resourceType": "Patient", "name": [{"family": "Skygge"}],
              "identifier": [{"system": FNR_SYSTEM, "value": FNR}]}
    klepp = Subject("client", "klepp-ehr", "klepp-kommune", frozenset({"system/*.*"}))
    with database.session(write=True) as s:
        [stored] = service.create_many(s, [service.New(klepp, shadow, str(uuid.uuid4()))])
    klepps = stored.id
    assert klepps != pid
    # the centre's next message about the person is still taken, and about its Patient
    mine = renewed(example(3))
    entry(mine, "Patient")["resource"]["name"] = [{"family": "Nordmann", "given": ["Kari", "C"]}]
    accepted(hub, mine)
    assert hub["jaeren-dps"].get(f"/fhir/Patient/{pid}").json()["name"][0]["given"] == [
        "Kari", "C"]
    assert hub["klepp-kommune"].get(f"/fhir/Patient/{klepps}").json()["name"] == [
        {"family": "Skygge"}]
    # Klepp's POST of the number is its own Patient, not the centre's
    again = hub["klepp-kommune"].post("/fhir/Patient", json=shadow)
    assert (again.status_code, again.json()["id"]) == (200, klepps)
    # Time kommune's answer, whose Patient Time does not own, still links to the centre's
    accepted(hub, example(5))
    # control: Klepp's own message about the number is about Klepp's own Patient
    own = resent_by(example(1), "klepp-kommune")
    entry(own, "Consent")["resource"]["organization"] = [
        {"reference": "Organization/klepp-kommune"}]
    entry(own, "Consent")["resource"]["identifier"] = [
        {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}]
    accepted(hub, own)
    recorded = only(hub["klepp-kommune"], "/fhir/Consent")
    assert [c["patient"]["reference"] for c in recorded] == [f"Patient/{klepps}"]


def test_a_record_made_by_rest_under_anothers_identifier_does_not_block_its_messages(
        hub: Hub) -> None:
    story(hub, 1, 2, 3)
    enc = encounter(hub)
    copy_of = {"resourceType": "Encounter", "status": "planned",
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                         "code": "IMP"},
               "identifier": enc["identifier"]}
    assert hub["klepp-kommune"].post("/fhir/Encounter", json=copy_of).status_code == 201
    mine = renewed(example(3))
    accepted(hub, mine)
    assert encounter(hub)["id"] == enc["id"]


def test_a_copy_made_by_rest_under_a_known_identifier_does_not_unlink_references_to_it(
        hub: Hub) -> None:
    story(hub, 1, 2, 3, 4)
    meeting = only(hub["jaeren-dps"], "/fhir/Appointment")
    assert len(meeting) == 1
    # Klepp copies the meeting's identifier (a receiver of the invitation knows it) by REST
    copy_of = {"resourceType": "Appointment", "status": "booked",
               "identifier": meeting[0]["identifier"],
               "participant": [{"actor": {"reference": f"Patient/{patient_id(hub)}"},
                                "status": "needs-action"},
                               {"actor": {"reference": "Organization/klepp-kommune"},
                                "status": "needs-action"}]}
    r = hub["klepp-kommune"].post("/fhir/Appointment", json=copy_of)
    assert r.status_code == 201, r.text
    klepps = r.json()["id"]
    # Time's answer names the meeting by that identifier only; it still means the centre's
    accepted(hub, example(5))
    answers = only(hub["time-kommune"], "/fhir/AppointmentResponse")
    assert [a["appointment"]["reference"] for a in answers] == [
        f"Appointment/{meeting[0]['id']}"]
    # control: Klepp's own answer under that identifier links to Klepp's own copy
    own = resent_by(example(5), "klepp-kommune")
    entry(own, "AppointmentResponse")["resource"]["identifier"] = [
        {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}]
    entry(own, "AppointmentResponse")["resource"]["actor"] = {
        "reference": "Organization/klepp-kommune"}
    accepted(hub, own)
    klepp_answers = only(hub["klepp-kommune"], "/fhir/AppointmentResponse")
    assert f"Appointment/{klepps}" in [a["appointment"]["reference"] for a in klepp_answers]


def test_a_message_finds_the_person_a_patient_carries_under_the_hl7_no_alias(
        hub: Hub, database: Database) -> None:
    """CONTRACT section 3, one Patient per person, whichever name of the system (HL7 Norway
    no-basis: the OID, or the hl7.no alias) carries the number. Klepp registers the person by
    REST under the alias; the centre's messages, which name the number by its OID (as the
    message profile requires), are about that Patient, where the first made a second one."""
    alias = "http://hl7.no/fhir/NamingSystem/FNR"
    made = hub["klepp-kommune"].post("/fhir/Patient", json={
        "resourceType": "Patient", "name": [{"family": "Nordmann", "given": ["Kari"]}],
        "identifier": [{"system": alias, "value": FNR}]})
    assert made.status_code == 201, made.text
    pid = made.json()["id"]

    def about(message: dict[str, Any]) -> str | None:
        header_id = message["entry"][0]["resource"]["id"]
        with database.session(write=False) as s:
            return s.scalar(select(MessageRow.patient_ref).where(
                MessageRow.header_id == header_id))

    first = example(1)
    assert entry(first, "Patient")["resource"]["identifier"][0]["system"] == FNR_SYSTEM
    accepted(hub, first)
    assert about(first) == f"Patient/{pid}"
    second = example(3)
    accepted(hub, second)
    assert about(second) == f"Patient/{pid}"
    with database.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(ResourceRow).where(
            ResourceRow.resource_type == "Patient")) == 1

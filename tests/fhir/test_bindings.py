"""Required bindings of the base R4 specification are checked in the one validation place, from
the table scripts/r4_bindings.py derives from the official R4 core package
(fhir_profiles/r4/): code elements, Codings and CodeableConcepts, through backbone elements,
choice types, contained resources, extensions and Bundle entries."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.config import Settings
from hub.db.engine import Database
from hub.errors import Issue
from hub.fhir.structure import BINDINGS_FILE, binding_issues, unchecked_bindings
from hub.fhir.validation import validate_message, validate_resource
from tests.access_clients import other_client
from tests.conftest import SHARED
from tests.factories import encounter, patient, task
from tests.messaging.test_story import register_story_organizations

R4_EXAMPLES = sorted((SHARED / "fhir-r4-examples").glob("*/*.json"))
MESSAGES = sorted((SHARED / "examples").glob("*.json"))
README = BINDINGS_FILE.parent / "README.md"

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
SNOMED = "http://snomed.info/sct"


def _codes(issues: list[Issue]) -> list[str | None]:
    return [i.expression for i in issues if i.code == "code-invalid"]


def _condition(clinical_status: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": "c1", "clinicalStatus": clinical_status,
            "code": {"text": "Depresjon"}, "subject": {"reference": "Patient/p1"}}


def _coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


# --- the official examples and the shared story keep their bindings ----------------------------

@pytest.mark.parametrize("path", R4_EXAMPLES, ids=lambda p: p.name)
def test_every_official_r4_example_keeps_its_bindings(path: Path) -> None:
    resource = json.loads(path.read_text(encoding="utf-8"))
    assert _codes(validate_resource(resource)) == []


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.name)
def test_the_shared_example_messages_keep_their_bindings(path: Path) -> None:
    assert _codes(validate_message(json.loads(path.read_text(encoding="utf-8")))) == []


# --- attacks: a code outside the ValueSet, at the right path -----------------------------------

@pytest.mark.parametrize(("resource", "where"), [
    ({"resourceType": "Patient", "gender": "x"}, "Patient.gender"),
    (patient(address=[{"use": "holiday", "city": "Bryne"}]), "Patient.address[0].use"),
    ({"resourceType": "Patient", "contact": [{"gender": "m"}]}, "Patient.contact[0].gender"),
    ({"resourceType": "Task", "status": "requested", "intent": "wish"}, "Task.intent"),
    ({"resourceType": "Consent", "status": "maybe"}, "Consent.status"),
    ({"resourceType": "Appointment", "status": "booked",
      "participant": [{"status": "sure"}]}, "Appointment.participant[0].status"),
    ({"resourceType": "Bundle", "type": "message", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "x"}}]},
     "Bundle.entry[0].resource.gender"),
    # the lists fhir.resources' generator cut short, once not checked
    (encounter("Patient/p1", status="bogus"), "Encounter.status"),
    (task("Patient/p1", "Encounter/e1", status="bogus"), "Task.status"),
    ({"resourceType": "Encounter", "status": "finished",
      "statusHistory": [{"status": "done", "period": {}}]}, "Encounter.statusHistory[0].status"),
    # a CodeableConcept bound required: a coding of another system, or text only
    (_condition(_coded(SNOMED, "55561003")), "Condition.clinicalStatus.coding[0]"),
    (_condition(_coded(CLINICAL, "bogus")), "Condition.clinicalStatus.coding[0]"),
    (_condition({"coding": [{"code": "active"}]}), "Condition.clinicalStatus.coding[0]"),
    (_condition({"text": "active"}), "Condition.clinicalStatus"),
    # contained, choice types, contentReference, extensions
    ({"resourceType": "CarePlan", "status": "active", "intent": "plan",
      "contained": [_condition(_coded(SNOMED, "55561003"))]},
     "CarePlan.contained[0].clinicalStatus.coding[0]"),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
      "component": [{"code": {"text": "y"}, "valueQuantity": {"value": 1, "comparator": "~"}}]},
     "Observation.component[0].valueQuantity.comparator"),
    ({"resourceType": "Questionnaire", "status": "active", "item": [
        {"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "essay"}]}]},
     "Questionnaire.item[0].item[0].type"),
    (patient(extension=[{"url": "http://example.org/x", "valueAddress": {"use": "holiday"}}]),
     "Patient.extension[0].valueAddress.use"),
    (patient(telecom=[{"system": "pigeon", "value": "x"}]), "Patient.telecom[0].system"),
])
def test_a_code_outside_a_required_valueset_is_invalid(resource: dict[str, Any],
                                                       where: str) -> None:
    issues = validate_resource(resource)
    assert where in _codes(issues), [i.diagnostics for i in issues]
    text = next(i.diagnostics for i in issues if i.expression == where)
    assert text.startswith(f"{where}: ")
    assert "ValueSet FHIR R4 requires" in text
    assert "http://hl7.org/fhir/ValueSet/" in text


@pytest.mark.parametrize("resource", [
    encounter("Patient/p1", status="finished"),
    task("Patient/p1", "Encounter/e1", status="in-progress"),
    _condition(_coded(CLINICAL, "active")),
    # one coding from the ValueSet is enough; the others may translate it
    _condition({"coding": [{"system": SNOMED, "code": "55561003"},
                           {"system": CLINICAL, "code": "remission"}], "text": "i bedring"}),
    {"resourceType": "CarePlan", "status": "active", "intent": "plan",
     "contained": [_condition(_coded(CLINICAL, "resolved"))]},
    {"resourceType": "Questionnaire", "status": "active", "item": [
        {"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "text"}]}]},
    patient(extension=[{"url": "http://example.org/x", "valueAddress": {"use": "temp"}}]),
])
def test_codes_from_the_valueset_pass(resource: dict[str, Any]) -> None:
    assert binding_issues(resource) == []


def test_a_required_coding_needs_its_system_and_code() -> None:
    """R4 binds no element of type Coding `required` (the table says so); the rule the check
    applies to a Coding is the one it applies to each coding of a CodeableConcept."""
    table = json.loads(BINDINGS_FILE.read_text(encoding="utf-8"))
    kinds = {e["k"] for n in table["nodes"].values() for e in n.values() if "k" in e}
    assert kinds == {"code", "CodeableConcept"}
    issues = binding_issues(_condition({"coding": [{"system": CLINICAL}]}))
    assert [i.expression for i in issues] == ["Condition.clinicalStatus.coding[0]"]
    assert "without a code" in issues[0].diagnostics


@pytest.mark.parametrize("coding", [
    {"system": ["not", "a", "uri"], "code": "active"},
    {"system": CLINICAL, "code": {"not": "a code"}},
    "active",
])
def test_a_malformed_coding_is_invalid_not_a_crash(coding: Any) -> None:
    resource = _condition({"coding": [coding]})
    issues = validate_resource(resource)
    assert any(i.severity == "error" for i in issues)
    assert binding_issues(_condition({"coding": [coding, {"system": CLINICAL,
                                                          "code": "active"}]})) == []


# --- the table: derived, sourced, and what it leaves unchecked ---------------------------------

def test_the_unexpandable_valuesets_are_exactly_these() -> None:
    """Bindings whose codes the R4 package cannot list are not checked; this list must not
    grow without someone saying why (fhir_profiles/r4/README.md)."""
    unchecked = unchecked_bindings()
    assert set(unchecked) == {
        "http://hl7.org/fhir/ValueSet/mimetypes",  # BCP 13
        "http://hl7.org/fhir/ValueSet/currencies",  # ISO 4217
        "http://hl7.org/fhir/ValueSet/ucum-units",  # UCUM, a grammar
        "http://loinc.org/vs/LL379-9",  # a LOINC answer list
    }
    elements = sorted(e for u in unchecked.values() for e in u["elements"])
    assert len(elements) == 17
    assert "Attachment.contentType" in elements
    readme = README.read_text(encoding="utf-8")
    for url, why in unchecked.items():
        assert why["reason"]
        assert f"`{url}`" in readme


def test_the_table_names_its_source_and_the_readme_agrees() -> None:
    table = json.loads(BINDINGS_FILE.read_text(encoding="utf-8"))
    source = table["source"]
    assert (source["package"], source["version"], source["license"]) == (
        "hl7.fhir.r4.core", "4.0.1", "CC0-1.0")
    readme = README.read_text(encoding="utf-8")
    assert source["inputs_sha256"] in readme
    assert re.search(rf"\({source['inputs']} files\)", readme)
    checked = sum(1 for n in table["nodes"].values() for e in n.values() if "b" in e)
    assert f"{checked} are\nchecked" in readme or f"{checked} are checked" in readme
    # the codes come from the official ValueSets, e.g. the two fhir.resources cut short
    sets = table["valueSets"]
    assert sets["http://hl7.org/fhir/ValueSet/encounter-status"] == {
        "http://hl7.org/fhir/encounter-status": [
            "arrived", "cancelled", "entered-in-error", "finished", "in-progress", "onleave",
            "planned", "triaged", "unknown"]}
    task_status = sets["http://hl7.org/fhir/ValueSet/task-status"]
    assert len(task_status["http://hl7.org/fhir/task-status"]) == 12
    # nested concepts of a code system are codes too (unconfirmed > provisional)
    assert "provisional" in sets["http://hl7.org/fhir/ValueSet/condition-ver-status"][
        "http://terminology.hl7.org/CodeSystem/condition-ver-status"]


# --- through the API: $validate, create, $process-message --------------------------------------

def test_validate_and_create_refuse_a_bad_gender(client: TestClient) -> None:
    r = client.post("/fhir/Patient/$validate", json={"resourceType": "Patient", "gender": "x"})
    assert r.status_code == 200
    issues = r.json()["issue"]
    assert any(i["severity"] == "error" and i.get("expression") == ["Patient.gender"]
               for i in issues), issues
    r = client.post("/fhir/Patient", json=patient(gender="x"))
    assert r.status_code == 422
    assert client.get("/fhir/Patient").json()["entry"] == []


def _errors_at(outcome: dict[str, Any], where: str) -> list[str]:
    return [i["diagnostics"] for i in outcome["issue"]
            if i["severity"] == "error" and i.get("expression") == [where]]


@pytest.mark.parametrize(("bad", "good", "where"), [
    (encounter("Patient/p1", status="bogus"), encounter("Patient/p1", status="finished"),
     "Encounter.status"),
    (task("Patient/p1", "Encounter/e1", status="bogus"), task("Patient/p1", "Encounter/e1"),
     "Task.status"),
    ({"resourceType": "CarePlan", "status": "active", "intent": "plan",
      "subject": {"reference": "Patient/p1"}, "addresses": [{"reference": "#c1"}],
      "contained": [_condition(_coded(SNOMED, "55561003"))]},
     {"resourceType": "CarePlan", "status": "active", "intent": "plan",
      "subject": {"reference": "Patient/p1"}, "addresses": [{"reference": "#c1"}],
      "contained": [_condition(_coded(CLINICAL, "active"))]},
     "CarePlan.contained[0].clinicalStatus.coding[0]"),
])
def test_validate_and_create_refuse_a_code_outside_the_valueset(
        client: TestClient, bad: dict[str, Any], good: dict[str, Any], where: str) -> None:
    rtype = bad["resourceType"]
    r = client.post(f"/fhir/{rtype}/$validate", json=bad)
    assert r.status_code == 200, r.text
    assert _errors_at(r.json(), where), r.text
    r = client.post(f"/fhir/{rtype}", json=bad)
    assert r.status_code == 422, r.text
    assert _errors_at(r.json(), where), r.text
    assert client.get(f"/fhir/{rtype}").json()["entry"] == []
    # the control: the same resource with a code of the ValueSet is valid and stored
    r = client.post(f"/fhir/{rtype}/$validate", json=good)
    assert not [i for i in r.json()["issue"] if i["severity"] == "error"], r.text
    r = client.post(f"/fhir/{rtype}", json=good)
    assert r.status_code == 201, r.text
    assert len(client.get(f"/fhir/{rtype}").json()["entry"]) == 1


@pytest.fixture
def story_hub(settings: Settings, database: Database) -> Iterator[dict[str, TestClient]]:
    register_story_organizations(database)
    with other_client(settings, database, "jaeren-dps") as dps, \
            other_client(settings, database, "time-kommune") as time:
        yield {"jaeren-dps": dps, "time-kommune": time}


def _message(name: str) -> dict[str, Any]:
    (path,) = (SHARED / "examples").glob(f"{name}.json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _entry(message: dict[str, Any], rtype: str) -> tuple[int, dict[str, Any]]:
    return next((i, e["resource"]) for i, e in enumerate(message["entry"])
                if e["resource"]["resourceType"] == rtype)


def _bad_status(rtype: str) -> Any:
    def change(message: dict[str, Any]) -> str:
        index, resource = _entry(message, rtype)
        resource["status"] = "bogus"
        return f"Bundle.entry[{index}].resource.status"
    return change


def _contained_condition(code: tuple[str, str]) -> Any:
    def change(message: dict[str, Any]) -> str:
        index, plan = _entry(message, "CarePlan")
        plan["contained"] = [_condition(_coded(*code))]
        plan["addresses"] = [{"reference": "#c1"}]
        return f"Bundle.entry[{index}].resource.contained[0].clinicalStatus.coding[0]"
    return change


@pytest.mark.parametrize(("name", "change", "stored"), [
    ("03-admission-notice", _bad_status("Encounter"), "Encounter"),
    ("07-self-admission-request", _bad_status("Task"), "Task"),
    ("02-care-plan-shared", _contained_condition((SNOMED, "55561003")), "CarePlan"),
])
def test_process_message_refuses_a_code_outside_the_valueset(
        story_hub: dict[str, TestClient], name: str, change: Any, stored: str) -> None:
    message = _message(name)
    bad = copy.deepcopy(message)
    where = change(bad)
    sender = message["entry"][0]["resource"]["sender"]["reference"].split("/")[1]
    client = story_hub[sender]
    r = client.post("/fhir/$process-message", json=bad)
    assert r.status_code == 422, r.text
    found = [i for i in r.json()["issue"] if i["severity"] == "error"]
    assert any(where in (i.get("expression") or [""])[0] or where in i["diagnostics"]
               for i in found), (where, found)
    assert client.get(f"/fhir/{stored}").json()["entry"] == []
    assert client.get("/fhir/Patient").json()["entry"] == []


def test_process_message_keeps_a_contained_condition_with_a_valid_status(
        story_hub: dict[str, TestClient]) -> None:
    message = _message("02-care-plan-shared")
    _contained_condition((CLINICAL, "active"))(message)
    client = story_hub["jaeren-dps"]
    assert message["entry"][0]["resource"]["sender"]["reference"] == "Organization/jaeren-dps"
    r = client.post("/fhir/$process-message", json=message)
    assert r.status_code == 200, r.text
    (plan,) = [e["resource"] for e in client.get("/fhir/CarePlan").json()["entry"]]
    assert plan["contained"][0]["clinicalStatus"] == _coded(CLINICAL, "active")

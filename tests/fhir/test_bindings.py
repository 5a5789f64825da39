"""Required bindings of the base R4 specification are checked in the one validation place,
with the codes the FHIR models carry from the specification's ValueSets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.fhir.validation import validate_message, validate_resource
from tests.conftest import SHARED
from tests.factories import patient

R4_EXAMPLES = sorted((SHARED / "fhir-r4-examples").glob("*/*.json"))
MESSAGES = sorted((SHARED / "examples").glob("*.json"))


def _codes(issues: list) -> list[str]:  # type: ignore[type-arg]
    return [i.expression for i in issues if i.code == "code-invalid"]


@pytest.mark.parametrize("path", R4_EXAMPLES, ids=lambda p: p.name)
def test_every_official_r4_example_keeps_its_bindings(path: Path) -> None:
    resource = json.loads(path.read_text(encoding="utf-8"))
    assert _codes(validate_resource(resource)) == []


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.name)
def test_the_shared_example_messages_keep_their_bindings(path: Path) -> None:
    assert _codes(validate_message(json.loads(path.read_text(encoding="utf-8")))) == []


@pytest.mark.parametrize(("resource", "where"), [
    ({"resourceType": "Patient", "gender": "x"}, "Patient.gender"),
    (patient(address=[{"use": "holiday", "city": "Bryne"}]), "Patient.address[0].use"),
    ({"resourceType": "Patient", "contact": [{"gender": "m"}]}, "Patient.contact[0].gender"),
    ({"resourceType": "Task", "status": "requested", "intent": "wish"}, "Task.intent"),
    ({"resourceType": "Consent", "status": "maybe"}, "Consent.status"),
    ({"resourceType": "Appointment", "status": "booked",
      "participant": [{"status": "sure"}]}, "Appointment.participant[0].status"),
    ({"resourceType": "Bundle", "type": "message", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "x"}}]}, "Patient.gender"),
])
def test_a_code_outside_a_required_valueset_is_invalid(resource: dict, where: str) -> None:  # type: ignore[type-arg]
    issues = validate_resource(resource)
    assert where in _codes(issues)
    text = next(i.diagnostics for i in issues if i.expression == where)
    assert "ValueSet" in text


def test_validate_and_create_refuse_a_bad_gender(client: TestClient) -> None:
    r = client.post("/fhir/Patient/$validate", json={"resourceType": "Patient", "gender": "x"})
    assert r.status_code == 200
    issues = r.json()["issue"]
    assert any(i["severity"] == "error" and i.get("expression") == ["Patient.gender"]
               for i in issues), issues
    r = client.post("/fhir/Patient", json=patient(gender="x"))
    assert r.status_code == 422
    assert client.get("/fhir/Patient").json()["entry"] == []

"""A resource breaking R4's JSON rules (null, empty, a primitive of the wrong JSON type) is a
422 naming the element, over REST and in a transaction, stores nothing and is audited; the
lax models once let such values through and the store kept them verbatim."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.db.engine import Database
from tests.audit.trail import mark, since
from tests.factories import patient

NUMBER = "13116900216"


def _patients(client: TestClient) -> list[dict[str, Any]]:
    return [e["resource"] for e in client.get("/fhir/Patient").json().get("entry", [])]


def _diagnostics(r: Any, status: int) -> str:
    assert r.status_code == status, r.text[:500]
    assert r.json()["resourceType"] == "OperationOutcome"
    return " ".join(i["diagnostics"] for i in r.json()["issue"])


@pytest.mark.parametrize(("key", "value", "words"), [
    ("birthDate", None, "Patient.birthDate: is null"),
    ("birthDate", 19691113, "Patient.birthDate: is a JSON number"),
    ("active", "true", "Patient.active: is a JSON string"),
    ("name", [], "Patient.name: is an empty array"),
    ("multipleBirthInteger", True, "Patient.multipleBirthInteger: is a JSON boolean"),
])
def test_a_create_breaking_r4_json_is_422_audited_and_stores_nothing(
        client: TestClient, database: Database, key: str, value: Any, words: str) -> None:
    before = mark(database)
    text = _diagnostics(client.post("/fhir/Patient", json={**patient(NUMBER), key: value}), 422)
    assert words in text
    assert [r.outcome for r in since(database, before)] == ["4"]
    assert _patients(client) == []
    r = client.post("/fhir/Patient", json=patient(NUMBER))  # control
    assert r.status_code == 201, r.text


def test_a_transaction_entry_breaking_r4_json_is_refused_and_stores_nothing(
        client: TestClient) -> None:
    def bundle(birth: Any) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:6d1f1a2e-0000-4000-8000-000000000001",
             "resource": {**patient(NUMBER), "birthDate": birth},
             "request": {"method": "POST", "url": "Patient"}}]}

    r = client.post("/fhir", json=bundle(None))
    assert 400 <= r.status_code < 500, r.text
    assert "birthDate" in r.text
    assert _patients(client) == []
    r = client.post("/fhir", json=bundle("1969-11-13"))  # control
    assert r.status_code == 200, r.text
    assert len(_patients(client)) == 1


def test_a_patch_making_a_value_null_is_422_and_changes_nothing(client: TestClient) -> None:
    made = client.post("/fhir/Patient", json=patient(NUMBER)).json()
    patch = {"Content-Type": "application/json-patch+json"}

    def replace(value: Any) -> Any:
        return client.patch(f"/fhir/Patient/{made['id']}", headers=patch,
                            json=[{"op": "replace", "path": "/birthDate", "value": value}])

    assert "Patient.birthDate: is null" in _diagnostics(replace(None), 422)
    assert client.get(f"/fhir/Patient/{made['id']}").json()["meta"]["versionId"] == "1"
    assert replace("1969-11-14").status_code == 200  # control

"""Bad input gets a clear OperationOutcome naming the problem, and nothing is stored."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hub.config import Settings
from tests.factories import patient


def _outcome(r, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["diagnostics"]
    assert "Traceback" not in r.text
    return body


def _nothing_stored(client: TestClient, rtype: str = "Patient") -> None:
    assert client.get(f"/fhir/{rtype}").json()["entry"] == []


def test_unparsable_json_is_400(client: TestClient) -> None:
    body = _outcome(client.post("/fhir/Patient", content=b'{"resourceType": "Patient",'), 400)
    assert "not valid JSON" in body["issue"][0]["diagnostics"]
    _nothing_stored(client)


def test_json_that_is_not_an_object_is_400(client: TestClient) -> None:
    _outcome(client.post("/fhir/Patient", content=b"[1, 2]"), 400)
    _outcome(client.post("/fhir/Patient", content=b'{"name": []}'), 400)  # no resourceType


def test_unknown_type_is_404(client: TestClient) -> None:
    _outcome(client.get("/fhir/Spaceship"), 404)
    _outcome(client.post("/fhir/Spaceship", json={"resourceType": "Spaceship"}), 404)
    # a real FHIR type the hub does not serve is also 404
    _outcome(client.get("/fhir/Observation"), 404)


def test_wrong_type_in_body_is_400(client: TestClient) -> None:
    body = _outcome(client.post("/fhir/Patient", json={"resourceType": "Encounter"}), 400)
    assert body["issue"][0]["expression"] == ["resourceType"]
    _nothing_stored(client)


@pytest.mark.parametrize(("mutate", "where"), [
    (lambda p: p | {"favouriteColour": "blue"}, "Patient.favouriteColour"),
    (lambda p: p | {"birthDate": "1969-13-45"}, "Patient.birthDate"),
    (lambda p: p | {"name": [{"given": "Kari"}]}, "Patient.name[0].given"),
    (lambda p: p | {"identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1",
                                    "value": "13116900217"}]}, "Patient.identifier[0].value"),
    (lambda p: p | {"identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.2",
                                    "value": "13116900216"}]}, "Patient.identifier[0].value"),
])
def test_invalid_resource_is_422_naming_the_element(client: TestClient, mutate, where) -> None:  # type: ignore[no-untyped-def]
    body = _outcome(client.post("/fhir/Patient", json=mutate(patient())), 422)
    assert where in [e for i in body["issue"] for e in i.get("expression", [])]
    _nothing_stored(client)


def test_invalid_update_keeps_the_old_version(client: TestClient) -> None:
    created = client.post("/fhir/Patient", json=patient()).json()
    url = f"/fhir/Patient/{created['id']}"
    _outcome(client.put(url, json={**created, "gender": 7}), 422)
    assert client.get(url).json() == created


def test_wrong_media_type_is_415(client: TestClient) -> None:
    r = client.post("/fhir/Patient", content=b"<Patient/>",
                    headers={"Content-Type": "application/fhir+xml"})
    _outcome(r, 415)
    _nothing_stored(client)


def test_deleted_is_410(client: TestClient) -> None:
    created = client.post("/fhir/Patient", json=patient()).json()
    client.delete(f"/fhir/Patient/{created['id']}")
    _outcome(client.get(f"/fhir/Patient/{created['id']}"), 410)


def test_unknown_id_is_404(client: TestClient) -> None:
    _outcome(client.get("/fhir/Patient/nobody"), 404)


def test_read_only_type_cannot_be_created(client: TestClient) -> None:
    _outcome(client.post("/fhir/Provenance", json={"resourceType": "Provenance"}), 405)
    # The audit trail answers clients 403 whatever they ask (tests/audit/test_search.py).
    _outcome(client.post("/fhir/AuditEvent", json={"resourceType": "AuditEvent"}), 403)


@pytest.mark.parametrize(("method", "url"), [
    ("POST", "/fhir/Bundle"), ("POST", "/fhir/Provenance"), ("PUT", "/fhir/Bundle/x"),
    ("PUT", "/fhir/Provenance?_id=x"), ("PATCH", "/fhir/Provenance/x"),
    ("DELETE", "/fhir/Bundle/x")])
def test_a_write_to_a_read_only_type_is_405_with_allow(client: TestClient, method: str,
                                                         url: str) -> None:
    """RFC 9110 15.5.6: a 405 names the methods the address serves; they do serve them."""
    rtype = url.split("/")[2].split("?")[0]
    r = client.request(method, url, json={"resourceType": rtype, "id": "x"})
    _outcome(r, 405)
    assert r.headers["allow"] == "GET"
    assert client.get(f"/fhir/{rtype}").status_code == 200


def test_a_read_only_type_in_a_transaction_is_405_without_allow(client: TestClient) -> None:
    """The entry's 405 is the transaction's answer, but POST /fhir is no address to GET."""
    r = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Provenance"},
         "request": {"method": "POST", "url": "Provenance"}}]})
    assert "Bundle.entry[0]" in _outcome(r, 405)["issue"][0]["diagnostics"]
    assert "allow" not in r.headers


def test_bad_search_value_is_400(client: TestClient) -> None:
    _outcome(client.get("/fhir/Encounter", params={"date": "yesterday"}), 400)
    _outcome(client.get("/fhir/Patient", params={"_count": "many"}), 400)


def test_too_large_is_413(settings: Settings, bearer: str) -> None:
    from hub.app import create_app

    small = settings.model_copy(update={"max_body_bytes": 2000})
    with TestClient(create_app(small)) as client:
        client.headers["Content-Type"] = "application/fhir+json"
        client.headers["Authorization"] = f"Bearer {bearer}"
        big = patient(text={"status": "generated", "div": "<div>" + "x" * 5000 + "</div>"})
        _outcome(client.post("/fhir/Patient", json=big), 413)
        # also when the client does not declare the length (chunked upload)
        chunks = iter([b'{"resourceType":"Patient","name":[{"text":"', b"y" * 3000, b'"}]}'])
        _outcome(client.post("/fhir/Patient", content=chunks), 413)
        _nothing_stored(client)


def test_default_limit_is_5_mb() -> None:
    assert Settings().max_body_bytes == 5 * 1024 * 1024


def test_unexpected_failure_is_500_outcome_without_trace(client: TestClient, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from hub.store import service

    def boom(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service, "read", boom)
    r = client.get("/fhir/Patient/x")
    body = _outcome(r, 500)
    assert "secret internal detail" not in r.text
    assert "incident" in body["issue"][0]["diagnostics"]

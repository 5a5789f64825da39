"""The REST interactions of CONTRACT section 2, each on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.factories import encounter, patient


def _create(client: TestClient, resource: dict) -> dict:
    r = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_assigns_id_version_and_headers(client: TestClient) -> None:
    sent = patient(id="client-chosen", meta={"versionId": "99", "tag": [{"code": "demo"}]})
    r = client.post("/fhir/Patient", json=sent)
    assert r.status_code == 201
    body = r.json()
    assert body["id"] != "client-chosen"  # ids on create are the hub's
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["tag"] == [{"code": "demo"}]  # other meta survives
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert r.headers["content-type"].startswith("application/fhir+json")


def test_read_returns_what_was_stored(client: TestClient) -> None:
    created = _create(client, patient())
    r = client.get(f"/fhir/Patient/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created
    assert r.headers["etag"] == 'W/"1"'


def test_update_makes_new_version_and_keeps_old(client: TestClient) -> None:
    created = _create(client, patient())
    changed = {**created, "gender": "other"}
    r = client.put(f"/fhir/Patient/{created['id']}", json=changed)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert r.headers["etag"] == 'W/"2"'
    old = client.get(f"/fhir/Patient/{created['id']}/_history/1")
    assert old.status_code == 200
    assert old.json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{created['id']}").json()["gender"] == "other"


def test_if_match_mismatch_gives_412_and_changes_nothing(client: TestClient) -> None:
    created = _create(client, patient())
    url = f"/fhir/Patient/{created['id']}"
    ok = client.put(url, json={**created, "gender": "male"}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = client.put(url, json={**created, "gender": "other"}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert "version 2" in stale.json()["issue"][0]["diagnostics"]
    current = client.get(url).json()
    assert current["gender"] == "male"
    assert current["meta"]["versionId"] == "2"


def test_update_as_create_uses_client_id(client: TestClient) -> None:
    r = client.put("/fhir/Patient/kari-1", json=patient(id="kari-1"))
    assert r.status_code == 201
    assert r.json()["id"] == "kari-1"
    assert client.get("/fhir/Patient/kari-1").status_code == 200


def test_update_id_must_match_url(client: TestClient) -> None:
    r = client.put("/fhir/Patient/a", json=patient(id="b"))
    assert r.status_code == 400
    assert client.get("/fhir/Patient/a").status_code == 404


def test_vread_unknown_version_is_404(client: TestClient) -> None:
    created = _create(client, patient())
    assert client.get(f"/fhir/Patient/{created['id']}/_history/7").status_code == 404


def test_delete_then_read_is_410_and_history_keeps_all(client: TestClient) -> None:
    created = _create(client, patient())
    url = f"/fhir/Patient/{created['id']}"
    assert client.delete(url).status_code == 204
    gone = client.get(url)
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert client.get(f"{url}/_history/2").status_code == 410
    assert client.get(f"{url}/_history/1").status_code == 200
    hist = client.get(f"{url}/_history").json()
    assert [e["request"]["method"] for e in hist["entry"]] == ["DELETE", "POST"]
    search = client.get("/fhir/Patient", params={"_id": created["id"]}).json()
    assert search["entry"] == []


def test_history_is_newest_first_and_pages(client: TestClient) -> None:
    created = _create(client, patient())
    url = f"/fhir/Patient/{created['id']}"
    for gender in ("male", "other", "unknown"):
        client.put(url, json={**created, "gender": gender})
    page = client.get(f"{url}/_history", params={"_count": 2}).json()
    assert page["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in page["entry"]] == ["4", "3"]
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    rest = client.get(nxt.replace("http://testserver", "")).json()
    assert [e["resource"]["meta"]["versionId"] for e in rest["entry"]] == ["2", "1"]
    assert all(link["relation"] != "next" for link in rest["link"])


def test_validate_reports_without_storing(client: TestClient) -> None:
    good = client.post("/fhir/Patient/$validate", json=patient())
    assert good.status_code == 200
    assert good.json()["issue"][0]["severity"] == "information"
    bad = client.post("/fhir/Patient/$validate",
                      json=patient(number="13116900217"))  # wrong check digit
    assert bad.status_code == 200
    issue = bad.json()["issue"][0]
    assert issue["severity"] == "error"
    assert issue["expression"] == ["Patient.identifier[0].value"]
    assert client.get("/fhir/Patient").json()["entry"] == []


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT", "PATCH"])
def test_validate_answers_post_only(client: TestClient, method: str) -> None:
    """Not a read or a delete of a resource with the id "$validate" (404, or a 204 that
    claims a deletion): 405 naming POST, which works."""
    r = client.request(method, "/fhir/Patient/$validate")
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "POST"
    assert r.json()["resourceType"] == "OperationOutcome"
    assert client.post("/fhir/Patient/$validate", json=patient()).status_code == 200
    # control: other ids are still read at the same place
    assert client.get("/fhir/Patient/validate").status_code == 404


@pytest.mark.parametrize("mode", [None, "full", "normal"])
def test_metadata_modes_give_the_capability_statement(client: TestClient,
                                                      mode: str | None) -> None:
    r = client.get("/fhir/metadata", params={"mode": mode} if mode else {})
    assert r.status_code == 200, r.text
    assert r.json()["resourceType"] == "CapabilityStatement"


@pytest.mark.parametrize("mode", ["terminology", "bogus"])
def test_metadata_refuses_a_mode_it_does_not_serve(client: TestClient, mode: str) -> None:
    r = client.get("/fhir/metadata", params={"mode": mode})
    assert r.status_code == 400, r.text
    said = r.json()["issue"][0]["diagnostics"]
    assert r.json()["resourceType"] == "OperationOutcome"
    assert ("no TerminologyCapabilities" if mode == "terminology" else "'bogus'") in said


def test_metadata_lists_what_is_registered(client: TestClient) -> None:
    r = client.get("/fhir/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["fhirVersion"] == "4.0.1"
    by_type = {res["type"]: res for res in cs["rest"][0]["resource"]}
    assert {"Patient", "Task", "Consent", "Bundle", "AuditEvent"} <= set(by_type)
    assert "create" not in {i["code"] for i in by_type["AuditEvent"]["interaction"]}
    assert {"read", "vread", "update", "create", "history-instance", "search-type"} <= {
        i["code"] for i in by_type["Task"]["interaction"]}
    task_params = {p["name"] for p in by_type["Task"]["searchParam"]}
    assert {"_id", "_lastUpdated", "patient", "subject", "identifier", "status", "code",
            "focus"} <= task_params


def test_encounter_reference_to_patient_is_kept(client: TestClient) -> None:
    pat = _create(client, patient())
    enc = _create(client, encounter(f"Patient/{pat['id']}"))
    assert client.get(f"/fhir/Encounter/{enc['id']}").json()["subject"] == {
        "reference": f"Patient/{pat['id']}"}

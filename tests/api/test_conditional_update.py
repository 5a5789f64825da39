"""Conditional update (`PUT /fhir/Type?criteria`, FHIR R4 http.html#cond-update), tried as an
attacking municipality would: matches are only what the caller may see, so the answer never
depends on a record hidden from it, and a match it may see but does not own is refused as a
plain update is. Each attack has its control: the rightful owner can."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from hub.config import Settings
from hub.db.engine import Database
from hub.fhir.identifiers import FNR_SYSTEM
from tests.access_clients import other_client
from tests.audit.trail import mark, since
from tests.factories import encounter, fnr, patient

NUMBER = fnr(date(1985, 3, 9))
BY_NUMBER = {"identifier": f"{FNR_SYSTEM}|{NUMBER}"}
URN = "urn:uuid:0c3e2b7a-4f0e-4a43-9d59-2f4c1b6f8e11"


def _all(c: TestClient, rtype: str = "Patient", **params: str) -> list[dict[str, Any]]:
    r = c.get(f"/fhir/{rtype}", params=params)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json()["entry"] if e["search"]["mode"] == "match"]


def _outcome(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return " ".join(i["diagnostics"] for i in body["issue"])


def test_no_match_creates_one_match_updates_it(client: TestClient) -> None:
    created = client.put("/fhir/Patient", params=BY_NUMBER, json=patient(NUMBER))
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert created.headers["Location"].startswith(f"http://testserver/fhir/Patient/{rid}")
    updated = client.put("/fhir/Patient", params=BY_NUMBER,
                         json=patient(NUMBER, given="Changed"))
    assert updated.status_code == 200, updated.text
    assert updated.json()["id"] == rid
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated.headers["ETag"] == 'W/"2"'
    [stored] = _all(client)
    assert stored["name"][0]["given"] == ["Changed"]


def test_several_matches_are_412_and_change_nothing(client: TestClient) -> None:
    client.post("/fhir/Patient", json=patient(NUMBER))
    client.post("/fhir/Patient", json=patient(fnr(date(1990, 1, 2))))
    said = _outcome(client.put("/fhir/Patient", params={"family": "Nordmann"},
                               json=patient(NUMBER, given="Changed")), 412)
    assert "more than one" in said
    assert {p["meta"]["versionId"] for p in _all(client)} == {"1"}


def test_the_body_id_as_fhir_says(client: TestClient) -> None:
    # no match, an id in the body: created under that id (update as create)
    made = client.put("/fhir/Patient", params=BY_NUMBER, json={**patient(NUMBER), "id": "kari"})
    assert made.status_code == 201, made.text
    assert made.json()["id"] == "kari"
    # one match, the body names another id: 400, nothing changed
    said = _outcome(client.put("/fhir/Patient", params=BY_NUMBER,
                               json={**patient(NUMBER, given="X"), "id": "someone-else"}), 400)
    assert "kari" in said
    # one match, the body names it: updated
    same = client.put("/fhir/Patient", params=BY_NUMBER,
                      json={**patient(NUMBER, given="Y"), "id": "kari"})
    assert same.status_code == 200, same.text
    assert [(p["id"], p["name"][0]["given"]) for p in _all(client)] == [("kari", ["Y"])]
    assert client.get("/fhir/Patient/someone-else").status_code == 404


def test_if_match_is_honoured(client: TestClient) -> None:
    # no match: If-Match cannot hold, and nothing is created
    _outcome(client.put("/fhir/Patient", params=BY_NUMBER, json=patient(NUMBER),
                        headers={"If-Match": 'W/"1"'}), 412)
    assert _all(client) == []
    client.put("/fhir/Patient", params=BY_NUMBER, json=patient(NUMBER))
    stale = client.put("/fhir/Patient", params=BY_NUMBER, json=patient(NUMBER, given="Old"),
                       headers={"If-Match": 'W/"7"'})
    _outcome(stale, 412)
    fresh = client.put("/fhir/Patient", params=BY_NUMBER, json=patient(NUMBER, given="New"),
                       headers={"If-Match": 'W/"1"'})
    assert fresh.status_code == 200, fresh.text
    assert [p["name"][0]["given"] for p in _all(client)] == [["New"]]


def test_bad_criteria_are_400_and_keep_nothing(client: TestClient) -> None:
    said = _outcome(client.put("/fhir/Patient", json=patient(NUMBER)), 400)
    assert "criteria" in said
    said = _outcome(client.put("/fhir/Patient", params={"shoe-size": "42"},
                               json=patient(NUMBER)), 400)
    assert "shoe-size" in said
    _outcome(client.put("/fhir/Patient", params=BY_NUMBER, json={"resourceType": "Patient",
                                                                  "gender": "nope"}), 422)
    _outcome(client.put("/fhir/Patient", params=BY_NUMBER,
                        json={"resourceType": "Encounter"}), 400)
    assert _all(client) == []


def test_it_is_audited_as_an_update(client: TestClient, database: Database) -> None:
    before = mark(database)
    rid = client.put("/fhir/Patient", params=BY_NUMBER, json=patient(NUMBER)).json()["id"]
    records = [r for r in since(database, before) if r.subtype == "update"]
    assert records
    assert records[0].outcome == "0"
    assert f"Patient/{rid}" in records[0].entity_refs()


@pytest.fixture
def dps_and_klepp(settings: Settings, database: Database) -> Iterator[tuple[TestClient,
                                                                            TestClient]]:
    """The centre, which owns the patient's record, and a municipality named in nothing."""
    with other_client(settings, database, "jaeren-dps") as dps, \
            other_client(settings, database, "klepp-kommune") as klepp:
        yield dps, klepp


def test_a_hidden_match_is_the_person_and_is_not_changed(
        dps_and_klepp: tuple[TestClient, TestClient]) -> None:
    """Klepp's conditional update by the number of the centre's patient, a Patient Klepp
    cannot see, would make a second Patient for the person: the hub keeps one per
    fødselsnummer (CONTRACT section 3), so it is refused (422, naming the Patient to refer
    to) and nothing is written; the centre's Patient is unchanged. Controls: an unknown
    number creates (201), and the centre updates its own Patient by the same criteria."""
    dps, klepp = dps_and_klepp
    theirs = dps.post("/fhir/Patient", json=patient(NUMBER)).json()
    unknown = fnr(date(1990, 1, 2))
    blind = klepp.put("/fhir/Patient", params={"identifier": f"{FNR_SYSTEM}|{unknown}"},
                      json=patient(unknown))
    assert blind.status_code == 201, blind.text
    probe = klepp.put("/fhir/Patient", params=BY_NUMBER, json=patient(NUMBER, given="Probe"))
    said = _outcome(probe, 422)
    assert f"Patient/{theirs['id']}" in said
    assert "one Patient per" in said
    assert probe.json()["issue"][0]["code"] == "duplicate"
    # the centre's record is unchanged, and there is still one Patient with the number
    assert dps.get(f"/fhir/Patient/{theirs['id']}").json()["meta"]["versionId"] == "1"
    assert [p["id"] for p in _all(dps, **BY_NUMBER)] == [theirs["id"]]
    assert [p["identifier"][0]["value"] for p in _all(klepp)] == [unknown]
    # control: the centre matches its own Patient
    kaja = dps.put("/fhir/Patient", params=BY_NUMBER,
                   json=patient(NUMBER, given="Kaja", gender="male"))
    assert kaja.status_code == 200, kaja.text
    assert (kaja.json()["id"], kaja.json()["gender"]) == (theirs["id"], "male")


def test_a_visible_match_of_another_organisation_is_403(
        dps_and_klepp: tuple[TestClient, TestClient]) -> None:
    """Klepp holds a record about the centre's Patient, so it may read it, but not change
    it: the conditional update is refused as a plain update is. Control: the centre can."""
    dps, klepp = dps_and_klepp
    theirs = dps.post("/fhir/Patient", json=patient(NUMBER)).json()
    assert klepp.post("/fhir/Encounter",
                      json=encounter(f"Patient/{theirs['id']}")).status_code == 201
    assert [p["id"] for p in _all(klepp, **BY_NUMBER)] == [theirs["id"]]
    said = _outcome(klepp.put("/fhir/Patient", params=BY_NUMBER,
                              json=patient(NUMBER, given="Hijack")), 403)
    assert "another organisation" in said
    assert dps.get(f"/fhir/Patient/{theirs['id']}").json()["name"][0]["given"] == ["Kari"]
    ok = dps.put("/fhir/Patient", params=BY_NUMBER, json=patient(NUMBER, given="Kaja"))
    assert ok.status_code == 200, ok.text
    assert ok.json()["id"] == theirs["id"]


def test_concurrent_twins_make_one_resource(live_url: str, bearer: str) -> None:
    """Eight clients send the same conditional update at once over real HTTP: one creates,
    the others update that one; one Patient is stored, with a version from each."""

    def put(i: int) -> tuple[int, str]:
        with httpx.Client(base_url=live_url, timeout=60) as http:
            r = http.put("/fhir/Patient", params=BY_NUMBER,
                         json=patient(NUMBER, given=f"Try{i}"),
                         headers={"Authorization": f"Bearer {bearer}",
                                  "Content-Type": "application/fhir+json"})
            return r.status_code, r.json().get("id", r.text)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(put, range(8)))
    assert sorted(s for s, _ in results) == [200] * 7 + [201], results
    assert len({rid for _, rid in results}) == 1
    with httpx.Client(base_url=live_url, headers={"Authorization": f"Bearer {bearer}"}) as http:
        found = http.get("/fhir/Patient", params=BY_NUMBER).json()
        assert len(found["entry"]) == 1
        assert found["entry"][0]["resource"]["meta"]["versionId"] == "8"


def test_declared_in_the_capability_statement_and_openapi(client: TestClient) -> None:
    meta = client.get("/fhir/metadata").json()
    kinds = {r["type"]: r for r in meta["rest"][0]["resource"]}
    assert kinds["Patient"]["conditionalUpdate"] is True
    assert kinds["Bundle"]["conditionalUpdate"] is False
    put = client.get("/openapi.json").json()["paths"]["/fhir/{resource_type}"]["put"]
    assert {"200", "201", "400", "403", "412", "422"} <= set(put["responses"])
    assert put["requestBody"]["required"] is True


def test_a_transaction_entry_decides_as_the_rest_call(
        dps_and_klepp: tuple[TestClient, TestClient]) -> None:
    """`PUT Patient?identifier=...` inside a transaction: a hidden match of the centre's
    patient is still the person, so Klepp's second Patient is refused (422, nothing of the
    Bundle kept), as by REST; a visible match of the centre's is refused (403, nothing
    kept). Control: the centre's own entry updates its Patient."""
    dps, klepp = dps_and_klepp
    theirs = dps.post("/fhir/Patient", json=patient(NUMBER)).json()

    def put_in_transaction(c: TestClient, given: str) -> httpx.Response:
        return c.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": URN, "resource": patient(NUMBER, given=given),
             "request": {"method": "PUT", "url": f"Patient?identifier={FNR_SYSTEM}|{NUMBER}"}},
            {"resource": {"resourceType": "Flag", "status": "active", "code": {"text": given},
                          "subject": {"reference": URN}},
             "request": {"method": "POST", "url": "Flag"}}]})

    said = _outcome(put_in_transaction(klepp, "Probe"), 422)
    assert f"Patient/{theirs['id']}" in said
    assert _all(klepp, "Flag") == []
    assert _all(klepp) == []
    assert klepp.post("/fhir/Encounter",
                      json=encounter(f"Patient/{theirs['id']}")).status_code == 201
    _outcome(put_in_transaction(klepp, "Hijack"), 403)
    assert dps.get(f"/fhir/Patient/{theirs['id']}").json()["name"][0]["given"] == ["Kari"]
    assert _all(klepp, "Flag") == []
    ok = put_in_transaction(dps, "Kaja")
    assert ok.status_code == 200, ok.text
    assert dps.get(f"/fhir/Patient/{theirs['id']}").json()["name"][0]["given"] == ["Kaja"]

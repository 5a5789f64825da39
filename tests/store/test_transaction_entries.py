"""Transaction and batch entries as FHIR R4 http.html says them: conditional references
(3.1.0.11.2), the PUT body's id, and a failed read (all or nothing in a transaction, per
entry in a batch). A refused transaction leaves no resource, no version and only its failure
record in the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.config import Settings
from hub.db.engine import Database
from tests.access_clients import other_client
from tests.audit.trail import mark, since
from tests.factories import fnr, patient
from tests.store.test_transaction import (
    P_URN,
    _bundle,
    _id_from_location,
    _issues_text,
    _matches,
    _post,
    _send,
    _status,
)


def _flag(subject: str) -> dict[str, Any]:
    return {"resourceType": "Flag", "status": "active", "code": {"text": "probe"},
            "subject": {"reference": subject}}


def _new_patient(client: TestClient, family: str, start: int = 2) -> str:
    r = client.post("/fhir/Patient", json=patient(fnr(start=start), family=family))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _only_a_failure_recorded(database: Database, after: int, subtype: str, status: int) -> None:
    """The refused request left one audit record, its failure, and nothing else."""
    records = since(database, after)
    assert [(r.subtype, r.outcome) for r in records] == [(subtype, "4")], [
        (r.subtype, r.outcome) for r in records]
    assert f"POST /fhir: {status}" in [e.get("description") for e in records[0].event["entity"]]


# Conditional references (finding 2) --------------------------------------------------------

@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_conditional_reference_with_one_match_is_rewritten(client: TestClient,
                                                             kind: str) -> None:
    pid = _new_patient(client, "Condref")
    r = _send(client, _bundle(kind, _post(_flag("Patient?family=Condref"))))
    assert r.status_code == 200, r.text
    item = r.json()["entry"][0]
    assert _status(item) == 201, item
    flag_id = _id_from_location(item, "Flag")
    assert client.get(f"/fhir/Flag/{flag_id}").json()["subject"] == {
        "reference": f"Patient/{pid}"}
    assert [f["id"] for f in _matches(client, "Flag", f"subject=Patient/{pid}")] == [flag_id]


@pytest.mark.parametrize("matches", [0, 2])
def test_a_conditional_reference_without_exactly_one_match_fails_the_transaction(
        client: TestClient, database: Database, matches: int) -> None:
    for n in range(matches):
        _new_patient(client, "Twice", start=2 + 10 * n)
    before = {p["id"]: p["meta"]["versionId"] for p in _matches(client, "Patient")}
    m = mark(database)
    r = _send(client, _bundle(
        "transaction",
        _post(patient(fnr(start=40), family="Other"), P_URN),
        _post(_flag("Patient?family=Twice"))))
    assert r.status_code == 412, r.text
    _only_a_failure_recorded(database, m, "transaction", 412)
    text = _issues_text(r.json())
    assert "Bundle.entry[1].resource.subject.reference" in text, text
    assert "Patient?family=Twice" in text, text
    assert ("matches no Patient" if matches == 0 else "more than one Patient") in text, text
    # nothing kept: no Flag, no new Patient, no new version, only the failure in the trail
    assert _matches(client, "Flag") == []
    assert {p["id"]: p["meta"]["versionId"] for p in _matches(client, "Patient")} == before


def test_a_conditional_reference_counts_only_what_the_caller_may_see(
        client: TestClient, settings: Settings, database: Database) -> None:
    with other_client(settings, database, "other-org") as other:
        hidden = other.post("/fhir/Patient", json=patient(fnr(start=60), family="Hidden"))
        assert hidden.status_code == 201, hidden.text
    # the other organisation's Patient is no match for the caller...
    r = _send(client, _bundle("transaction", _post(_flag("Patient?family=Hidden"))))
    assert r.status_code == 412, r.text
    assert "matches no Patient you may see" in _issues_text(r.json())
    # ...nor a second match beside the caller's own one, which is the one referred to
    own = _new_patient(client, "Hidden")
    r = _send(client, _bundle("transaction", _post(_flag("Patient?family=Hidden"))))
    assert r.status_code == 200, r.text
    flag_id = _id_from_location(r.json()["entry"][0], "Flag")
    assert client.get(f"/fhir/Flag/{flag_id}").json()["subject"]["reference"] == (
        f"Patient/{own}")


@pytest.mark.parametrize("reference", ["Patient?shoe-size=44", "Patient?birthdate=notadate",
                                       "Patient?", "Starship?name=x"])
def test_a_conditional_reference_the_search_refuses_is_400(client: TestClient,
                                                           reference: str) -> None:
    _new_patient(client, "Condref")
    r = _send(client, _bundle("transaction", _post(_flag(reference))))
    assert r.status_code == 400, r.text
    text = _issues_text(r.json())
    assert "Bundle.entry[0].resource.subject.reference" in text, text
    assert reference in text, text
    assert _matches(client, "Flag") == []


def test_in_a_batch_a_conditional_reference_fails_only_its_entry(client: TestClient) -> None:
    pid = _new_patient(client, "Condref")
    r = _send(client, _bundle("batch", _post(_flag("Patient?family=Nobody")),
                              _post(_flag("Patient?family=Condref"))))
    assert r.status_code == 200, r.text
    bad, good = r.json()["entry"]
    assert _status(bad) == 412, bad
    assert "Bundle.entry[0].resource.subject.reference" in _issues_text(
        bad["response"]["outcome"])
    assert _status(good) == 201, good
    assert [f["subject"]["reference"] for f in _matches(client, "Flag")] == [f"Patient/{pid}"]


def test_outside_a_bundle_a_conditional_reference_is_refused(client: TestClient) -> None:
    pid = _new_patient(client, "Condref")
    r = client.post("/fhir/Flag", json=_flag("Patient?family=Condref"))
    assert r.status_code == 422, r.text
    assert "Flag.subject.reference" in _issues_text(r.json())
    assert _matches(client, "Flag") == []
    # control: the literal reference is stored
    r = client.post("/fhir/Flag", json=_flag(f"Patient/{pid}"))
    assert r.status_code == 201, r.text
    r = client.put(f"/fhir/Flag/{r.json()['id']}",
                   json={**r.json(), "subject": {"reference": "Patient?family=Condref"}})
    assert r.status_code == 422, r.text
    assert [f["subject"]["reference"] for f in _matches(client, "Flag")] == [f"Patient/{pid}"]


# The PUT body's id (finding 8) -------------------------------------------------------------

def _put(rid: str, body_id: str | None) -> dict[str, Any]:
    resource = patient(fnr(start=30), family="Putter")
    if body_id is not None:
        resource["id"] = body_id
    return {"resource": resource, "request": {"method": "PUT", "url": f"Patient/{rid}"}}


@pytest.mark.parametrize("body_id", ["put-b", None])
def test_a_transaction_put_whose_body_id_is_not_the_urls_is_400(
        client: TestClient, database: Database, body_id: str | None) -> None:
    m = mark(database)
    r = _send(client, _bundle("transaction", _post(patient(fnr(start=40)), P_URN),
                              _put("put-a", body_id)))
    assert r.status_code == 400, r.text
    _only_a_failure_recorded(database, m, "transaction", 400)
    text = _issues_text(r.json())
    assert "Bundle.entry[1]" in text, text
    assert "must equal the id in the URL (put-a)" in text, text
    for rid in ("put-a", "put-b"):
        assert client.get(f"/fhir/Patient/{rid}").status_code == 404
    assert _matches(client, "Patient") == []
    # the REST PUT says the same
    rest = client.put("/fhir/Patient/put-a", json=_put("put-a", body_id)["resource"])
    assert rest.status_code == 400
    assert "must equal the id in the URL (put-a)" in _issues_text(rest.json())
    # control: the same id in both places is written
    r = _send(client, _bundle("transaction", _put("put-a", "put-a")))
    assert r.status_code == 200, r.text
    assert client.get("/fhir/Patient/put-a").status_code == 200


def test_a_batch_put_whose_body_id_is_not_the_urls_fails_only_its_entry(
        client: TestClient) -> None:
    r = _send(client, _bundle("batch", _put("put-a", "put-b"),
                              _post(patient(fnr(start=40), family="Kept"))))
    assert r.status_code == 200, r.text
    bad, good = r.json()["entry"]
    assert _status(bad) == 400, bad
    assert "must equal the id in the URL (put-a)" in _issues_text(bad["response"]["outcome"])
    assert _status(good) == 201, good
    assert [p["name"][0]["family"] for p in _matches(client, "Patient")] == ["Kept"]
    assert client.get("/fhir/Patient/put-a").status_code == 404
    assert client.get("/fhir/Patient/put-b").status_code == 404


# A failed read (finding 9) -----------------------------------------------------------------

def test_a_failed_read_fails_the_whole_transaction(client: TestClient,
                                                   database: Database) -> None:
    m = mark(database)
    r = _send(client, _bundle("transaction", _post(patient(), P_URN),
                              {"request": {"method": "GET", "url": "Patient/no-such-xyz"}}))
    assert r.status_code == 404, r.text
    _only_a_failure_recorded(database, m, "transaction", 404)
    text = _issues_text(r.json())
    assert "Bundle.entry[1]" in text, text
    assert "Patient/no-such-xyz" in text, text
    assert _matches(client, "Patient") == []
    # control: a read that succeeds runs after the writes and sees them
    r = _send(client, _bundle("transaction", _post(patient(), P_URN),
                              {"request": {"method": "GET", "url": "Patient?family=Nordmann"}}))
    assert r.status_code == 200, r.text
    written, found = r.json()["entry"]
    pid = _id_from_location(written, "Patient")
    assert [e["resource"]["id"] for e in found["resource"]["entry"]] == [pid]


def test_a_failed_read_in_a_batch_is_reported_in_its_entry(client: TestClient) -> None:
    r = _send(client, _bundle("batch", _post(patient()),
                              {"request": {"method": "GET", "url": "Patient/no-such-xyz"}}))
    assert r.status_code == 200, r.text
    written, failed = r.json()["entry"]
    assert _status(written) == 201
    assert _status(failed) == 404
    assert "Patient/no-such-xyz" in _issues_text(failed["response"]["outcome"])
    assert [p["id"] for p in _matches(client, "Patient")] == [
        _id_from_location(written, "Patient")]


# Two entries under one fullUrl (findings C 9, FHIR bdl-7) ----------------------------------

@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_two_entries_under_one_full_url_are_refused_and_nothing_is_kept(
        client: TestClient, kind: str) -> None:
    pid = _new_patient(client, "Twice")
    one = "urn:uuid:3f1c1d6e-8a34-4c7b-9b9e-1f0a3c5d7e09"
    r = _send(client, _bundle(kind, _post(_flag(f"Patient/{pid}"), one),
                              _post(_flag(f"Patient/{pid}"), one)))
    assert r.status_code == 422, r.text
    text = _issues_text(r.json())
    assert "Bundle.entry[1].fullUrl" in text
    assert "Bundle.entry[0]" in text
    assert one in text
    assert _matches(client, "Flag") == []
    # control: the same entries under their own fullUrls are both written
    r = _send(client, _bundle(kind, _post(_flag(f"Patient/{pid}"), one),
                              _post(_flag(f"Patient/{pid}"), P_URN)))
    assert r.status_code == 200, r.text
    assert [_status(e) for e in r.json()["entry"]] == [201, 201]
    assert len(_matches(client, "Flag")) == 2

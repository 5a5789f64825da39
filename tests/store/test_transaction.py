"""Transaction and batch Bundles (POST /fhir): all or nothing, ids resolved, entries in order.

The HL7 transaction example (shared/fhir-r4-examples/Bundle/Bundle-bundle-transaction.json) is
read, never edited; variants are derived here.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from hub.fhir import jsonio
from hub.fhir.identifiers import FNR_SYSTEM
from tests.conftest import SHARED, TEST_ORG
from tests.factories import encounter, fnr, patient, practitioner, task

EXAMPLE = SHARED / "fhir-r4-examples" / "Bundle" / "Bundle-bundle-transaction.json"
P_URN = "urn:uuid:3f1c1d6e-8a34-4c7b-9b9e-1f0a3c5d7e01"
E_URN = "urn:uuid:3f1c1d6e-8a34-4c7b-9b9e-1f0a3c5d7e02"
T_URN = "urn:uuid:3f1c1d6e-8a34-4c7b-9b9e-1f0a3c5d7e03"
O_URN = "urn:uuid:3f1c1d6e-8a34-4c7b-9b9e-1f0a3c5d7e04"


def _example() -> dict[str, Any]:
    data: dict[str, Any] = jsonio.loads(EXAMPLE.read_bytes())
    return data


def _send(client: TestClient, bundle: dict[str, Any]) -> Response:
    return client.post("/fhir", content=jsonio.dumps_bytes(bundle))


def _status(item: dict[str, Any]) -> int:
    return int(str(item["response"]["status"]).split()[0])


def _matches(client: TestClient, rtype: str, query: str = "") -> list[dict[str, Any]]:
    """Matches of a search, leaving out the caller's own registered Organization."""
    r = client.get(f"/fhir/{rtype}?_count=100{'&' + query if query else ''}")
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])
            if e.get("search", {}).get("mode", "match") == "match"
            and (e["resource"]["resourceType"], e["resource"]["id"]) != ("Organization",
                                                                         TEST_ORG)]


def _id_from_location(item: dict[str, Any], rtype: str) -> str:
    location = item["response"]["location"]
    parts = location.split("/")
    assert parts[-4] == rtype, location
    assert parts[-2] == "_history", location
    return str(parts[-3])


def _post(resource: dict[str, Any], full_url: str | None = None,
          **request: str) -> dict[str, Any]:
    item: dict[str, Any] = {"resource": resource,
                            "request": {"method": "POST", "url": resource["resourceType"],
                                        **request}}
    if full_url:
        item["fullUrl"] = full_url
    return item


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _issues_text(outcome: dict[str, Any]) -> str:
    assert outcome["resourceType"] == "OperationOutcome"
    return " ".join(str(i.get("diagnostics", "")) + " " + " ".join(i.get("expression", []))
                    for i in outcome["issue"])


# (a) ---------------------------------------------------------------------------------------

def test_example_on_fresh_hub_is_rejected_whole(client: TestClient) -> None:
    r = _send(client, _example())
    assert 400 <= r.status_code < 500, r.text
    text = _issues_text(r.json())
    # Either reason is a correct refusal: the $lookup operation entry (400) or the If-Match on
    # Patient/123a, which does not exist on a fresh hub (412).
    if r.status_code == 400:
        assert "$lookup" in text, text
    else:
        assert r.status_code == 412, r.text
        assert "123a" in text, text
    assert _matches(client, "Patient") == []
    for rid in ("123", "123a"):
        assert client.get(f"/fhir/Patient/{rid}").status_code == 404
    assert _matches(client, "Patient", "identifier=http:/example.org/fhir/ids|234234") == []
    assert _matches(client, "Patient", "identifier=http:/example.org/fhir/ids|456456") == []
    # ValueSets are the hub's own read-only conformance resources: the transaction added none
    served = client.get("/fhir/ValueSet", params={"_count": 500}).json()["entry"]
    assert all(e["resource"]["url"].startswith("http://carehub.example/fhir/") for e in served)


def test_example_without_lookup_is_still_rejected_on_a_fresh_hub(client: TestClient) -> None:
    """Without $lookup, the stale If-Match W/"2" on the missing Patient/123a decides: 412."""
    bundle = _example()
    bundle["entry"] = [e for e in bundle["entry"] if "$lookup" not in e["request"]["url"]]
    r = _send(client, bundle)
    assert r.status_code == 412, r.text
    assert "Bundle.entry[4]" in _issues_text(r.json())
    assert _matches(client, "Patient") == []
    assert client.get("/fhir/Patient/123").status_code == 404


# (b) ---------------------------------------------------------------------------------------

def test_example_commits_when_seeded_and_without_lookup(client: TestClient) -> None:
    seed = {"resourceType": "Patient", "id": "123a", "name": [{"family": "Seed"}]}
    assert client.put("/fhir/Patient/123a", content=jsonio.dumps_bytes(seed)).status_code == 201
    seed["gender"] = "female"
    second = client.put("/fhir/Patient/123a", content=jsonio.dumps_bytes(seed))
    assert second.status_code == 200
    assert second.headers["etag"] == 'W/"2"'

    bundle = _example()
    original = copy.deepcopy(bundle["entry"])
    # without the read of Patient/12334, which is not there and so fails the whole
    # transaction (see the next test)
    bundle["entry"] = [e for e in bundle["entry"]
                       if e["request"]["url"] not in ("ValueSet/$lookup", "Patient/12334")]
    assert len(bundle["entry"]) == len(original) - 2
    r = _send(client, bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["resourceType"] == "Bundle"
    assert out["type"] == "transaction-response"
    assert len(out["entry"]) == len(bundle["entry"])

    methods = [e["request"]["method"] for e in bundle["entry"]]
    urls = [e["request"]["url"] for e in bundle["entry"]]
    assert methods == ["POST", "POST", "PUT", "PUT", "PUT", "DELETE", "DELETE", "GET"]
    statuses = [_status(e) for e in out["entry"]]
    # POST, conditional POST (no match), PUT as create, conditional PUT (no match: create),
    # PUT with the right If-Match, two deletes and a search.
    assert statuses == [201, 201, 201, 201, 200, 204, 204, 200], statuses

    # Responses are in request order: each write's location names what that entry asked for.
    assert _id_from_location(out["entry"][2], "Patient") == "123"
    assert out["entry"][4]["response"]["location"].endswith("Patient/123a/_history/3")
    assert out["entry"][4]["response"]["etag"] == 'W/"3"'
    created = _id_from_location(out["entry"][0], "Patient")
    cond_post = _id_from_location(out["entry"][1], "Patient")
    cond_put = _id_from_location(out["entry"][3], "Patient")
    assert len({created, cond_post, cond_put, "123", "123a"}) == 5
    searchset = out["entry"][7]["resource"]
    assert searchset["type"] == "searchset"
    assert urls[7] == "Patient?name=peter"
    # The GET runs after the writes: all five Patients are now Peter James Chalmers.
    assert {e["resource"]["id"] for e in searchset["entry"]} == {
        created, cond_post, cond_put, "123", "123a"}

    # Stored state.
    stored = {p["id"]: p for p in _matches(client, "Patient")}
    assert set(stored) == {created, cond_post, cond_put, "123", "123a"}
    for rid, p in stored.items():
        assert p["name"][0]["family"] == "Chalmers", rid
    assert stored["123a"]["meta"]["versionId"] == "3"
    assert stored["123a"]["gender"] == "male"
    assert stored["123"]["meta"]["versionId"] == "1"
    ids = "http:/example.org/fhir/ids"
    assert [p["id"] for p in _matches(client, "Patient", f"identifier={ids}|234234")] == [
        cond_post]
    assert [p["id"] for p in _matches(client, "Patient", f"identifier={ids}|456456")] == [
        cond_put]
    assert client.get("/fhir/Patient/234").status_code == 404
    # The example has no urn:uuid references inside its resources; see the next test.
    assert "urn:uuid:" not in jsonio.dumps([e.get("resource") for e in original
                                            if e["request"]["url"] != "ValueSet/$lookup"])


def test_example_with_its_read_of_a_missing_patient_is_rejected_whole(
        client: TestClient) -> None:
    """The example's last entry reads Patient/12334, which is not there: the transaction
    fails with that read's 404 and keeps none of its writes."""
    seed = {"resourceType": "Patient", "id": "123a", "name": [{"family": "Seed"}]}
    assert client.put("/fhir/Patient/123a", content=jsonio.dumps_bytes(seed)).status_code == 201
    assert client.put("/fhir/Patient/123a", content=jsonio.dumps_bytes(
        {**seed, "gender": "female"})).status_code == 200
    bundle = _example()
    bundle["entry"] = [e for e in bundle["entry"] if e["request"]["url"] != "ValueSet/$lookup"]
    r = _send(client, bundle)
    assert r.status_code == 404, r.text
    assert "Bundle.entry[8]" in _issues_text(r.json())
    assert [p["id"] for p in _matches(client, "Patient")] == ["123a"]
    kept = client.get("/fhir/Patient/123a").json()
    assert (kept["meta"]["versionId"], kept["name"][0]["family"]) == ("2", "Seed")


def test_urn_uuid_references_resolve_to_assigned_ids(client: TestClient) -> None:
    bundle = _bundle(
        "transaction",
        _post(task(P_URN, E_URN), T_URN),
        _post(encounter(P_URN), E_URN),
        _post(patient(), P_URN),
    )
    r = _send(client, bundle)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    assert [_status(e) for e in out] == [201, 201, 201]
    task_id = _id_from_location(out[0], "Task")
    enc_id = _id_from_location(out[1], "Encounter")
    pat_id = _id_from_location(out[2], "Patient")
    assert [e.get("fullUrl") for e in out] in ([T_URN, E_URN, P_URN], [None, None, None])

    enc = client.get(f"/fhir/Encounter/{enc_id}").json()
    assert enc["subject"]["reference"] == f"Patient/{pat_id}"
    stored_task = client.get(f"/fhir/Task/{task_id}").json()
    assert stored_task["for"]["reference"] == f"Patient/{pat_id}"
    assert stored_task["focus"]["reference"] == f"Encounter/{enc_id}"
    assert client.get(f"/fhir/Patient/{pat_id}").status_code == 200
    # The resolved references are searchable.
    assert [e["id"] for e in _matches(client, "Encounter", f"subject=Patient/{pat_id}")] == [
        enc_id]


# (c) ---------------------------------------------------------------------------------------

def test_invalid_entry_rolls_back_the_whole_transaction(client: TestClient) -> None:
    bad = patient(fnr(start=40), shoeSize=44)
    bundle = _bundle(
        "transaction",
        _post(patient(), P_URN),
        _post(practitioner(), O_URN),
        _post(encounter(P_URN), E_URN),
        _post(bad),
    )
    r = _send(client, bundle)
    assert r.status_code in (400, 422), r.text
    text = _issues_text(r.json())
    assert "Bundle.entry[3]" in text, text
    assert "shoeSize" in text, text
    for rtype in ("Patient", "Practitioner", "Encounter"):
        assert _matches(client, rtype) == [], rtype


# (d) ---------------------------------------------------------------------------------------

def test_stale_if_match_in_transaction_is_412_and_stores_nothing(client: TestClient) -> None:
    created = client.post("/fhir/Patient", content=jsonio.dumps_bytes(patient()))
    assert created.status_code == 201
    current = created.json()
    pid = current["id"]
    current["gender"] = "other"
    assert client.put(f"/fhir/Patient/{pid}",
                      content=jsonio.dumps_bytes(current)).status_code == 200

    stale = {**current, "gender": "male"}
    bundle = _bundle(
        "transaction",
        _post(practitioner(), O_URN),
        _post(patient(fnr(start=40), given="Ola"), P_URN),
        {"resource": stale, "request": {"method": "PUT", "url": f"Patient/{pid}",
                                        "ifMatch": 'W/"1"'}},
        _post(encounter(P_URN), E_URN),
    )
    r = _send(client, bundle)
    assert r.status_code == 412, r.text
    assert "Bundle.entry[2]" in _issues_text(r.json())
    assert _matches(client, "Practitioner") == []
    assert _matches(client, "Encounter") == []
    assert [p["id"] for p in _matches(client, "Patient")] == [pid]
    now = client.get(f"/fhir/Patient/{pid}").json()
    assert now["meta"]["versionId"] == "2"
    assert now["gender"] == "other"


# (e) ---------------------------------------------------------------------------------------

def test_batch_reports_each_entry_and_keeps_the_good_ones(client: TestClient) -> None:
    bundle = _bundle(
        "batch",
        _post(practitioner()),
        _post(patient(shoeSize=44)),
        _post(patient(fnr(start=40), given="Ola")),
    )
    r = _send(client, bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "batch-response"
    assert len(out["entry"]) == 3
    assert [_status(e) for e in out["entry"]][0::2] == [201, 201]
    bad = out["entry"][1]["response"]
    assert 400 <= _status(out["entry"][1]) < 500, bad
    assert "shoeSize" in _issues_text(bad["outcome"])
    org_id = _id_from_location(out["entry"][0], "Practitioner")
    pat_id = _id_from_location(out["entry"][2], "Patient")
    assert [o["id"] for o in _matches(client, "Practitioner")] == [org_id]
    assert [p["id"] for p in _matches(client, "Patient")] == [pat_id]
    assert client.get(f"/fhir/Patient/{pat_id}").json()["name"][0]["given"] == ["Ola"]


# (f) ---------------------------------------------------------------------------------------

def test_reference_to_urn_outside_the_bundle_is_400(client: TestClient) -> None:
    elsewhere = "urn:uuid:00000000-0000-4000-8000-00000000dead"
    bundle = _bundle(
        "transaction",
        _post(patient(), P_URN),
        _post(encounter(elsewhere), E_URN),
    )
    r = _send(client, bundle)
    assert r.status_code == 400, r.text
    text = _issues_text(r.json())
    assert elsewhere in text, text
    assert "Bundle.entry[1]" in text, text
    assert _matches(client, "Patient") == []
    assert _matches(client, "Encounter") == []


# (g) ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["patient-first", "patient-last"])
def test_conditional_create_in_transaction_resolves_to_existing(client: TestClient,
                                                               order: str) -> None:
    number = fnr()
    existing = client.post("/fhir/Patient", content=jsonio.dumps_bytes(patient(number)))
    assert existing.status_code == 201
    eid = existing.json()["id"]

    cond = _post(patient(number, given="Changed"), P_URN,
                 ifNoneExist=f"identifier={FNR_SYSTEM}|{number}")
    enc = _post(encounter(P_URN), E_URN)
    entries = [cond, enc] if order == "patient-first" else [enc, cond]
    r = _send(client, _bundle("transaction", *entries))
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    p_item, e_item = (out[0], out[1]) if order == "patient-first" else (out[1], out[0])
    assert _status(p_item) == 200
    assert _id_from_location(p_item, "Patient") == eid
    assert _status(e_item) == 201
    enc_id = _id_from_location(e_item, "Encounter")

    stored = client.get(f"/fhir/Encounter/{enc_id}").json()
    assert stored["subject"]["reference"] == f"Patient/{eid}"
    patients = _matches(client, "Patient")
    assert [p["id"] for p in patients] == [eid]
    assert patients[0]["name"][0]["given"] == ["Kari"]  # the existing one, unchanged
    assert patients[0]["meta"]["versionId"] == "1"


@pytest.mark.parametrize("first", ["unconditional", "same-conditional"])
def test_conditional_create_matching_an_earlier_entry_keeps_references_valid(
        client: TestClient, first: str) -> None:
    """Entry 1's ifNoneExist matches the Patient entry 0 creates in the same transaction.

    A faithful hub either rejects the transaction (4xx, nothing stored) or commits it with
    references to entry 1's fullUrl pointing at the Patient entry 1 reports (entry 0's).
    Committing a reference to a Patient that was never stored is wrong.
    """
    number = fnr()
    criteria = f"identifier={FNR_SYSTEM}|{number}"
    extra = {"ifNoneExist": criteria} if first == "same-conditional" else {}
    bundle = _bundle(
        "transaction",
        _post(patient(number), O_URN, **extra),
        _post(patient(number), P_URN, ifNoneExist=criteria),
        _post(encounter(P_URN), E_URN),
    )
    r = _send(client, bundle)
    if r.status_code != 200:
        assert 400 <= r.status_code < 500, r.text
        assert _matches(client, "Patient") == []
        assert _matches(client, "Encounter") == []
        return
    out = r.json()["entry"]
    pid = _id_from_location(out[0], "Patient")
    assert _id_from_location(out[1], "Patient") == pid
    enc = client.get(f"/fhir/Encounter/{_id_from_location(out[2], 'Encounter')}").json()
    assert enc["subject"]["reference"] == f"Patient/{pid}"  # not a Patient that was never stored
    assert [p["id"] for p in _matches(client, "Patient")] == [pid]


def test_delete_then_conditional_create_of_the_same_patient(client: TestClient) -> None:
    """Deletes run before creates (R4 3.1.0.11.2), so the ifNoneExist then matches nothing and
    a new Patient is created; references to its fullUrl name the new one."""
    number = fnr()
    old = client.post("/fhir/Patient", content=jsonio.dumps_bytes(patient(number)))
    assert old.status_code == 201
    old_id = old.json()["id"]
    bundle = _bundle(
        "transaction",
        {"request": {"method": "DELETE", "url": f"Patient/{old_id}"}},
        _post(patient(number, given="New"), P_URN,
              ifNoneExist=f"identifier={FNR_SYSTEM}|{number}"),
        _post(encounter(P_URN), E_URN),
    )
    r = _send(client, bundle)
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    assert [_status(e) for e in out] == [204, 201, 201]
    new_id = _id_from_location(out[1], "Patient")
    assert new_id != old_id
    assert client.get(f"/fhir/Patient/{old_id}").status_code == 410
    enc = client.get(f"/fhir/Encounter/{_id_from_location(out[2], 'Encounter')}").json()
    assert enc["subject"]["reference"] == f"Patient/{new_id}"
    assert client.get(f"/fhir/Patient/{new_id}").json()["name"][0]["given"] == ["New"]


def test_transaction_may_not_delete_and_update_the_same_resource(client: TestClient) -> None:
    """R4 3.1.0.11.2: a resource can appear in a transaction only once (by identity)."""
    created = client.post("/fhir/Patient", content=jsonio.dumps_bytes(patient()))
    assert created.status_code == 201
    current = created.json()
    pid = current["id"]
    bundle = _bundle(
        "transaction",
        {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
        {"resource": {**current, "gender": "male"},
         "request": {"method": "PUT", "url": f"Patient/{pid}"}},
    )
    r = _send(client, bundle)
    assert r.status_code == 400, r.text
    assert f"Patient/{pid}" in _issues_text(r.json())
    now = client.get(f"/fhir/Patient/{pid}")
    assert now.status_code == 200
    assert now.json()["meta"]["versionId"] == "1"
    assert now.json()["gender"] == "female"

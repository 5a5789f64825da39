"""If-None-Exist: one resource per criteria, also when many clients ask at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date

import httpx
import pytest
from fastapi.testclient import TestClient

from hub.fhir.identifiers import FNR_SYSTEM
from tests.factories import fnr, patient

NUMBER = fnr(date(1985, 3, 9))
CRITERIA = f"identifier={FNR_SYSTEM}|{NUMBER}"


def test_no_match_creates_and_match_returns_existing(client: TestClient) -> None:
    first = client.post("/fhir/Patient", json=patient(NUMBER), headers={"If-None-Exist": CRITERIA})
    assert first.status_code == 201
    again = client.post("/fhir/Patient", json=patient(NUMBER, given="Changed"),
                        headers={"If-None-Exist": CRITERIA})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["name"][0]["given"] == ["Kari"]  # the existing one, unchanged
    assert len(client.get("/fhir/Patient").json()["entry"]) == 1


def test_several_matches_is_412(client: TestClient) -> None:
    client.post("/fhir/Patient", json=patient(NUMBER))
    client.post("/fhir/Patient", json=patient(fnr(date(1990, 1, 2))))
    r = client.post("/fhir/Patient", json=patient(fnr(date(1991, 1, 2))),
                    headers={"If-None-Exist": "family=Nordmann"})
    assert r.status_code == 412
    assert len(client.get("/fhir/Patient").json()["entry"]) == 2


def test_unknown_criteria_parameter_is_400(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json=patient(), headers={"If-None-Exist": "shoe=42"})
    assert r.status_code == 400
    assert client.get("/fhir/Patient").json()["entry"] == []


def test_after_the_match_changes_a_new_one_is_created(client: TestClient) -> None:
    first = client.post("/fhir/Patient", json=patient(NUMBER),
                        headers={"If-None-Exist": CRITERIA}).json()
    other = fnr(date(1985, 3, 10))
    client.put(f"/fhir/Patient/{first['id']}", json={**patient(other), "id": first["id"]})
    again = client.post("/fhir/Patient", json=patient(NUMBER), headers={"If-None-Exist": CRITERIA})
    assert again.status_code == 201
    assert again.json()["id"] != first["id"]


@pytest.mark.parametrize("conditional", [True, False], ids=["if-none-exist", "plain"])
def test_many_concurrent_clients_make_one_resource(live_url: str, bearer: str,
                                                   conditional: bool) -> None:
    """24 clients post the same Patient at once over real HTTP, as a conditional create or
    a plain one (the hub keeps one Patient per fødselsnummer, CONTRACT section 3): one 201,
    the rest 200 with the same id, and exactly one Patient stored, none changing it."""
    condition = {"If-None-Exist": CRITERIA} if conditional else {}

    def post(i: int) -> tuple[int, str]:
        with httpx.Client(base_url=live_url, timeout=60) as http:
            r = http.post("/fhir/Patient", json=patient(NUMBER, given=f"Try{i}"),
                          headers={**condition, "Authorization": f"Bearer {bearer}",
                                   "Content-Type": "application/fhir+json"})
            return r.status_code, r.json().get("id", r.text)

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(post, range(24)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] * 23 + [201], results
    assert len({rid for _, rid in results}) == 1
    with httpx.Client(base_url=live_url, headers={"Authorization": f"Bearer {bearer}"}) as http:
        found = http.get("/fhir/Patient", params={"identifier": f"{FNR_SYSTEM}|{NUMBER}"}).json()
    assert len(found["entry"]) == 1
    assert found["entry"][0]["resource"]["meta"]["versionId"] == "1"


def test_concurrent_update_as_create_on_one_id_keeps_every_version(live_url: str,
                                                                  bearer: str) -> None:
    """Concurrent PUTs to one new id: one creates, the others become versions 2..n."""

    def put(i: int) -> int:
        with httpx.Client(base_url=live_url, timeout=60) as http:
            r = http.put("/fhir/Patient/shared-id",
                         json={**patient(NUMBER, given=f"V{i}"), "id": "shared-id"},
                         headers={"Content-Type": "application/fhir+json",
                                  "Authorization": f"Bearer {bearer}"})
            return r.status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = sorted(pool.map(put, range(12)))
    assert statuses == [200] * 11 + [201]
    with httpx.Client(base_url=live_url, headers={"Authorization": f"Bearer {bearer}"}) as http:
        hist = http.get("/fhir/Patient/shared-id/_history", params={"_count": 50}).json()
    assert sorted(int(e["resource"]["meta"]["versionId"]) for e in hist["entry"]) == list(
        range(1, 13))


def test_criteria_in_the_post_url_are_a_conditional_create(client: TestClient) -> None:
    """fhirpy's get_or_create sends `POST /fhir/Patient?identifier=...`: honoured, not
    ignored (no duplicate)."""
    first = client.post("/fhir/Patient", json=patient(NUMBER), params={"identifier":
                                                                       f"{FNR_SYSTEM}|{NUMBER}"})
    assert first.status_code == 201
    again = client.post("/fhir/Patient", json=patient(NUMBER, given="Changed"),
                        params={"identifier": f"{FNR_SYSTEM}|{NUMBER}"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert len(client.get("/fhir/Patient").json()["entry"]) == 1
    # the same criteria in the header too are fine; different ones are a 400
    same = client.post("/fhir/Patient", json=patient(NUMBER), headers={"If-None-Exist": CRITERIA},
                       params={"identifier": f"{FNR_SYSTEM}|{NUMBER}"})
    assert same.status_code == 200
    other = client.post("/fhir/Patient", json=patient(NUMBER), headers={"If-None-Exist": CRITERIA},
                        params={"family": "Nordmann"})
    assert other.status_code == 400
    assert "If-None-Exist" in other.json()["issue"][0]["diagnostics"]
    unknown = client.post("/fhir/Patient", json=patient(), params={"shoe": "42"})
    assert unknown.status_code == 400
    assert len(client.get("/fhir/Patient").json()["entry"]) == 1

"""Instance history as R4 http.html says it: each entry's request is what made that version
(findings B 14), and `_since` / `_at` narrow the versions (findings B 5)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.factories import fnr, patient


def _history(client: TestClient, url: str, **params: str) -> dict[str, Any]:
    r = client.get(f"{url}/_history", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_an_update_that_creates_is_recorded_as_the_put_it_was(client: TestClient) -> None:
    url = "/fhir/Patient/hist-put"
    r = client.put(url, json=patient(id="hist-put"))
    assert r.status_code == 201, r.text
    r = client.put(url, json={**r.json(), "gender": "male"})
    assert r.status_code == 200, r.text
    entries = _history(client, url)["entry"]
    assert [(e["request"], e["response"]["status"]) for e in entries] == [
        ({"method": "PUT", "url": "Patient/hist-put"}, "200"),
        ({"method": "PUT", "url": "Patient/hist-put"}, "201")]
    # control: a POST create is still recorded as POST to the type
    r = client.post("/fhir/Patient", json=patient(fnr(start=10), family="Posted"))
    assert r.status_code == 201, r.text
    entries = _history(client, f"/fhir/Patient/{r.json()['id']}")["entry"]
    assert [(e["request"], e["response"]["status"]) for e in entries] == [
        ({"method": "POST", "url": "Patient"}, "201")]

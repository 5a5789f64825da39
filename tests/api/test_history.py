"""Instance history as R4 http.html says it: each entry's request is what made that version
(findings B 14), and `_since` / `_at` narrow the versions (findings B 5)."""

from __future__ import annotations

from typing import Any

import pytest
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


def _three_versions(client: TestClient) -> tuple[str, list[str]]:
    """Patient/hist-t with versions 1-3; the url and each version's lastUpdated."""
    url = "/fhir/Patient/hist-t"
    made = []
    body = patient(id="hist-t")
    for gender in ("female", "male", "other"):
        r = client.put(url, json={**body, "gender": gender})
        assert r.status_code in (200, 201), r.text
        made.append(r.json()["meta"]["lastUpdated"])
    assert made == sorted(set(made)), made
    return url, made


def _versions(page: dict[str, Any]) -> list[str]:
    return [e["resource"]["meta"]["versionId"] for e in page["entry"]]


def test_since_keeps_the_versions_made_at_or_after_it(client: TestClient) -> None:
    url, made = _three_versions(client)
    assert _versions(_history(client, url, _since=made[1])) == ["3", "2"]
    assert _versions(_history(client, url, _since="2999-01-01T00:00:00Z")) == []
    # control: without _since, every version
    assert _versions(_history(client, url)) == ["3", "2", "1"]


def test_at_keeps_the_versions_current_during_it(client: TestClient) -> None:
    url, made = _three_versions(client)
    assert _versions(_history(client, url, _at=made[0])) == ["1"]
    assert _versions(_history(client, url, _at=made[1])) == ["2"]
    assert _versions(_history(client, url, _at="2999")) == ["3"]  # still current then
    assert _versions(_history(client, url, _at="2000")) == []  # before it existed
    assert _versions(_history(client, url, _at=made[0][:4])) == ["3", "2", "1"]


def test_paging_links_keep_since(client: TestClient) -> None:
    url, made = _three_versions(client)
    page = _history(client, url, _since=made[1], _count="1", _format="json")
    assert _versions(page) == ["3"]
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    assert "_since=" in nxt
    assert "_format=json" in nxt
    rest = client.get(nxt.replace("http://testserver", ""))
    assert rest.status_code == 200, rest.text
    assert _versions(rest.json()) == ["2"]
    assert all(link["relation"] != "next" for link in rest.json()["link"])


@pytest.mark.parametrize(("params", "named"), [
    ({"_since": "notadate"}, "_since"),
    ({"_at": "2026-13"}, "_at"),
    ({"_list": "x"}, "_list"),
    ({"family": "Nordmann"}, "family"),
    ({"_since": ["2026-01-01", "2026-02-01"]}, "_since"),
])
def test_a_parameter_history_does_not_take_is_400(client: TestClient, params: dict[str, Any],
                                                  named: str) -> None:
    url, _ = _three_versions(client)
    r = client.get(f"{url}/_history", params=params)
    assert r.status_code == 400, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert named in outcome["issue"][0]["diagnostics"]

"""Cross-organisation access matrix: for every served type and every interaction, another
organisation's client learns nothing of a record it should not see (status and body)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.engine import Database
from hub.store import service
from hub.store.types import READ_ONLY, WRITABLE
from tests.access_clients import other_client
from tests.conftest import SHARED

EXAMPLES = SHARED / "fhir-r4-examples"
DIRECTORY = {"Organization", "Endpoint"}
LOCATION = {"resourceType": "Location", "status": "active", "name": "Jæren DPS, døgnpost",
            "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.2", "value": "8123456"}]}


def _sample(rtype: str) -> dict[str, Any]:
    if rtype == "Location":
        return dict(LOCATION)
    path = sorted(Path(EXAMPLES / rtype).glob("*.json"))[0]
    body: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    body.pop("id", None)
    if rtype == "Consent":  # recorded by its custodian, the owner of these tests
        body["organization"] = [{"reference": "Organization/jaeren-dps"}]
    return body


@pytest.fixture
def two_clients(settings: Settings, database: Database) -> Iterator[tuple[TestClient,
                                                                          TestClient]]:
    """Clients of two organisations: the owner (DPS) and a foreign one (a municipality)."""
    with other_client(settings, database, "jaeren-dps") as owner, \
            other_client(settings, database, "time-kommune") as foreign:
        yield owner, foreign


def _not_found_like(r: Any, missing: Any) -> None:
    """`r` must look exactly like the answer for an id that never existed."""
    assert r.status_code == missing.status_code == 404, r.text
    body, other = r.json(), missing.json()
    assert body["resourceType"] == other["resourceType"] == "OperationOutcome"
    assert [i["code"] for i in body["issue"]] == [i["code"] for i in other["issue"]]


def _search_ids(c: TestClient, url: str, **params: str) -> list[str]:
    r = c.get(url, params=params)
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json()["entry"] if e["search"]["mode"] != "outcome"]


@pytest.mark.parametrize("rtype", sorted(WRITABLE - DIRECTORY))
def test_foreign_client_gets_nothing(rtype: str, two_clients: tuple[TestClient, TestClient]
                                     ) -> None:
    owner, foreign = two_clients
    created = owner.post(f"/fhir/{rtype}", json=_sample(rtype))
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    url = f"/fhir/{rtype}/{rid}"
    assert owner.get(url).status_code == 200

    _not_found_like(foreign.get(url), foreign.get(f"/fhir/{rtype}/never-existed"))
    _not_found_like(foreign.get(f"{url}/_history/1"),
                    foreign.get(f"/fhir/{rtype}/never-existed/_history/1"))
    _not_found_like(foreign.get(f"{url}/_history"),
                    foreign.get(f"/fhir/{rtype}/never-existed/_history"))
    assert _search_ids(foreign, f"/fhir/{rtype}", _id=rid) == []
    assert rid not in _search_ids(foreign, f"/fhir/{rtype}")
    r = foreign.post(f"/fhir/{rtype}/_search", data={"_id": rid},
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert r.json()["entry"] == []

    # changing it: no write, and nothing of its content comes back
    put = foreign.put(url, json={**_sample(rtype), "id": rid})
    assert put.status_code == 409, put.text
    assert put.json()["resourceType"] == "OperationOutcome"
    assert foreign.delete(url).status_code == 204  # a no-op, as for an absent id
    after = owner.get(url)
    assert after.status_code == 200
    assert after.json()["meta"]["versionId"] == "1"

    # inside a transaction and a batch, reads of it fail like reads of nothing: a batch
    # reports the 404 in its entry, a transaction fails whole with it
    def reads(kind: str, some_id: str) -> Response:
        return foreign.post("/fhir", json={"resourceType": "Bundle", "type": kind, "entry": [
            {"request": {"method": "GET", "url": f"{rtype}?_id={some_id}"}},
            {"request": {"method": "GET", "url": f"{rtype}/{some_id}"}}]})

    r = reads("batch", rid)
    assert r.status_code == 200, r.text
    first, second = r.json()["entry"]
    assert first["resource"]["entry"] == []
    assert second["response"]["status"] == "404"
    assert "resource" not in second
    r, absent = reads("transaction", rid), reads("transaction", "never-existed")
    assert (r.status_code, absent.status_code) == (404, 404), r.text
    assert r.json()["issue"][0]["diagnostics"].replace(rid, "X") == (
        absent.json()["issue"][0]["diagnostics"].replace("never-existed", "X"))


@pytest.mark.parametrize("rtype", sorted(DIRECTORY))
def test_directory_is_readable_but_written_only_by_hub_org(
        rtype: str, database: Database, two_clients: tuple[TestClient, TestClient]) -> None:
    """CONTRACT section 3: Organization and Endpoint only through `hub org`. The attack:
    a municipality points another organisation's Endpoint at itself. The control: the hub
    (the `hub org` commands) still writes it, and every client reads it."""
    owner, foreign = two_clients
    with database.session(write=True) as s:
        rid = service.create(s, Subject.hub_itself(), resource=_sample(rtype)).stored.id
    url = f"/fhir/{rtype}/{rid}"
    for client in (owner, foreign):
        assert client.get(url).status_code == 200
        assert client.put(url, json={**_sample(rtype), "id": rid}).status_code == 403
        assert client.delete(url).status_code == 403
        created = client.post(f"/fhir/{rtype}", json=_sample(rtype))
        assert created.status_code == 403, created.text
        assert "hub org" in created.json()["issue"][0]["diagnostics"]
    assert owner.get(url).json()["meta"]["versionId"] == "1"
    # the CapabilityStatement declares no write a client is refused (CONTRACT 2: "lists
    # exactly what works"); the control: a type clients write declares every write
    declared = {r["type"]: r for r in owner.get("/fhir/metadata").json()["rest"][0]["resource"]}
    writes = {"create", "update", "patch", "delete"}
    flags = ("updateCreate", "conditionalCreate", "conditionalUpdate")
    assert {i["code"] for i in declared[rtype]["interaction"]} == {
        "read", "vread", "history-instance", "search-type"}
    assert [declared[rtype][f] for f in flags] == [False, False, False]
    assert writes <= {i["code"] for i in declared["Patient"]["interaction"]}
    assert [declared["Patient"][f] for f in flags] == [True, True, True]
    with database.session(write=True) as s:
        again = service.update(s, Subject.hub_itself(), resource_type=rtype, resource_id=rid,
                               resource={**_sample(rtype), "id": rid, "name": "renamed"})
    assert again.stored.version_id == 2


@pytest.mark.parametrize("rtype", sorted(READ_ONLY))
def test_hub_records_are_not_shown_to_clients(rtype: str, database: Database,
                                              two_clients: tuple[TestClient, TestClient]
                                              ) -> None:
    """Stored messages, provenance and audit events written by the hub itself stay hidden
    until routing (messaging) or the auditor role (audit) grants them."""
    _, foreign = two_clients
    path = sorted(Path(EXAMPLES / rtype).glob("*.json"))[0]
    body = json.loads(path.read_text(encoding="utf-8"))
    with database.session(write=True) as s:
        rid = service.create(s, Subject.hub_itself(), resource=body).stored.id
    if rtype == "AuditEvent":  # the audit trail's own routes: auditors only, whatever scopes
        for answer in (foreign.get(f"/fhir/{rtype}/{rid}"), foreign.get(f"/fhir/{rtype}"),
                       foreign.post(f"/fhir/{rtype}", json=body)):
            assert answer.status_code == 403, answer.text
        return
    _not_found_like(foreign.get(f"/fhir/{rtype}/{rid}"),
                    foreign.get(f"/fhir/{rtype}/never-existed"))
    assert _search_ids(foreign, f"/fhir/{rtype}") == []
    assert foreign.post(f"/fhir/{rtype}", json=body).status_code == 405


def test_conditional_create_does_not_reveal_a_foreign_match(
        two_clients: tuple[TestClient, TestClient]) -> None:
    owner, foreign = two_clients
    sample = _sample("Patient")
    ident = sample["identifier"][0]
    criteria = f"identifier={ident['system']}|{ident['value']}"
    first = owner.post("/fhir/Patient", json=sample, headers={"If-None-Exist": criteria})
    theirs = foreign.post("/fhir/Patient", json=sample, headers={"If-None-Exist": criteria})
    assert first.status_code == theirs.status_code == 201
    assert theirs.json()["id"] != first.json()["id"]


def test_no_token_and_bad_token_are_401(client: TestClient) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer not-a-token"},
                    {"Authorization": "Basic dXNlcjpwYXNz"}):
        r = client.get("/fhir/Patient", headers=headers)
        assert r.status_code == 401
        assert r.json()["resourceType"] == "OperationOutcome"
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/fhir/metadata", headers={"Authorization": ""}).status_code == 200


def test_two_authorization_headers_are_401_whichever_comes_first(client: TestClient) -> None:
    valid = client.headers["authorization"]
    assert client.get("/fhir/Patient").status_code == 200  # control: the token alone
    for pair in ([valid, "Bearer not-a-token"], ["Bearer not-a-token", valid], [valid, valid]):
        r = client.get("/fhir/Patient", headers=[("Authorization", v) for v in pair])
        assert r.status_code == 401, r.text
        assert "more than once" in r.json()["issue"][0]["diagnostics"]
        assert 'error="invalid_request"' in r.headers["www-authenticate"]

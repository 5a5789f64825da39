"""Conditional delete (`DELETE /fhir/Type?criteria`, FHIR R4 http.html#cdelete, single mode),
by REST and as a transaction entry, one code for both (findings B 19): one match the caller
may see is deleted as DELETE deletes it, none deletes nothing, several are a 412. A record
hidden from the caller never counts as a match; a visible match another organisation owns is
a 403. Each refusal has its control: the rightful request deletes."""

from __future__ import annotations

from collections.abc import Iterator
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


def _new(c: TestClient, number: str, family: str = "Nordmann") -> str:
    r = c.post("/fhir/Patient", json=patient(number, family=family))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _outcome(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return " ".join(i["diagnostics"] for i in body["issue"])


def _in_transaction(c: TestClient, url: str) -> httpx.Response:
    return c.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": url}}]})


def test_one_match_is_deleted_none_deletes_nothing(client: TestClient,
                                                   database: Database) -> None:
    pid = _new(client, NUMBER)
    other = _new(client, fnr(date(1990, 1, 2)), family="Annen")
    nothing = client.delete("/fhir/Patient", params={"family": "Ingen"})
    assert nothing.status_code == 204, nothing.text
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    before = mark(database)
    r = client.delete("/fhir/Patient", params=BY_NUMBER)
    assert r.status_code == 204, r.text
    assert r.headers["etag"] == 'W/"2"'
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    assert client.get(f"/fhir/Patient/{other}").status_code == 200  # control: not it
    records = [x for x in since(database, before) if x.subtype == "delete"]
    assert [x.outcome for x in records] == ["0"]
    assert f"Patient/{pid}/_history/2" in records[0].entity_refs()


def test_several_matches_are_412_and_delete_nothing(client: TestClient) -> None:
    ids = [_new(client, fnr(start=n), family="Same") for n in (2, 3)]
    said = _outcome(client.delete("/fhir/Patient", params={"family": "Same"}), 412)
    assert "more than one" in said
    assert all(client.get(f"/fhir/Patient/{i}").status_code == 200 for i in ids)
    # control: narrowed to one, it deletes that one
    r = client.delete("/fhir/Patient", params={"family": "Same", "_id": ids[0]})
    assert r.status_code == 204, r.text
    assert [client.get(f"/fhir/Patient/{i}").status_code for i in ids] == [410, 200]


@pytest.mark.parametrize("params", [{}, {"_format": "json"}, {"nonsense": "x"},
                                    {"birthdate": "notadate"}])
def test_no_or_bad_criteria_are_400_and_delete_nothing(client: TestClient,
                                                       params: dict[str, str]) -> None:
    pid = _new(client, NUMBER)
    _outcome(client.delete("/fhir/Patient", params=params), 400)
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    # control: good criteria (with _format beside them) delete
    r = client.delete("/fhir/Patient", params={**BY_NUMBER, "_format": "json"})
    assert r.status_code == 204, r.text
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410


@pytest.fixture
def dps_and_klepp(settings: Settings, database: Database) -> Iterator[tuple[TestClient,
                                                                            TestClient]]:
    """The centre, which owns the patient's record, and a municipality."""
    with other_client(settings, database, "jaeren-dps") as dps, \
            other_client(settings, database, "klepp-kommune") as klepp:
        yield dps, klepp


@pytest.mark.parametrize("how", ["rest", "transaction"])
def test_another_organisations_record_is_never_deleted(
        dps_and_klepp: tuple[TestClient, TestClient], how: str) -> None:
    """Hidden from Klepp, the centre's Patient is no match (nothing deleted, nothing said);
    once Klepp may see it, it is a 403 as DELETE of it is. Control: the centre deletes it."""
    dps, klepp = dps_and_klepp
    theirs = _new(dps, NUMBER)
    url = f"Patient?identifier={FNR_SYSTEM}|{NUMBER}"

    def delete(c: TestClient) -> httpx.Response:
        if how == "rest":
            return c.delete("/fhir/Patient", params=BY_NUMBER)
        return _in_transaction(c, url)

    hidden = delete(klepp)
    assert hidden.status_code in (200, 204), hidden.text
    assert dps.get(f"/fhir/Patient/{theirs}").json()["meta"]["versionId"] == "1"
    assert klepp.post("/fhir/Encounter", json=encounter(f"Patient/{theirs}")).status_code == 201
    _outcome(delete(klepp), 403)
    assert _outcome(klepp.delete(f"/fhir/Patient/{theirs}"), 403)  # as a plain DELETE
    assert dps.get(f"/fhir/Patient/{theirs}").json()["meta"]["versionId"] == "1"
    ok = delete(dps)
    assert ok.status_code in (200, 204), ok.text
    assert dps.get(f"/fhir/Patient/{theirs}").status_code == 410


def test_a_transaction_entry_decides_as_the_rest_call(client: TestClient) -> None:
    ids = [_new(client, fnr(start=n), family="Same") for n in (2, 3)]
    said = _outcome(_in_transaction(client, "Patient?family=Same"), 412)
    assert "Bundle.entry[0]" in said
    _outcome(_in_transaction(client, "Patient"), 400)  # no criteria: not "the only one"
    assert all(client.get(f"/fhir/Patient/{i}").status_code == 200 for i in ids)
    r = _in_transaction(client, f"Patient?family=Same&_id={ids[1]}")
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"]["status"].startswith("204")
    assert [client.get(f"/fhir/Patient/{i}").status_code for i in ids] == [200, 410]


def test_declared_single_where_it_works(client: TestClient) -> None:
    kinds: dict[str, Any] = {r["type"]: r for r in
                             client.get("/fhir/metadata").json()["rest"][0]["resource"]}
    assert kinds["Patient"]["conditionalDelete"] == "single"
    assert kinds["Bundle"]["conditionalDelete"] == "not-supported"
    r = client.delete("/fhir/Bundle", params={"_id": "x"})
    assert r.status_code == 405, r.text

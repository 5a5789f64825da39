"""A lone surrogate (the JSON escape `\\ud800`) anywhere in a request body is a 400 naming the
element, changes nothing and leaves its audit record (CONTRACT sections 2 and 8). The escape is
valid JSON text but encodes no character: before hub.fhir.jsonio refused it, every diagnostic
or audit record quoting the value back failed to encode, a 500 whose audit record was lost."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.config import Settings
from hub.db.engine import Database
from hub.messaging.models import MessageRow
from tests.api.outcomes import outcome as _outcome
from tests.api.outcomes import patients as _patients
from tests.audit.trail import check_chain, mark, since
from tests.factories import patient
from tests.messaging.test_story import EXAMPLES, hub, load, post  # noqa: F401 (fixture)

NUMBER = "13116900216"
JSON = {"Content-Type": "application/fhir+json"}


def _raw(body: Any) -> bytes:
    return json.dumps(body).encode()  # ensure_ascii: the surrogate goes out as the escape


def _messages(database: Database) -> int:
    with database.session(write=False) as s:
        return int(s.execute(select(func.count()).select_from(MessageRow)).scalar_one())


@pytest.mark.parametrize(("path", "where"), [
    (("entry", 0, "resource", "focus", 0, "reference"), "Bundle.entry[0].resource.focus[0]"),
    (("entry", 0, "resource", "eventCoding", "code"), "Bundle.entry[0].resource.eventCoding"),
    (("entry", 0, "resource", "id"), "Bundle.entry[0].resource.id"),
    (("entry", 1, "fullUrl"), "Bundle.entry[1].fullUrl"),
])
def test_a_message_holding_a_lone_surrogate_is_400_audited_and_changes_nothing(
        hub: dict[str, TestClient], database: Database, settings: Settings,  # noqa: F811
        path: tuple[Any, ...], where: str) -> None:
    message = load(EXAMPLES[2])
    bad = copy.deepcopy(message)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = "abc\ud800"
    sender = message["entry"][0]["resource"]["sender"]["reference"].split("/")[1]
    before = mark(database)
    r = hub[sender].post("/fhir/$process-message", content=_raw(bad), headers=JSON)
    _outcome(r, 400, where, "surrogate")
    assert _messages(database) == 0
    records = since(database, before)
    assert [rec.outcome for rec in records] == ["4"]
    result = check_chain(settings, database)
    assert result.ok, result.reason
    assert post(hub, message).status_code == 200  # control: the message as it was


@pytest.mark.parametrize(("url", "body", "where"), [
    ("/fhir", {"resourceType": "Bundle", "type": "x\ud800"}, "Bundle.type"),
    ("/fhir/Patient", {"resourceType": "Enc\ud800"}, "$.resourceType"),
    ("/fhir/Patient", {**patient(NUMBER), "gender": "x\ud800"}, "Patient.gender"),
    ("/fhir/Patient", {**patient(NUMBER), "x\udc00": 1}, "Patient.x\ufffd"),
    ("/fhir", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Task?identifier=\ud800"}}]},
     "Bundle.entry[0].request.url"),
])
def test_a_rest_body_holding_a_lone_surrogate_is_400_and_audited(
        client: TestClient, database: Database, settings: Settings, url: str,
        body: dict[str, Any], where: str) -> None:
    before = mark(database)
    _outcome(client.post(url, content=_raw(body), headers=JSON), 400, where, "surrogate")
    records = since(database, before)
    assert [rec.outcome for rec in records] == ["4"]
    assert _patients(client) == []
    result = check_chain(settings, database)
    assert result.ok, result.reason


def test_a_surrogate_pair_is_one_character_and_kept(client: TestClient) -> None:
    """The control: a pair (an emoji, escaped as JSON writes it) is a character like any."""
    body = patient(NUMBER)
    body["name"][0]["text"] = "Kari \U0001f600"
    raw = _raw(body)
    assert b"\\ud83d\\ude00" in raw
    r = client.post("/fhir/Patient", content=raw, headers=JSON)
    assert r.status_code == 201, r.text
    assert client.get(f"/fhir/Patient/{r.json()['id']}").json()["name"][0]["text"] == \
        "Kari \U0001f600"

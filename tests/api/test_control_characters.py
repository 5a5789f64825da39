"""Control characters from outside (CONTRACT section 2: bad input is a clear 4xx and changes
nothing). R4 strings hold no character below U+0020 but tab, line feed and carriage return
(hub.fhir.strings). PostgreSQL's text cannot hold U+0000 at all: before these checks a search,
a read, a conditional write or a client assertion holding one was a 500 there (SQLite stored
or searched it), and the audit record of such a request was lost. Each test runs on both
databases, with a control that the same request without the character still works."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import DataError

from hub.audit.queries import parse_query
from hub.config import Settings
from hub.db.engine import Database
from hub.errors import BadRequestError
from hub.messaging.models import MessageRow
from tests.api.outcomes import outcome as _outcome
from tests.api.outcomes import patients as _patients
from tests.audit.trail import check_chain, mark, since
from tests.auth_helpers import FORM, token_form
from tests.factories import patient
from tests.messaging.test_story import EXAMPLES, hub, load, post  # noqa: F401 (fixture)

NUMBER = "13116900216"


@pytest.mark.parametrize(("where", "value", "code"), [
    ("identifier", "131169\u000000216", "U+0000"),
    ("family", "Nord\u0001mann", "U+0001"),
    ("family", "Nordmann\u001f", "U+001F"),
])
def test_a_resource_holding_a_control_character_is_422_and_not_stored(
        client: TestClient, where: str, value: str, code: str) -> None:
    body = patient(NUMBER)
    if where == "identifier":
        body["identifier"][0]["value"] = value
        path = "Patient.identifier[0].value"
    else:
        body["name"][0]["family"] = value
        path = "Patient.name[0].family"
    _outcome(client.post("/fhir/Patient", json=body), 422, path, code)
    assert _patients(client) == []
    # control: tab, line feed and carriage return are allowed, and kept as sent
    body = patient(NUMBER)
    body["name"][0]["text"] = "Kari\tNordmann\r\n(kalt Kari)"
    r = client.post("/fhir/Patient", json=body)
    assert r.status_code == 201, r.text
    assert client.get(f"/fhir/Patient/{r.json()['id']}").json()["name"][0]["text"] == \
        "Kari\tNordmann\r\n(kalt Kari)"


def test_a_message_holding_u0000_is_422_and_changes_nothing(
        hub: dict[str, TestClient], database: Database) -> None:  # noqa: F811
    message = load(EXAMPLES[0])
    bad = json.loads(json.dumps(message))
    bad["entry"][0]["resource"]["source"]["endpoint"] = "urn:x:\u0000"
    _outcome(post(hub, bad), 422, "MessageHeader.source.endpoint", "U+0000")
    with database.session(write=False) as s:
        assert s.execute(select(func.count()).select_from(MessageRow)).scalar_one() == 0
    assert post(hub, message).status_code == 200  # control: the message as it was


@pytest.mark.parametrize("how", ["GET", "POST _search", "If-None-Exist", "conditional PUT"])
def test_search_values_holding_a_control_character_are_400(client: TestClient,
                                                           how: str) -> None:
    stored = client.post("/fhir/Patient", json=patient(NUMBER)).json()

    def ask(value: str) -> Any:
        query = f"identifier=urn:oid:2.16.578.1.12.4.1.4.1|{value}"
        if how == "GET":
            return client.get(f"/fhir/Patient?{query}")
        if how == "POST _search":
            return client.post("/fhir/Patient/_search", content=query.encode(), headers=FORM)
        if how == "If-None-Exist":
            return client.post("/fhir/Patient", json=patient(NUMBER),
                               headers={"If-None-Exist": query})
        return client.put(f"/fhir/Patient?{query}", json=patient(NUMBER))

    _outcome(ask("131169%0000216"), 400, "U+0000")
    _outcome(ask("131169%0100216"), 400, "U+0001")
    assert [p["id"] for p in _patients(client)] == [stored["id"]]  # nothing made or changed
    assert client.get(f"/fhir/Patient/{stored['id']}").json()["meta"]["versionId"] == "1"
    r = ask(NUMBER)  # control: the same request, the number as it is
    assert r.status_code == 200, r.text
    if how in ("GET", "POST _search"):
        assert [e["resource"]["id"] for e in r.json()["entry"]] == [stored["id"]]
    else:  # matched the one there is: nothing new
        assert r.json()["id"] == stored["id"]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/fhir/Patient/a%00b"),
    ("GET", "/fhir/Patient/a%00b/_history"),
    ("PUT", "/fhir/Patient/a%00b"),
    ("GET", "/fhir/Patient/a%00b/_history/1"),
    ("GET", "/fhir/Consent?patient=Patient/a%00b"),
])
def test_a_url_holding_u0000_is_400(client: TestClient, method: str, path: str) -> None:
    body = {**patient(NUMBER), "id": "a\u0000b"} if method == "PUT" else None
    _outcome(client.request(method, path, json=body), 400, "U+0000")
    assert _patients(client) == []
    made = client.put("/fhir/Patient/ab", json={**patient(NUMBER), "id": "ab"})
    assert made.status_code == 201, made.text  # control: the id without it
    assert client.request("GET", path.replace("a%00b", "ab")).status_code == 200


def test_an_id_with_a_trailing_line_feed_is_no_id(client: TestClient) -> None:
    """A pattern that ends in "$" also matches before a last line feed, which a URL and a
    JSON string may both carry; ids are matched to their very end."""
    r = client.put("/fhir/Patient/ab%0A", json={**patient(NUMBER), "id": "ab\n"})
    assert 400 <= r.status_code < 500, r.text
    assert _patients(client) == []
    assert client.get("/fhir/Patient/ab%0A").status_code == 404
    assert client.put("/fhir/Patient/ab", json={**patient(NUMBER), "id": "ab"}).status_code \
        == 201


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_client_assertion_naming_a_client_id_with_u0000_is_401(client: TestClient) -> None:
    claims = {"iss": "a\u0000b", "sub": "a\u0000b", "aud": "x", "jti": "j", "exp": 2 ** 40}
    assertion = (f"{_b64(json.dumps({'alg': 'ES384', 'kid': 'k'}).encode())}."
                 f"{_b64(json.dumps(claims).encode())}.{_b64(b'sig')}")
    r = client.post("/auth/token", data=token_form(assertion), headers=FORM)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_client"
    # control: the client's own token (the fixture's, from a real assertion) still reads
    assert client.get("/fhir/Patient").status_code == 200


def test_requests_holding_u0000_are_audited_and_the_trail_verifies(
        client: TestClient, settings: Settings, database: Database) -> None:
    before = mark(database)
    assert client.get("/fhir/Patient/a%00b").status_code == 400
    assert client.get("/fhir/Patient?family=a%00b").status_code == 400
    records = since(database, before)
    assert len(records) == 2
    for record in records:
        assert record.outcome == "4"  # a failure the client caused
        assert "\u0000" not in json.dumps(record.event, ensure_ascii=False)
    assert any("a\ufffdb" in json.dumps(r.event, ensure_ascii=False) for r in records)
    result = check_chain(settings, database)
    assert result.ok, result.reason


def test_the_audit_search_refuses_control_characters() -> None:
    with pytest.raises(BadRequestError, match="U\\+0000"):
        parse_query([("patient", "Patient/a\u0000b")], default_count=10, max_count=10)
    with pytest.raises(BadRequestError, match="U\\+0001"):
        parse_query([("pat\u0001ient", "Patient/a")], default_count=10, max_count=10)
    assert parse_query([("patient", "Patient/a")], default_count=10, max_count=10).patients


def test_what_escapes_the_checks_is_a_400_if_it_is_u0000_else_a_500(
        settings: Settings) -> None:
    """The last line of defence (hub/api/exception_handlers.py): the driver's refusal of
    U+0000 is the client's doing; any other DataError is the hub's (500, an incident)."""
    from hub.app import create_app

    app: FastAPI = create_app(settings)

    class DriverError(Exception):
        pass

    def nul() -> None:
        raise DataError("SELECT", {}, DriverError(
            "PostgreSQL text fields cannot contain NUL (0x00) bytes"))

    def other() -> None:
        raise DataError("SELECT", {}, DriverError("value too long for type character(2)"))

    app.add_api_route("/probe-nul", nul)
    app.add_api_route("/probe-other", other)
    with TestClient(app, raise_server_exceptions=False) as web:
        _outcome(web.get("/probe-nul"), 400, "U+0000", "nothing was changed")
        _outcome(web.get("/probe-other"), 500, "incident")

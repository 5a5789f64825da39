"""A body sent with a Content-Encoding (gzip, deflate, anything but identity) is a 415 naming
the encoding, audited, with nothing changed: it was read as raw bytes and refused as "not
UTF-8 text", which pointed the client at the wrong problem (C10). Nothing is inflated."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from fastapi.testclient import TestClient

from hub.db.engine import Database
from tests.audit.trail import mark, since
from tests.factories import patient


@pytest.mark.parametrize(("coding", "pack"), [
    ("gzip", gzip.compress), ("deflate", zlib.compress), ("br", lambda b: b),
    ("GZIP, identity", gzip.compress),
])
def test_an_encoded_body_is_415_naming_the_encoding(
        client: TestClient, database: Database, coding: str, pack: object) -> None:
    raw = json.dumps(patient("13116900216")).encode()
    before = mark(database)
    r = client.post("/fhir/Patient", content=pack(raw),  # type: ignore[operator]
                    headers={"Content-Encoding": coding})
    assert r.status_code == 415, r.text
    assert r.headers["accept-encoding"] == "identity"
    diagnostics = r.json()["issue"][0]["diagnostics"]
    assert f"Content-Encoding '{coding.lower()}'" in diagnostics
    assert [rec.outcome for rec in since(database, before)] == ["4"]
    assert client.get("/fhir/Patient").json().get("entry", []) == []
    # control: the same body unencoded, or declared identity
    r = client.post("/fhir/Patient", content=raw, headers={"Content-Encoding": "identity"})
    assert r.status_code == 201, r.text

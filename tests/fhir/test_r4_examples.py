"""Every HL7 R4 example of a type the hub serves goes through the REST API unchanged.

Writable types: POST, read back, PUT under the example's own id (update-as-create), read back;
the stored JSON must equal the file apart from `id` (on create) and meta.versionId /
meta.lastUpdated. Both sides are parsed with the hub's own decimal-preserving parser, and
decimals are compared as written (`0.40` is not `0.4`). Read-only types refuse client writes.
The examples are shared test data (see shared/fhir-r4-examples/README.md); they are read, never
edited.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.auth.isolation import DIRECTORY_TYPES
from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.fhir import jsonio
from hub.store import service
from hub.store.types import READ_ONLY, WRITABLE
from tests.conftest import SHARED, TEST_ORG

EXAMPLES = SHARED / "fhir-r4-examples"
README = EXAMPLES / "README.md"


def _files(types: frozenset[str]) -> list[Path]:
    return sorted(p for t in sorted(types) for p in (EXAMPLES / t).glob("*.json"))


WRITABLE_FILES = _files(WRITABLE)
READ_ONLY_FILES = _files(READ_ONLY)


def _params(files: list[Path]) -> list[Any]:
    return [pytest.param(p, id=p.stem) for p in files]


def _readme_counts() -> dict[str, int]:
    """The README's contents table: type -> number of files."""
    counts = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*([A-Z][A-Za-z]+)\s*\|\s*(\d+)\s*\|", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


def _canon(node: Any) -> Any:
    """JSON for comparison: dict order ignored, decimals as written, bools not equal to ints."""
    if isinstance(node, dict):
        return {k: _canon(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_canon(v) for v in node]
    if isinstance(node, Decimal):
        return f"decimal:{node}"
    if isinstance(node, bool):
        return f"bool:{node}"
    return node


def _without_server_meta(resource: dict[str, Any], *, keep_id: bool) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if keep_id or k != "id"}
    meta = {k: v for k, v in (out.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    out.pop("meta", None)
    if meta:
        out["meta"] = meta
    return _canon(out)


def _assert_same(served: bytes, raw: bytes, *, keep_id: bool) -> None:
    got = _without_server_meta(jsonio.loads(served), keep_id=keep_id)
    want = _without_server_meta(jsonio.loads(raw), keep_id=keep_id)
    assert got == want


def test_example_counts_match_readme() -> None:
    assert README.is_file(), f"the shared examples are missing: {README}"
    listed = _readme_counts()
    assert sum(listed.values()) == 99  # the README's own total
    for rtype in sorted(WRITABLE | READ_ONLY):
        found = len(list((EXAMPLES / rtype).glob("*.json")))
        assert found == listed.get(rtype, 0), rtype
    assert len(WRITABLE_FILES) == sum(n for t, n in listed.items() if t in WRITABLE) == 64
    assert len(READ_ONLY_FILES) == sum(n for t, n in listed.items() if t in READ_ONLY) == 11


@pytest.mark.parametrize("path", _params(WRITABLE_FILES))
def test_writable_example_round_trips(client: TestClient, database: Database,
                                      path: Path) -> None:
    raw = path.read_bytes()
    example = jsonio.loads(raw)
    rtype, own_id = example["resourceType"], example["id"]
    if rtype in DIRECTORY_TYPES:  # written only by `hub org` (the hub itself), read by all
        assert client.post(f"/fhir/{rtype}", content=raw).status_code == 403
        with database.session(write=True) as s:
            service.update(s, Subject.hub_itself(), resource_type=rtype, resource_id=own_id,
                           resource=example)
        read = client.get(f"/fhir/{rtype}/{own_id}")
        assert read.status_code == 200, read.text
        _assert_same(read.content, raw, keep_id=True)
        return
    if rtype == "Consent":  # recorded only by the custodian it names (CONTRACT section 5)
        if example.get("organization") != [{"reference": f"Organization/{TEST_ORG}"}]:
            refused = client.post(f"/fhir/{rtype}", content=raw)
            assert refused.status_code == 422, refused.text
            assert "custodian" in refused.text
        example["organization"] = [{"reference": f"Organization/{TEST_ORG}"}]
        raw = jsonio.dumps_bytes(example)

    created = client.post(f"/fhir/{rtype}", content=raw)
    assert created.status_code == 201, created.text
    new_id = created.json()["id"]
    read = client.get(f"/fhir/{rtype}/{new_id}")
    assert read.status_code == 200, read.text
    assert jsonio.loads(read.content)["meta"]["versionId"] == "1"
    _assert_same(read.content, raw, keep_id=False)

    put = client.put(f"/fhir/{rtype}/{own_id}", content=raw)
    assert put.status_code == 201, put.text
    read = client.get(f"/fhir/{rtype}/{own_id}")
    assert read.status_code == 200, read.text
    assert jsonio.loads(read.content)["meta"]["versionId"] == "1"
    _assert_same(read.content, raw, keep_id=True)


@pytest.mark.parametrize("path", _params(READ_ONLY_FILES))
def test_read_only_example_is_refused(client: TestClient, path: Path) -> None:
    raw = path.read_bytes()
    rtype = jsonio.loads(raw)["resourceType"]
    r = client.post(f"/fhir/{rtype}", content=raw)
    if rtype == "AuditEvent":  # the audit trail answers clients 403, whatever they ask
        assert r.status_code == 403, r.text
        assert client.get(f"/fhir/{rtype}").status_code == 403
        return
    assert r.status_code == 405, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    found = client.get(f"/fhir/{rtype}")
    assert found.status_code == 200, found.text
    assert found.json().get("entry", []) == []
    assert found.json().get("total", 0) == 0


def test_meta_and_decimals_survive_on_a_derived_example(client: TestClient) -> None:
    """The examples carry no meta and no trailing-zero decimal; a variant derived here does."""
    raw = (EXAMPLES / "QuestionnaireResponse" / "QuestionnaireResponse-bb.json").read_bytes()
    variant = jsonio.loads(raw)
    variant["meta"] = {
        "versionId": "7", "lastUpdated": "2014-08-18T01:43:30Z",
        "source": "urn:uuid:0c4f4c2e-2d1e-4f43-9a52-2a6f7d1f9d11",
        "profile": ["http://example.org/fhir/StructureDefinition/bb"],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                      "code": "R"}],
        "tag": [{"system": "http://example.org/tags", "code": "demo"}],
    }
    text = jsonio.dumps(variant)
    assert '"valueDecimal":3.25}' in text
    body = text.replace('"valueDecimal":3.25}', '"valueDecimal":3.250}').encode()

    created = client.post("/fhir/QuestionnaireResponse", content=body)
    assert created.status_code == 201, created.text
    read = client.get(f"/fhir/QuestionnaireResponse/{created.json()['id']}")
    assert read.status_code == 200, read.text
    assert b'"valueDecimal":3.250' in read.content.replace(b" ", b"")
    meta = jsonio.loads(read.content)["meta"]
    assert meta["versionId"] == "1"
    assert meta["lastUpdated"] != "2014-08-18T01:43:30Z"
    _assert_same(read.content, body, keep_id=False)

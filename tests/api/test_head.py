"""HEAD answers as GET would, without the body (RFC 9110 section 9.3.2): a client checks a
resource's existence and version (ETag, Last-Modified) without fetching it. It is the GET
it stands for in everything but the body: the same gate, the same 404 for what the caller
may not see, and the same audit record."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.audit.models import AuditRecordRow
from hub.audit.spool import ReadAudit
from hub.config import Settings
from hub.db.engine import Database
from tests.access_clients import other_client
from tests.factories import fnr, patient


def _reads_of(database: Database, pid: str) -> int:
    """Audit records of reads of Patient/pid, once the read spools are moved into the trail."""
    reads = ReadAudit(database)
    try:
        reads.move_all()
    finally:
        reads.close()
    with database.session(write=False) as s:
        bodies = s.execute(select(AuditRecordRow.body)
                           .where(AuditRecordRow.subtype == "read")).scalars().all()
    return sum(any((e.get("what") or {}).get("reference") == f"Patient/{pid}"
                   for e in json.loads(bytes(b)).get("entity", [])) for b in bodies)


def test_head_is_get_without_the_body(settings: Settings, database: Database) -> None:
    with other_client(settings, database, "jaeren-dps") as owner, \
            other_client(settings, database, "time-kommune") as foreign:
        r = owner.post("/fhir/Patient", json=patient(fnr()))
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        got = owner.get(f"/fhir/Patient/{pid}")
        before = _reads_of(database, pid)
        head = owner.head(f"/fhir/Patient/{pid}")
        assert _reads_of(database, pid) == before + 1  # recorded as the read it is
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["etag"] == got.headers["etag"] == 'W/"1"'
        assert head.headers["last-modified"] == got.headers["last-modified"]
        assert head.headers["content-type"] == got.headers["content-type"]
        assert int(head.headers["content-length"]) == len(got.content)
        # searches, the capability statement and the web pages answer HEAD too
        assert owner.head("/fhir/Patient?_count=1").status_code == 200
        assert owner.head("/fhir/metadata").status_code == 200
        assert owner.head("/ui/sign-in").status_code == 200
        # what the caller may not GET, it may not HEAD: the same 404, nothing in the body
        hidden = foreign.head(f"/fhir/Patient/{pid}")
        assert hidden.status_code == foreign.get(f"/fhir/Patient/{pid}").status_code == 404
        assert hidden.content == b""
        assert "etag" not in hidden.headers
        assert owner.head("/fhir/Patient/no-such-id").status_code == 404
        # without a token, as GET: 401
        assert TestClient(owner.app).head(f"/fhir/Patient/{pid}").status_code == 401
        # a write's address answers 405 naming HEAD beside GET where GET is served
        r = owner.post("/fhir/metadata")
        assert r.status_code == 405
        assert {"GET", "HEAD"} <= set(r.headers["allow"].split(", "))

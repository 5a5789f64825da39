"""The store paths message intake takes: service.create_many (several new resources in one
insert per table, each stored, indexed and owned as `create` would) and the identifier
look-up (an index search, whatever is stored)."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.errors import ForbiddenError
from hub.store import query as search_mod
from hub.store import service
from tests.factories import encounter, fnr, patient
from tests.plans import sqlite_plan, statements_of

ALL = frozenset({"system/*.*"})
DPS = Subject("client", "dps-ehr", "jaeren-dps", ALL)
TIME = Subject("client", "time-ehr", "time-kommune", ALL)


def _search(database: Database, who: Subject, rtype: str, *pairs: tuple[str, str]) -> list[str]:
    with database.session(write=False) as s:
        req = search_mod.parse_request(rtype, list(pairs), default_count=50, max_count=50)
        matches, _, _ = service.search(s, who, request=req)
        return [m.id for m in matches]


def test_each_is_stored_indexed_and_owned_as_its_subject(database: Database) -> None:
    number = fnr(date(1981, 2, 3))
    pid, eid, other = (str(uuid.uuid4()) for _ in range(3))
    with database.session(write=True) as s:
        stored = service.create_many(s, [
            service.New(DPS, {**patient(number), "id": pid}, pid),
            service.New(DPS, {**encounter(f"Patient/{pid}"), "id": eid}, eid),
            service.New(TIME, {**patient(fnr(date(1990, 4, 5))), "id": other}, other),
        ])
    assert [(r.resource_type, r.id, r.version_id) for r in stored] == [
        ("Patient", pid, 1), ("Encounter", eid, 1), ("Patient", other, 1)]
    assert all(r.body is not None and r.body["meta"]["versionId"] == "1" for r in stored)
    # the index rows belong to the right resource
    assert _search(database, DPS, "Patient", ("identifier", number)) == [pid]
    assert _search(database, DPS, "Encounter", ("patient", f"Patient/{pid}")) == [eid]
    # each belongs to its own subject's organisation
    assert _search(database, DPS, "Patient") == [pid]
    assert _search(database, TIME, "Patient") == [other]
    with database.session(write=False) as s:
        read = service.read(s, DPS, resource_type="Encounter", resource_id=eid)
        history, _ = service.history(s, DPS, resource_type="Encounter", resource_id=eid,
                                     count=10, offset=0)
    assert read.body == stored[1].body
    assert [h.version_id for h in history] == [1]


def test_a_type_the_subject_may_not_write_is_refused(database: Database) -> None:
    reader = Subject("client", "reader", "jaeren-dps", frozenset({"system/Patient.write"}))
    pid, eid = str(uuid.uuid4()), str(uuid.uuid4())
    with pytest.raises(ForbiddenError), database.session(write=True) as s:
        service.create_many(s, [
            service.New(reader, {**patient(fnr(date(1970, 1, 1))), "id": pid}, pid),
            service.New(reader, {**encounter(f"Patient/{pid}"), "id": eid}, eid),
        ])
    assert _search(database, DPS, "Patient") == []


def test_identifier_lookup_uses_the_token_index(database: Database) -> None:
    """Message intake looks every entry up by identifier, as an organisation: that must be
    index searches, not scans of every token or reference, nor of every Consent's patient
    (it once was all three, and grew slower with every message or consent stored)."""
    if database.dialect != "sqlite":
        pytest.skip("reads SQLite's query plan")

    def look_up() -> None:
        for types in (frozenset({"Patient"}), None):
            with database.session(write=False) as s:
                service.find_by_identifier(s, DPS, system="urn:oid:x", value="1",
                                           resource_types=types)

    lookups = [(st, p) for st, p in statements_of(database.engine, look_up)
               if "search_tokens" in st]
    assert len(lookups) == 2
    for statement, params in lookups:
        plan = sqlite_plan(database.engine, statement, params)
        assert "USING INDEX ix_search_tokens_lookup" in plan, plan
        # nor in the consent gate's pre-filter, nor a read of a whole index prefix
        assert "SCAN " not in plan, plan
        assert "(resource_type=? AND param=?)" not in plan, plan

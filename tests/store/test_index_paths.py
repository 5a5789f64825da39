"""The store's indexing walks plain FHIRPath paths itself (hub.store.search_params): for every
search parameter and every example resource it must give exactly what fhirpathpy gives."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import fhirpathpy
import pytest

from hub.store.search_params import compile_expression, extract, registry
from tests.conftest import SHARED


def _resources() -> Iterator[dict[str, Any]]:
    for path in sorted((SHARED / "fhir-r4-examples").rglob("*.json")):
        yield json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    for path in sorted((SHARED / "examples").glob("*.json")):
        message = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
        yield message
        yield from (e["resource"] for e in message.get("entry", []) if "resource" in e)


EDGE_CASES: list[dict[str, Any]] = [
    # primitive extensions and nulls in arrays: fhirpathpy has its own ideas, which we keep
    {"resourceType": "Patient", "name": [{"given": ["Kari", None], "_given": [
        None, {"extension": [{"url": "http://example.org/x", "valueCode": "y"}]}]}],
     "birthDate": "1980-02-29", "_birthDate": {"extension": [
         {"url": "http://example.org/t", "valueTime": "10:00:00"}]}},
    # duplicates inside one path stay; a union removes them
    {"resourceType": "Patient", "telecom": [{"system": "phone", "value": "1"},
                                            {"system": "phone", "value": "1"},
                                            {"system": "email", "value": "a@b.no"}]},
    {"resourceType": "Location", "name": "Sola", "alias": ["Sola", "Sola DPS"]},
    {"resourceType": "Location", "name": "Sola"},
    {"resourceType": "DocumentReference", "masterIdentifier": {"value": "1"},
     "identifier": [{"value": "1"}]},
    # wrong shapes: a string where an object belongs, another type's resource
    {"resourceType": "Patient", "name": "Kari", "telecom": [{"_system": {"id": "x"}}]},
    {"resourceType": "Encounter", "period": {"start": "2024-01-01"}, "subject": {}},
]


@pytest.mark.parametrize("expression", sorted({
    sp.expression for params in registry().values() for sp in params.values()}))
def test_each_expression_agrees_with_fhirpathpy(expression: str) -> None:
    fast, slow = compile_expression(expression), fhirpathpy.compile(expression)
    checked = 0
    for resource in [*_resources(), *EDGE_CASES]:
        assert fast(resource) == slow(resource), (expression, resource.get("id"))
        checked += 1
    assert checked > 100


def test_extract_finds_what_a_patient_is_searched_by() -> None:
    values = extract({"resourceType": "Patient", "identifier": [
        {"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "13031353453"}],
        "name": [{"family": "Ås", "given": ["Kari"]}],
        "telecom": [{"system": "phone", "value": "+4791234567"}], "birthDate": "2013-03-13"})
    assert ("identifier", "urn:oid:2.16.578.1.12.4.1.4.1", "13031353453") in values.tokens
    assert ("phone", "phone", "+4791234567") in values.tokens
    assert ("family", "as", "Ås") in values.strings
    assert [d[0] for d in values.dates] == ["birthdate"]


def test_the_stored_index_rows_are_what_extract_gives(database: Any) -> None:
    """The rows the store writes (on PostgreSQL all four tables in one statement, each
    table's rows as one JSON array) are exactly extract(body): values (quotes, backslashes
    and letters past ASCII too), NULL systems and UTC date ranges to the microsecond."""
    from sqlalchemy import event, text

    from hub.auth.subject import Subject
    from hub.store import service

    body = {"resourceType": "Encounter", "status": "finished",
            "identifier": [{"value": "no-system"}, {"system": "urn:x", "value": "v"},
                           {"system": "urn:x", "value": 'a "q" \\ b\tc Æøå 😀'}],
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "IMP"},
            "subject": {"reference": "Patient/p1"},
            "period": {"start": "2026-01-02T10:00:00+01:00", "end": "2026-01-03"}}
    statements: list[str] = []
    event.listen(database.engine, "before_cursor_execute",
                 lambda *a: statements.append(a[2]) if "search_" in a[2] else None)
    with database.session(write=True) as s:
        made = service.create(s, Subject.working_for("org-a", "c"), resource=body,
                              already_valid=True).stored
    want = extract({**body, "id": made.id})
    kinds = sum(1 for rows in (want.tokens, want.references, want.dates, want.strings) if rows)
    assert kinds >= 3
    assert len(statements) == (1 if database.dialect == "postgresql" else kinds)
    with database.session(write=False) as s:
        def rows(table: str, *cols: str) -> list[tuple[Any, ...]]:
            return sorted((tuple(r) for r in s.execute(text(
                f"SELECT param, {', '.join(cols)} FROM {table}"))), key=repr)  # noqa: S608
        assert rows("search_tokens", "system", "code") == sorted(want.tokens, key=repr)
        assert rows("search_references", "target_type", "target_id") == sorted(
            want.references, key=repr)
        assert rows("search_strings", "value", "exact") == sorted(want.strings, key=repr)
        dates = list(s.execute(text("SELECT param, low_at, high_at FROM search_dates")))

    def utc(value: Any) -> str:  # SQLite keeps naive UTC text, PostgreSQL timestamptz
        at = datetime.fromisoformat(str(value))
        return (at.astimezone(UTC) if at.tzinfo else at).strftime("%Y-%m-%d %H:%M:%S.%f")

    assert sorted((p, utc(lo), utc(hi)) for p, lo, hi in dates) == sorted(
        (p, utc(lo), utc(hi)) for p, lo, hi in want.dates)
    assert ("date", "2026-01-02 09:00:00.000000", "2026-01-03 23:59:59.999999") in [
        (p, utc(lo), utc(hi)) for p, lo, hi in dates]
    assert any(system is None for _, system, _ in want.tokens)  # the NULL case is covered


def test_a_new_resource_and_its_first_version_are_stored_alike(database: Any) -> None:
    """On PostgreSQL the row and version 1 go in one statement: read, vread and history give
    the same body and time, and an owner is kept."""
    from sqlalchemy import event

    from hub.auth.subject import Subject
    from hub.store import service

    statements: list[str] = []
    event.listen(database.engine, "before_cursor_execute",
                 lambda *a: statements.append(a[2]) if "INSERT INTO resource" in a[2] else None)
    org = Subject.working_for("org-a", "c")
    with database.session(write=True) as s:
        made = service.create(s, org, resource={"resourceType": "Location", "name": "Ålgård"},
                              already_valid=True).stored
    assert len(statements) == (1 if database.dialect == "postgresql" else 2)
    with database.session(write=False) as s:
        read = service.read(s, org, resource_type="Location", resource_id=made.id)
        first = service.vread(s, org, resource_type="Location", resource_id=made.id,
                              version_id="1")
        assert service.owner_of(s, resource_type="Location", resource_id=made.id) == "org-a"
    assert read.body == first.body == made.body
    assert read.body is not None
    assert read.body["name"] == "Ålgård"
    assert read.last_updated_at == first.last_updated_at == made.last_updated_at


def test_new_resources_are_stored_as_the_exact_bytes_given(database: Any) -> None:
    """insert_resources keeps each body's bytes as given, in the row and its version 1 (on
    PostgreSQL they travel inside a JSON parameter): escapes, quotes, backslashes, letters
    and signs past ASCII, line breaks, spacing the hub did not choose, bytes that are not
    UTF-8; the pks in order."""
    from sqlalchemy import text

    from hub.store.repository import NewResource, insert_resources

    at = datetime(2026, 12, 5, 8, 30, 1, 234567, tzinfo=UTC)
    bodies = [
        r'{"resourceType":"Location","name":"\u00c5lg\u00e5rd \\u0000 \\","alias":["\\"]}',
        r'{ "resourceType" : "Location",' '\n\t' r'"name" : "Sola \ud83c\udfe5 DPS" }',
        r'{"resourceType":"Location","name":"Ålgård \"sør\" 🏥 ½","description":"a\nb\tc"}',
    ]
    new = [NewResource("Location", f"exact-{i}", b.encode(), at, "org-a" if i else None)
           for i, b in enumerate(bodies)]
    # and bytes that are not UTF-8 at all, as encryption at rest would make them
    new.append(NewResource("Location", "exact-3", b"\x00\xff\xfe\x80 \xc3(", at, "org-a"))
    with database.session(write=True) as s:
        pks = insert_resources(s, new)
    with database.session(write=False) as s:
        rows = {pk: (bytes(body), bytes(first), owner, lid) for pk, body, first, owner, lid in
                s.execute(text(
                    "SELECT r.pk, r.body, v.body, r.owner_org, r.logical_id FROM resources r "
                    "JOIN resource_versions v ON v.resource_pk = r.pk AND v.version_id = 1 "
                    "WHERE r.logical_id LIKE 'exact-%'"))}
    assert len(set(pks)) == 4
    for i, pk in enumerate(pks):
        body, first, owner, logical_id = rows[pk]
        assert body == first == new[i].body, i
        assert (logical_id, owner) == (f"exact-{i}", "org-a" if i else None)


def test_identifiers_looked_up_at_once_find_what_one_by_one_finds(database: Any) -> None:
    """find_by_identifiers (message intake, one statement) against find_by_identifier per
    identifier: with and without a system, a value shared across types and systems, and
    as an organisation that may see only part of it."""
    from hub.auth.subject import Subject
    from hub.store import service

    made = [("Encounter", "org-a", {"system": "urn:a", "value": "1"}),
            ("Encounter", "org-b", {"system": "urn:a", "value": "1"}),
            ("Encounter", "org-a", {"value": "1"}),
            ("Encounter", "org-a", {"system": "urn:b", "value": "1"}),
            ("Location", "org-a", {"system": "urn:a", "value": "1"}),
            ("Encounter", "org-b", {"system": "urn:a", "value": "2"})]
    with database.session(write=True) as s:
        for rtype, org, ident in made:
            body = {"resourceType": rtype, "identifier": [ident]}
            if rtype == "Encounter":
                body |= {"status": "planned", "class": {"code": "IMP"}}
            service.create(s, Subject.working_for(org, "c"), resource=body, already_valid=True)
    wanted = [service.Wanted(system, value, frozenset(types))
              for system in ("urn:a", "urn:b", None, "urn:none")
              for value in ("1", "2")
              for types in ({"Encounter"}, {"Location"}, {"Encounter", "Location"})]
    totals = []
    for subject in (Subject.hub_itself(), Subject.working_for("org-b", "c")):
        with database.session(write=False) as s:
            at_once = service.find_by_identifiers(s, subject, wanted)
            one_by_one = [service.find_by_identifier(
                s, subject, system=w.system, value=w.value, resource_types=w.resource_types)
                for w in wanted]
        assert [[r.relative_url for r in found] for found in at_once] == [
            [r.relative_url for r in found] for found in one_by_one]
        totals.append(sum(map(len, at_once)))
    assert totals[0] > totals[1] > 0, totals  # org-b finds its own, not all
    with database.session(write=False) as s:
        assert service.find_by_identifiers(s, Subject.hub_itself(), []) == []


def test_identifiers_looked_up_at_once_past_the_fixed_shapes(database: Any) -> None:
    """The hub's own look-up runs a statement per number of types and values up to a bound
    (hub/store/service.py `_by_identifiers`), SQLAlchemy's expanding one past it: both
    find the same."""
    from hub.auth.subject import Subject
    from hub.store import service

    values = [str(i) for i in range(service._FIXED_MOST + 2)]
    with database.session(write=True) as s:
        for value in values[::2]:
            service.create(s, Subject.working_for("org-a", "c"), already_valid=True, resource={
                "resourceType": "Location", "identifier": [{"system": "urn:a", "value": value}]})
    for n in (service._FIXED_MOST, service._FIXED_MOST + 1, len(values)):
        wanted = [service.Wanted("urn:a", v, frozenset({"Location"})) for v in values[:n]]
        with database.session(write=False) as s:
            found = service.find_by_identifiers(s, Subject.hub_itself(), wanted)
        assert [len(f) for f in found] == [1 - i % 2 for i in range(n)], n


def _token_scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if plan.get("Relation Name") == "search_tokens":
        yield plan
    for child in plan.get("Plans", []):
        yield from _token_scans(child)


PATIENTS = 3000


def test_postgresql_looks_up_identifiers_by_index_before_any_analyze(database: Any) -> None:
    """Message intake looks up every entry's identifiers at once. On PostgreSQL, with the
    token table never analyzed (a new hub, before autovacuum's first pass), the planner
    scanned every identifier token of the types and filtered the codes when they were an
    IN list: growing with every patient. The hub's own statement (one SELECT per value) reads
    only the matching tokens; the control, the same look-up as one IN, reads them all
    (PATIENTS of them: at 200 the planner rightly reads the table's few pages either way)."""
    if database.dialect != "postgresql":
        pytest.skip("PostgreSQL's planner")
    from sqlalchemy import bindparam, text

    from hub.auth.subject import Subject
    from hub.db.direct import Direct
    from hub.store import service

    with database.session(write=True) as s:
        s.execute(text("ALTER TABLE search_tokens SET (autovacuum_enabled = false)"))
        service.create_many(s, [service.New(Subject.working_for("org-a", "c"), {
            "resourceType": "Patient", "identifier": [{"system": "urn:a", "value": str(i)}]},
            str(uuid.uuid4())) for i in range(PATIENTS)])
    with database.session(write=False) as s:
        assert s.execute(text("SELECT last_analyze IS NULL AND last_autoanalyze IS NULL FROM "
                              "pg_stat_user_tables WHERE relname = 'search_tokens'")).scalar()
    types, values = ["Encounter", "Patient"], ["7", "no-such"]
    params = {**{f"t{i}": t for i, t in enumerate(types)},
              **{f"v{i}": v for i, v in enumerate(values)}}
    fixed = service._by_identifiers("postgresql", len(types), len(values))
    assert fixed is not None
    control = Direct(service._by_identifiers_query(  # what the fixed statement was before
        [bindparam(f"t{i}") for i in range(len(types))],
        [bindparam(f"v{i}") for i in range(len(values))]))

    def scanned(statement: Direct) -> tuple[int, int]:
        form = statement._form(database.engine.dialect, params)
        with database.session(write=False) as s:
            cursor = s.connection().connection.driver_connection.cursor()
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {form.sql}", form.bind(params))
            [plan] = cursor.fetchone()[0]
        scans = list(_token_scans(plan["Plan"]))
        assert scans, plan
        return (sum(n["Actual Rows"] * n["Actual Loops"] for n in scans),
                sum(n.get("Rows Removed by Filter", 0) for n in scans))

    assert scanned(fixed) == (1, 0)  # the token of "7", nothing read and filtered away
    rows, removed = scanned(control)
    assert rows == 1
    assert removed >= PATIENTS - 1  # the control reads them all
    with database.session(write=False) as s:  # and both find the same
        assert fixed.rows(s.connection(), params) == control.rows(s.connection(), params)

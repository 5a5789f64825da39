"""GET /fhir/AuditEvent and /ui/audit: auditors (signed in at /ui) search the trail by patient
and date; everyone else gets 403; the search is recorded in the trail it reads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from hub.audit import queries as audit_queries
from hub.db.engine import Database
from hub.db.types import utcnow
from tests.audit.trail import mark, since
from tests.factories import encounter, fnr, patient
from tests.plans import sqlite_plan, statements_of
from tests.ui.conftest import browser, make_user, org_id, sign_in  # noqa: F401 (fixtures)


@pytest.fixture
def story(client: TestClient) -> dict[str, str]:
    """Two patients with an Encounter each, written and read by the `client` fixture."""
    ids = {}
    for name, n in (("a", 2), ("b", 3)):
        pid = client.post("/fhir/Patient", json=patient(fnr(start=n))).json()["id"]
        eid = client.post("/fhir/Encounter", json=encounter(f"Patient/{pid}")).json()["id"]
        assert client.get(f"/fhir/Encounter/{eid}").status_code == 200
        ids[name], ids[f"{name}-encounter"] = pid, eid
    return ids


@pytest.fixture
def auditor(database: Database, browser: Any) -> TestClient:  # noqa: F811
    """A browser signed in as an auditor (the session cookie reaches /fhir)."""
    make_user(database, "revisor", role="auditor")
    web: TestClient = browser()
    assert sign_in(web, "revisor").status_code == 303
    return web


def _events(response: Any, *, own: bool = False) -> list[dict[str, Any]]:
    """The AuditEvents of a searchset; without `own`, not those of the auditor's own
    searches (each search of a patient is itself recorded under that patient)."""
    assert response.status_code == 200, response.text
    found = response.json()
    assert (found["resourceType"], found["type"]) == ("Bundle", "searchset")
    events = [e["resource"] for e in found.get("entry", [])]
    return events if own else [e for e in events if _index(e)["agent"] != "User/revisor"]


def _index(event: dict[str, Any]) -> dict[str, str]:
    (index,) = [e for e in event["extension"] if e["url"].endswith("/audit-index")]
    return {p["url"]: next(v for k, v in p.items() if k.startswith("value"))
            for p in index["extension"]}


def test_auditor_searches_by_patient_and_date(auditor: TestClient, database: Database,
                                              story: dict[str, str]) -> None:
    by_a = _events(auditor.get("/fhir/AuditEvent", params={"patient": f"Patient/{story['a']}"}))
    assert [_index(e)["subtype"] for e in by_a] == ["create", "create", "read"]
    assert all(_index(e)["patient"] == f"Patient/{story['a']}" for e in by_a)
    assert _events(auditor.get("/fhir/AuditEvent", params={"patient": story["a"]})) == by_a
    both = _events(auditor.get("/fhir/AuditEvent",
                               params={"patient": f"{story['a']},Patient/{story['b']}"}))
    assert len(both) == 6
    recorded = [e["recorded"] for e in both]
    assert recorded == sorted(recorded)  # oldest first

    today = utcnow().date().isoformat()
    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    assert _events(auditor.get("/fhir/AuditEvent", params=[
        ("patient", story["a"]), ("date", today)])) == by_a
    assert _events(auditor.get("/fhir/AuditEvent", params=[
        ("patient", story["a"]), ("date", f"ge{today}"), ("date", f"lt{tomorrow}")])) == by_a
    assert _events(auditor.get("/fhir/AuditEvent", params=[
        ("patient", story["a"]), ("date", f"gt{today}")])) == []
    assert _events(auditor.get("/fhir/AuditEvent", params=[
        ("patient", story["a"]), ("date", "lt2020-01-01")])) == []
    first = by_a[0]["recorded"]
    assert _events(auditor.get("/fhir/AuditEvent", params=[
        ("patient", story["a"]), ("date", f"gt{first}")])) == by_a[1:]


def test_bodies_are_the_signed_events_and_read_by_id(auditor: TestClient, database: Database,
                                                     story: dict[str, str]) -> None:
    stored = {r.event["id"]: r.event for r in since(database, 0)}
    found = _events(auditor.get("/fhir/AuditEvent", params={"patient": story["b"]}))
    for event in found:
        assert event == stored[event["id"]]
    one = auditor.get(f"/fhir/AuditEvent/{found[0]['id']}")
    assert one.status_code == 200
    assert one.json() == found[0]
    assert auditor.get("/fhir/AuditEvent/0d8a6f7e-0000-4000-8000-000000000000"
                       ).status_code == 404


def point_event_id(database: Database, seq: int, event_id: str) -> None:
    """Edit record `seq`'s event_id column to `event_id`, another record's: the database
    refuses it (unique, migration 0015), so the unique index is dropped first, as someone
    with database access could."""
    edit = text("UPDATE audit_records SET event_id = :e WHERE seq = :s")
    with pytest.raises(IntegrityError), database.engine.begin() as conn:
        conn.execute(edit, {"e": event_id, "s": seq})
    with database.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_audit_records_event"))
        conn.execute(text("CREATE INDEX ix_audit_records_event ON audit_records (event_id)"))
        conn.execute(edit, {"e": event_id, "s": seq})


def test_read_by_id_finds_the_record_by_its_body_not_by_an_edited_column(
        auditor: TestClient, database: Database, story: dict[str, str]) -> None:
    """GET /fhir/AuditEvent/{id} finds the record through the event_id column, and the body
    decides: a column edited in SQL to another record's id does not make that read give the
    edited record (its own id then finds nothing; `hub audit verify` names the edit)."""
    found = _events(auditor.get("/fhir/AuditEvent", params={"patient": story["a"]}))
    first, second = found[0], found[1]
    for event in (first, second):  # the control: both read by their ids
        one = auditor.get(f"/fhir/AuditEvent/{event['id']}")
        assert (one.status_code, one.json()) == (200, event)
    seq = next(r.seq for r in since(database, 0) if r.event["id"] == first["id"])
    point_event_id(database, seq, second["id"])
    one = auditor.get(f"/fhir/AuditEvent/{second['id']}")
    assert (one.status_code, one.json()) == (200, second)
    assert auditor.get(f"/fhir/AuditEvent/{first['id']}").status_code == 404


def test_read_by_id_is_an_index_search(database: Database, story: dict[str, str]) -> None:
    """Reading one record by id must not read every body of the trail (it did, with a LIKE,
    before migration 0014): SQLite's plan of the statement the hub runs."""
    if database.dialect != "sqlite":
        pytest.skip("reads SQLite's query plan; the index is the same on both")
    [record] = since(database, 0)[:1]

    def read_it() -> None:
        with database.session(write=False) as s:
            assert audit_queries.read(s, record.event["id"]) is not None

    [(statement, params)] = [(st, p) for st, p in statements_of(database.engine, read_it)
                             if "FROM audit_records" in st]
    plan = sqlite_plan(database.engine, statement, params)
    assert "ix_audit_records_event (event_id=?)" in plan, plan
    assert "SCAN " not in plan, plan


def test_agent_subtype_and_paging(auditor: TestClient, database: Database,
                                  story: dict[str, str]) -> None:
    creates = _events(auditor.get("/fhir/AuditEvent", params={"subtype": "create"}))
    assert len(creates) == 4
    agent = _index(creates[0])["agent"]
    assert _events(auditor.get("/fhir/AuditEvent", params=[
        ("agent", agent), ("subtype", "http://hl7.org/fhir/restful-interaction|read")])) != []
    assert _events(auditor.get("/fhir/AuditEvent", params={
        "agent": agent.split("/")[1], "subtype": "create"})) == creates
    assert _events(auditor.get("/fhir/AuditEvent", params={"agent": "Client/nobody"})) == []

    seen: list[str] = []
    url: str | None = "/fhir/AuditEvent?subtype=create,read&_count=4"
    pages = 0
    while url:
        page = auditor.get(url)
        seen += [e["id"] for e in _events(page)]
        url = next((ln["url"] for ln in page.json()["link"] if ln["relation"] == "next"), None)
        pages += 1
    assert pages == 2
    assert len(seen) == len(set(seen)) == 6  # 4 creates and 2 reads, each once


def test_count_0_total_and_summary_count_give_the_total(
        auditor: TestClient, story: dict[str, str]) -> None:
    """CONTRACT section 2: `_count=0` answers no entries and no `next` link, `_total=accurate`
    and `_summary=count` give `total`; with a patient, and without any filter. The control:
    an ordinary search carries no total."""
    creates = _events(auditor.get("/fhir/AuditEvent", params={"subtype": "create"}))
    assert len(creates) == 4
    for params in ({"subtype": "create", "_count": "0"},
                   {"subtype": "create", "_summary": "count"},
                   {"subtype": "create", "_total": "accurate", "_count": "1"}):
        found = auditor.get("/fhir/AuditEvent", params=params)
        assert found.status_code == 200, found.text
        body = found.json()
        assert body["total"] == 4, params
        if params.get("_count") == "0" or "_summary" in params:
            assert body["entry"] == []
            assert not [ln for ln in body["link"] if ln["relation"] == "next"]
        else:
            assert len(body["entry"]) == 1
            assert [ln for ln in body["link"] if ln["relation"] == "next"]
    about_a = auditor.get("/fhir/AuditEvent", params={
        "patient": f"Patient/{story['a']}", "subtype": "create", "_summary": "count"}).json()
    assert about_a["total"] == 2  # the Patient and its Encounter
    everything = auditor.get("/fhir/AuditEvent", params={"_count": "0"}).json()
    assert everything["total"] > 4
    assert "total" not in auditor.get("/fhir/AuditEvent", params={"subtype": "create"}).json()


def test_bad_parameters_are_400(auditor: TestClient) -> None:
    for params in ({"patinet": "x"}, {"date": "yesterday"}, {"date": "ne2026-01-01"},
                   {"_count": "-1"}, {"_count": "some"}, {"patient": "Group/g"},
                   {"_total": "maybe"}, {"_summary": "text"}):
        r = auditor.get("/fhir/AuditEvent", params=params)
        assert r.status_code == 400, params
        assert r.json()["resourceType"] == "OperationOutcome"


def test_only_auditors(client: TestClient, database: Database, browser: Any,  # noqa: F811
                       org_id: str, story: dict[str, str]) -> None:  # noqa: F811
    event_id = since(database, 0)[0].event["id"]
    make_user(database, "kari", role="coordinator", organization_id=org_id)
    make_user(database, "root", role="admin")
    for name in ("kari", "root"):
        person = browser()
        assert sign_in(person, name).status_code == 303
        assert person.get("/fhir/AuditEvent").status_code == 403
        assert person.get(f"/fhir/AuditEvent/{event_id}").status_code == 403
        assert person.get("/ui/audit").status_code == 403
    # A client's token, whatever its scopes (system/*.*), reaches no AuditEvent.
    for answer in (client.get("/fhir/AuditEvent"), client.get(f"/fhir/AuditEvent/{event_id}"),
                   client.get(f"/fhir/AuditEvent/{event_id}/_history"),
                   client.post("/fhir/AuditEvent/_search"),
                   client.put(f"/fhir/AuditEvent/{event_id}", json={})):
        assert answer.status_code == 403, answer.request.url
    assert browser().get("/fhir/AuditEvent").status_code == 401
    refused = [r for r in since(database, 0) if r.event.get("outcome") == "4"
               and any(e.get("description", "").startswith("GET /fhir/AuditEvent")
                       for e in r.event.get("entity", []))]
    assert {r.agent for r in refused} >= {"User/kari", "User/root", "anonymous"}


def test_reading_the_trail_is_recorded(auditor: TestClient, database: Database,
                                       story: dict[str, str]) -> None:
    m = mark(database)
    _events(auditor.get("/fhir/AuditEvent", params={"patient": story["a"]}), own=True)
    records = since(database, m)
    assert [(r.subtype, r.agent, r.patient_ref) for r in records] == [
        ("search-type", "User/revisor", f"Patient/{story['a']}")]
    (query,) = [e for e in records[0].event["entity"] if e["role"]["code"] == "24"]
    assert query["description"] == f"patient={story['a']}"
    assert auditor.put(f"/fhir/AuditEvent/{records[0].event['id']}", json={}).status_code == 405


def test_the_audit_page(auditor: TestClient, database: Database,
                        story: dict[str, str]) -> None:
    today = utcnow().date().isoformat()
    page = auditor.get("/ui/audit", params={"patient": story["a"], "from": today, "to": today})
    assert page.status_code == 200
    assert page.text.count(f"Patient/{story['a']}") >= 3
    assert "create" in page.text
    assert "success" in page.text
    assert f"Patient/{story['b']}" not in page.text
    bad = auditor.get("/ui/audit", params={"from": "last week"})
    assert bad.status_code == 400
    assert "give a date" in bad.text
    assert [r.subtype for r in since(database, 0) if r.agent == "User/revisor"] == [
        "login", "search-type"]


EDITS = {  # (SQLite, PostgreSQL) SQL that leaves a body no AuditEvent can be read from
    "not UTF-8": ("CAST(X'FF' AS TEXT) || body", "'\\xff'::bytea || body"),
    "not JSON": ("'x' || body", "'x'::bytea || body"),
    "not an object": ("X'5B315D'", "'[1]'::bytea"),
}
WHY = {"not UTF-8": "its body is not UTF-8 text", "not JSON": "its body is not JSON",
       "not an object": "its body is not an AuditEvent"}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_record_whose_body_cannot_be_read_is_an_outcome_not_a_500(
        auditor: TestClient, database: Database, story: dict[str, str], edit: str) -> None:
    """An auditor searching a trail in which a body was edited in SQL into something that is
    no AuditEvent gets the page, the other records as they are and the edited one named in an
    OperationOutcome (search mode outcome); reading by id still works (PostgreSQL: the LIKE
    over the bodies met a body that is not UTF-8)."""
    query = {"patient": story["a"]}
    found = _events(auditor.get("/fhir/AuditEvent", params=query))
    assert len(found) == 3
    first = next(r for r in since(database, 0) if r.event["id"] == found[0]["id"])
    sql = EDITS[edit][database.dialect == "postgresql"]
    with database.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE audit_records SET body = {sql} WHERE seq = {first.seq}")

    page = auditor.get("/fhir/AuditEvent", params=query)
    assert page.status_code == 200, page.text
    entries = page.json()["entry"]
    assert [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"
            and _index(e["resource"])["agent"] != "User/revisor"] == [
        e["id"] for e in found[1:]]
    [outcome] = [e["resource"] for e in entries if e["search"]["mode"] == "outcome"]
    [issue] = outcome["issue"]
    assert issue["severity"] == "error"
    assert issue["diagnostics"].startswith(f"Audit record {first.seq} (recorded ")
    assert f"create by {first.agent}, about Patient/{story['a']}) cannot be read: {WHY[edit]}" \
        in issue["diagnostics"]
    one = auditor.get(f"/fhir/AuditEvent/{found[1]['id']}")
    assert (one.status_code, one.json()) == (200, found[1])
    assert auditor.get(f"/fhir/AuditEvent/{found[0]['id']}").status_code == 404
    html = auditor.get("/ui/audit", params={"patient": story["a"]})
    assert html.status_code == 200
    assert f"Record {first.seq} cannot be read" in html.text


def test_search_by_id_goes_by_the_body_and_combines_with_the_rest(
        auditor: TestClient, database: Database, story: dict[str, str]) -> None:
    """`_id` (CONTRACT section 2 lists it for search) finds records through the event_id
    index; each value is OR'd, each parameter AND'ed; the body decides, as for a read."""
    first, second, third = _events(auditor.get("/fhir/AuditEvent",
                                               params={"patient": story["a"]}))[:3]

    def by(*params: tuple[str, str]) -> list[dict[str, Any]]:
        return _events(auditor.get("/fhir/AuditEvent", params=list(params)))

    assert by(("_id", first["id"])) == [first]
    assert by(("_id", f"{third['id']},{first['id']}")) == [first, third]  # oldest first
    assert by(("_id", first["id"]), ("_id", second["id"])) == []
    assert by(("_id", first["id"]), ("patient", story["b"])) == []
    assert by(("_id", first["id"]), ("patient", story["a"])) == [first]
    assert by(("_id", "0d8a6f7e-0000-4000-8000-000000000000")) == []
    r = auditor.get("/fhir/AuditEvent", params={"_id": "not an id"})
    assert r.status_code == 400, r.text
    assert "_id" in r.json()["issue"][0]["diagnostics"]
    # an event_id edited in SQL to another record's id: that id still finds only its record
    seq = next(r.seq for r in since(database, 0) if r.event["id"] == first["id"])
    point_event_id(database, seq, second["id"])
    assert by(("_id", second["id"])) == [second]
    assert by(("_id", first["id"])) == []  # hidden by its edited column, as from a read
    # found through the column (second) and its body's id (first) is asked for too
    assert by(("_id", f"{first['id']},{second['id']}")) == [first, second]


def test_the_capability_statement_lists_the_audit_search_as_it_is(client: TestClient) -> None:
    """"Lists exactly what works": AuditEvent's search parameters are the parser's."""
    rest = client.get("/fhir/metadata").json()["rest"][0]
    (audit,) = [r for r in rest["resource"] if r["type"] == "AuditEvent"]
    listed = {p["name"] for p in audit["searchParam"]}
    assert listed == set(audit_queries.PARAMS) - {"_count", "_total", "_summary", "_after",
                                                  "_format"}

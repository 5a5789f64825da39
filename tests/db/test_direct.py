"""Statements run on the driver's cursor (hub/db/direct.py) write what SQLAlchemy would
write, return rows in the order asked, fail as SQLAlchemy fails (so the hub's handlers for a
taken key and a database away still catch them), and refuse statements they cannot run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql.expression import (
    ReleaseSavepointClause,
    RollbackToSavepointClause,
    SavepointClause,
)

from hub.config import Settings
from hub.db.direct import PIPELINE_FROM, Direct
from hub.db.engine import Database
from hub.db.types import UTCDateTime, utcnow

META = MetaData()
PROBE = Table(
    "direct_probe", META,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(40), nullable=False, unique=True),
    Column("at", UTCDateTime(), nullable=True),
    Column("flag", Boolean, nullable=False),
    Column("body", LargeBinary, nullable=True),
    Column("made", UTCDateTime(), nullable=True, default=utcnow),  # a Python-side default
)
ROW_KEYS = ("name", "at", "flag", "body", "made")
INSERT = Direct(insert(PROBE))
INSERT_RETURNING = Direct(insert(PROBE).returning(PROBE.c.id))
RENAME = Direct(update(PROBE).where(PROBE.c.name == bindparam("old")).values(
    name=bindparam("new")))


@pytest.fixture
def probe(database: Database) -> Iterator[Database]:
    META.create_all(database.engine)
    yield database
    META.drop_all(database.engine)


def row(name: str, at: datetime | None = None, **other: object) -> dict[str, object]:
    values = {"name": name, "at": at, "flag": False, "body": None, "made": None}
    values.update(other)
    return values


def test_values_are_written_as_sqlalchemy_writes_them(probe: Database) -> None:
    # an aware time in another zone, a bool, bytes with a zero byte, a NULL
    at = datetime(2026, 12, 3, 23, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    with probe.session(write=True) as s:
        conn = s.connection()
        INSERT.run(conn, row("direct", at, flag=True, body=b"a\x00b"))
        conn.execute(insert(PROBE), row("core", at, flag=True, body=b"a\x00b"))
        # a few rows (on PostgreSQL one statement of several VALUES rows): each row's values
        # bound through the column types, the later rows' too
        INSERT.run_many(conn, [row("many-1"), row("many-2", at, flag=True, body=b"a\x00b")])
    with probe.session(write=False) as s:
        got = {r.name: r for r in s.execute(select(PROBE))}
        # the same instant finds the rows of both paths: stored alike, so compared alike
        same = s.scalar(select(func.count()).select_from(PROBE).where(PROBE.c.at == at))
    assert same == 3
    for name in ("direct", "core", "many-2"):
        assert got[name].at == at
        assert got[name].at.tzinfo is not None
        assert got[name].at.astimezone(UTC).hour == 22
        assert (got[name].flag, got[name].body, got[name].made) == (True, b"a\x00b", None)
    assert got["many-1"].at is None
    assert got["many-1"].flag is False


def test_rows_come_back_in_the_order_asked_and_updates_count(probe: Database) -> None:
    names = [f"n{i}" for i in (5, 1, 4, 2, 3)]
    few = ["f9", "f7", "f8"]  # below PIPELINE_FROM: on PostgreSQL one statement
    with probe.session(write=True) as s:
        ids = [i for (i,) in INSERT_RETURNING.rows_many(s.connection(), [row(n) for n in names])]
        few_ids = [i for (i,) in INSERT_RETURNING.rows_many(s.connection(),
                                                             [row(n) for n in few])]
        pair = [i for (i,) in INSERT_RETURNING.rows_many(s.connection(),
                                                          [row("p2"), row("p1")])]
        assert INSERT_RETURNING.rows_many(s.connection(), []) == []
        assert RENAME.run(s.connection(), {"old": "n4", "new": "n4b"}) == 1
        assert RENAME.run(s.connection(), {"old": "none", "new": "x"}) == 0  # control
    with probe.session(write=False) as s:
        by_id = {i: n for i, n in s.execute(select(PROBE.c.id, PROBE.c.name))}
    assert [by_id[i] for i in ids] == ["n5", "n1", "n4b", "n2", "n3"]
    assert ids == sorted(ids)
    assert [by_id[i] for i in few_ids] == few
    assert [by_id[i] for i in pair] == ["p2", "p1"]


def test_a_taken_key_is_sqlalchemys_integrity_error_and_the_rest_stands(
        probe: Database) -> None:
    with probe.session(write=True) as s:
        INSERT.run(s.connection(), row("taken"))
        with pytest.raises(IntegrityError), s.begin_nested():
            INSERT.run(s.connection(), row("taken"))
        with pytest.raises(IntegrityError), s.begin_nested():
            INSERT_RETURNING.rows_many(s.connection(), [row("fresh"), row("taken")])
        INSERT.run(s.connection(), row("other"))  # control: the transaction goes on
    with probe.session(write=False) as s:
        names = sorted(s.scalars(select(PROBE.c.name)))
    assert names == ["other", "taken"]  # the failed batch left nothing


def test_statements_it_cannot_run_are_refused_before_they_run(probe: Database) -> None:
    seen: list[str] = []
    event.listen(probe.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    refused = {
        "a Python-side default": (Direct(insert(PROBE)),
                                  {k: v for k, v in row("x").items() if k != "made"}),
        "an expanding IN": (Direct(select(PROBE.c.id).where(
            PROBE.c.name.in_(bindparam("names", expanding=True)))), {"names": ["x"]}),
        "a number column": (Direct(select(cast(PROBE.c.id, Numeric(10, 2)))), {}),
    }
    with probe.session(write=True) as s:
        for why, (statement, values) in refused.items():
            with pytest.raises(TypeError):
                statement.rows(s.connection(), values)
            assert not [q for q in seen if "direct_probe" in q], why
        # control: a plain select of a plain column runs
        assert Direct(select(PROBE.c.name)).rows(s.connection(), {}) == []


def test_rows_come_back_as_sqlalchemy_gives_them(probe: Database) -> None:
    at = datetime(2026, 12, 3, 23, 30, 0, 123456, tzinfo=UTC)
    with probe.session(write=True) as s:
        INSERT.run_many(s.connection(), [row("a", at, flag=True), row("b", None, flag=False)])
    # a literal the statement holds ("b" is not given) and a UTC datetime and a bool back
    both = Direct(select(PROBE.c.name, PROBE.c.at, PROBE.c.flag).where(
        (PROBE.c.name == bindparam("n")) | (PROBE.c.name == "b")).order_by(PROBE.c.name))
    with probe.session(write=False) as s:
        got = both.rows(s.connection(), {"n": "a"})
        core = [tuple(r) for r in s.execute(both.statement, {"n": "a"})]
    assert got == core == [("a", at, True), ("b", None, False)]
    assert got[0][1].tzinfo is not None
    assert type(got[0][2]) is bool


def test_listeners_see_each_driver_call(probe: Database) -> None:
    seen: list[tuple[str, bool]] = []
    event.listen(probe.engine, "before_cursor_execute",
                 lambda _c, _k, sql, _p, _x, many: seen.append((sql, many)))
    lots = PIPELINE_FROM
    with probe.session(write=True) as s:
        INSERT.run_many(s.connection(), [row("a"), row("b")])
        INSERT_RETURNING.rows_many(s.connection(), [row("c"), row("d")])
        INSERT.run_many(s.connection(), [row(f"e{i}") for i in range(lots)])
        INSERT_RETURNING.rows_many(s.connection(), [row(f"f{i}") for i in range(lots)])
    with probe.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(PROBE)) == 4 + 2 * lots
    probes = [many for sql, many in seen if sql.startswith("INSERT INTO direct_probe")]
    if probe.dialect == "postgresql":
        # a few rows: one (prepared) INSERT of that many VALUES rows; from PIPELINE_FROM,
        # one pipelined executemany
        assert probes == [False, False, True, True]
        few = [q for q, _many in seen if q.startswith("INSERT INTO direct_probe")][:2]
        assert [q.count("), (") for q in few] == [1, 1], few
    else:  # an executemany; a call per row where rows come back (the driver cannot)
        assert probes == [True, False, False, True] + [False] * lots


def test_postgresql_prepares_the_fixed_statements_and_never_a_search(
        probe: Database) -> None:
    # hub/db/direct.py: a Direct statement is parsed and planned once per connection; a
    # statement through SQLAlchemy (a search, whose plan must look at its values) never is,
    # however often it runs (PostgreSQL would switch it to a generic plan after five)
    if probe.dialect != "postgresql":
        pytest.skip("server-side prepared statements are PostgreSQL's")
    search = select(PROBE.c.id).where(PROBE.c.name == bindparam("n"))
    prepared = text("SELECT statement FROM pg_prepared_statements")
    with probe.session(write=True) as s:
        conn = s.connection()
        for i in range(8):
            INSERT.run(conn, row(f"p{i}"))
            conn.execute(search, {"n": f"p{i}"}).all()
        INSERT.run_many(conn, [row("q1"), row("q2")])
        kept = [q for (q,) in conn.execute(prepared) if "direct_probe" in q]
    # the insert, once however often it ran, and its form for two rows at once
    assert len(kept) == 2, kept
    assert all(q.lstrip().upper().startswith("INSERT INTO DIRECT_PROBE") for q in kept)
    assert sorted(q.count("), (") for q in kept) == [0, 1]
    assert not [q for q in kept if q.lstrip().upper().startswith("SELECT")]


def test_with_prepare_off_nothing_is_prepared_and_the_statements_still_run(
        probe: Database, settings: Settings) -> None:
    # HUB_DB_PREPARE=false, for a pooler in transaction mode that cannot keep a connection's
    # prepared statements: the Direct statements run unprepared (the test above is the
    # control: the same statements prepared when the setting is on, as by default)
    if probe.dialect != "postgresql":
        pytest.skip("server-side prepared statements are PostgreSQL's")
    off = Database.connect(settings.model_copy(update={"db_prepare": False}))
    try:
        with off.session(write=True) as s:
            conn = s.connection()
            for i in range(8):
                INSERT.run(conn, row(f"u{i}"))
            INSERT.run_many(conn, [row("v1"), row("v2")])
            got = INSERT_RETURNING.rows(conn, row("w"))
            kept = [q for (q,) in conn.execute(text("SELECT statement FROM pg_prepared_statements"))
                    if "direct_probe" in q]
        assert kept == []
        assert len(got) == 1
        with off.session(write=False) as s:
            assert s.scalar(select(func.count()).select_from(PROBE)) == 11
    finally:
        off.dispose()


def test_savepoints_keep_and_undo_as_sqlalchemys_own_statements(probe: Database) -> None:
    # hub/db/direct.py's plain_savepoints: the engine's savepoints run as plain SQL, the very
    # statements SQLAlchemy's compiler writes (names quoted where needed), with their meaning
    seen: list[str] = []
    event.listen(probe.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    dialect = probe.engine.dialect
    with probe.session(write=True) as s:
        INSERT.run(s.connection(), row("outer"))
        with s.begin_nested():
            INSERT.run(s.connection(), row("released"))
        with suppress(LookupError), s.begin_nested():
            INSERT.run(s.connection(), row("undone"))
            raise LookupError
        conn = s.connection()
        dialect.do_savepoint(conn, "select")  # a reserved word: quoted, as the compiler does
        INSERT.run(conn, row("undone too"))
        dialect.do_rollback_to_savepoint(conn, "select")
        dialect.do_release_savepoint(conn, "select")
        INSERT.run(conn, row("after"))  # control: the transaction goes on
    with probe.session(write=False) as s:
        names = sorted(s.scalars(select(PROBE.c.name)))
    assert names == ["after", "outer", "released"]
    said = [q for q in seen if "SAVEPOINT" in q]
    compiled = [str(clause(name).compile(dialect=dialect)) for clause, name in (
        (SavepointClause, "select"), (RollbackToSavepointClause, "select"),
        (ReleaseSavepointClause, "select"))]
    at = said.index(compiled[0])
    assert said[at:at + 3] == compiled
    assert compiled[0] != "SAVEPOINT select"  # quoted
    assert sum("ROLLBACK TO SAVEPOINT" in q for q in said) == 2
    assert sum(q.startswith("RELEASE SAVEPOINT") for q in said) >= 2


def test_a_connection_the_server_dropped_is_operational_error_then_replaced(
        probe: Database, db_url: str) -> None:
    if probe.dialect != "postgresql":
        pytest.skip("needs a database server that can drop a connection")
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    caught: list[BaseException] = []
    invalidated: list[bool] = []
    try:
        with suppress(OperationalError), probe.session(write=True) as s:
            conn = s.connection()
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            with admin.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            try:
                INSERT.run(conn, row("lost"))
            except BaseException as exc:
                # known dropped before the session's own rollback finds out (asserted after
                # the block: the rollback's own error would hide an assertion here)
                caught.append(exc)
                invalidated.append(conn.invalidated)
                raise
        assert invalidated == [True]
        assert len(caught) == 1
        assert isinstance(caught[0], OperationalError)
        assert caught[0].connection_invalidated
        with probe.session(write=True) as s:  # control: the next session works
            INSERT.run(s.connection(), row("kept"))
        with probe.session(write=False) as s:
            assert list(s.scalars(select(PROBE.c.name))) == ["kept"]
    finally:
        admin.dispose()

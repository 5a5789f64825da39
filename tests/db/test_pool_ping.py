"""How the hub's PostgreSQL connections are handed out (hub/db/engine.py
`_ping_when_spoken_to`): a healthy idle connection costs no round trip to the server, and one
the server has ended (a restart, a failover, pg_terminate_backend) is never handed out; and a
one-statement read (`Database.one_read`) opens no transaction."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from hub.db.engine import Database


def _pg(database: Database) -> None:
    if database.dialect != "postgresql" or database.engine.dialect.driver != "psycopg":
        pytest.skip("the check looks at psycopg's socket to PostgreSQL")


def test_a_healthy_idle_connection_is_handed_out_without_a_round_trip(
        database: Database, tmp_path: Path) -> None:
    _pg(database)
    engine = database.engine
    with engine.connect() as c:
        c.exec_driver_sql("SELECT 1")
        raw = c.connection.dbapi_connection
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as out:
        raw.pgconn.trace(out.fileno())  # libpq writes every protocol message it sends
        try:
            with engine.connect() as c:  # the pool's check runs here
                assert c.connection.dbapi_connection is raw
            checkout = trace.stat().st_size
            with engine.connect() as c:  # control: a statement does show in the trace
                c.exec_driver_sql("SELECT 1")
        finally:
            raw.pgconn.untrace()
    assert checkout == 0, trace.read_text()[:500]
    assert trace.stat().st_size > 0


def test_a_connection_the_server_ended_is_not_handed_out(
        database: Database, db_url: str) -> None:
    _pg(database)
    engine = database.engine
    with engine.connect() as c:
        old_pid = c.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as other:
            assert other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": old_pid}).scalar()
            deadline = time.monotonic() + 10
            while other.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"),
                                {"p": old_pid}).scalar() and time.monotonic() < deadline:
                time.sleep(0.05)
        # the pooled connection is dead: the check finds it, the pool opens a new one, and
        # the caller sees no error
        with engine.connect() as c:
            new_pid = c.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        assert new_pid != old_pid
    finally:
        admin.dispose()


def test_a_one_statement_read_sends_no_begin_and_commit(database: Database) -> None:
    # Database.one_read (a token's look-up before every request): on PostgreSQL the
    # statement runs in autocommit, no transaction left open on the server; the control, a
    # read session, has one open after its first statement
    _pg(database)
    from psycopg.pq import TransactionStatus

    with database.one_read() as s:
        assert s.execute(text("SELECT 1")).scalar() == 1
        raw = s.connection().connection.dbapi_connection
        assert raw.pgconn.transaction_status == TransactionStatus.IDLE
    with database.session(write=False) as s:
        assert s.execute(text("SELECT 1")).scalar() == 1
        raw = s.connection().connection.dbapi_connection
        assert raw.pgconn.transaction_status == TransactionStatus.INTRANS
    with database.one_read() as s:  # the pool's connections are back to transactions after
        pass
    with database.session(write=False) as s:
        s.execute(text("SELECT 1"))
        raw = s.connection().connection.dbapi_connection
        assert raw.pgconn.transaction_status == TransactionStatus.INTRANS


def test_a_connection_past_descriptor_1024_is_kept(database: Database, db_url: str) -> None:
    # a busy process has many files open; select() cannot look at a descriptor past 1024
    # (FD_SETSIZE), and a check that failed there would open a new connection every time
    _pg(database)
    import os
    import resource

    from hub.config import Settings
    from hub.db.engine import make_engine

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip("this process may not open 1,200 files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    engine = make_engine(db_url, Settings(database_url=db_url))
    try:
        with engine.connect() as c:
            pid = c.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            assert c.connection.dbapi_connection.pgconn.socket > 1024
        with engine.connect() as c:  # handed out again, not replaced
            assert c.exec_driver_sql("SELECT pg_backend_pid()").scalar() == pid
    finally:
        engine.dispose()
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

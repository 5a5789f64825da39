"""hub.db.locks on PostgreSQL: names stay locked until the transaction ends, all of them,
taken in one statement; on SQLite it does nothing (the write lock already excludes)."""

from __future__ import annotations

from sqlalchemy import event, text

from hub.db.engine import Database
from hub.db.locks import lock_key, lock_names


def _free(db: Database, name: str) -> bool:
    """Whether another transaction could take `name` now (and lets it go again)."""
    with db.engine.connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                                {"k": lock_key(name)}).scalar())
        conn.rollback()
        return got


def test_every_name_stays_locked_until_the_transaction_ends(database: Database) -> None:
    names = [f"Patient|fnr|{n}" for n in range(5)] + ["Encounter|urn|x"]
    statements: list[str] = []
    event.listen(database.engine, "before_cursor_execute",
                 lambda *args: statements.append(args[2]))
    with database.session(write=True) as session:
        lock_names(session, [*names, names[0]])  # a name twice is one lock
        if database.dialect == "postgresql":
            assert [n for n in names if _free(database, n)] == []
            assert _free(database, "Patient|fnr|other")  # control: other names are free
    locking = [s for s in statements if "pg_advisory_xact_lock" in s]
    assert len(locking) == (1 if database.dialect == "postgresql" else 0)
    if database.dialect == "postgresql":
        assert all(_free(database, n) for n in names)


def test_no_names_no_statement(database: Database) -> None:
    statements: list[str] = []
    event.listen(database.engine, "before_cursor_execute",
                 lambda *args: statements.append(args[2]))
    with database.session(write=True) as session:
        lock_names(session, [])
    assert not [s for s in statements if "advisory" in s]

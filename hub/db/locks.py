"""Transaction-scoped locks on names, for deciding "is it there yet?" safely across processes.

Two transactions that both look something up, find nothing and create it would make two of
it. On PostgreSQL, where transactions run side by side, `lock_names` takes an advisory lock per
name until the transaction ends, so the second waits for the first to commit and then finds
what it created (READ COMMITTED: each statement sees what is committed). On SQLite writers
already run one at a time under the database's write lock, so there is nothing to do.

Names are hashed to PostgreSQL's 64-bit lock keys (a collision only makes two unrelated names
wait for each other) and locked in key order, so that two transactions locking overlapping
names cannot deadlock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

from hub.db.direct import Direct

# One round trip for any number of names. The keys go in sorted; ORDER BY the position makes
# PostgreSQL take them in that order (it evaluates the select list after sorting).
# Run on the driver's cursor as a prepared statement (hub/db/direct.py): through
# Session.execute it cost 2-3 % of an API process's CPU in bench/ingest.py on PostgreSQL.
_LOCK_ALL = Direct(text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) "
                        "WITH ORDINALITY AS t(k, n) ORDER BY n"))


def identity_name(resource_type: str, system: object, value: object) -> str:
    """The lock name of one identity: a resource of `resource_type` under this identifier.
    Message intake and REST writes of a Patient lock the same names for one person."""
    return f"{resource_type}|{system}|{value}"


def lock_key(name: str) -> int:
    """The signed 64-bit advisory lock key of `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock_names(session: Session, names: Iterable[str]) -> None:
    """Hold a lock on each of `names` until the session's transaction ends (PostgreSQL; on
    SQLite the write transaction already excludes every other writer)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted({lock_key(n) for n in names})
    if keys:
        _LOCK_ALL.rows(session.connection(), {"keys": keys})

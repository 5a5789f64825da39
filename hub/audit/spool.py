"""Audit records of reads, committed without the database's write lock (issue #16).

A read (read, vread, history, search) runs in a read-only transaction; its records are then
committed by `ReadAudit.append` before the answer goes out. Where they go:

- SQLite: a spool file beside the database, `<database file>-audit-spool.db` (WAL,
  synchronous=FULL, its own writers' queue, hub/db/engine.py). On SQLite a read never
  waits for the main write lock (WAL readers wait for no one), and an audited read is no
  longer a write transaction queued behind ingest's. One thread per process commits the
  records of all reads waiting at that moment in one transaction (group commit), so the
  spool's lock is held for one insert and its fsync at a time.
- PostgreSQL: straight into audit_records, in a short transaction of its own (a plain
  insert that waits for no one; there is no spool).

If the read's transaction fails nothing is appended here (the error handler records the
failure); if the append fails the read fails too (AuditUnavailableError, 503): nothing is
disclosed unaudited.

Moving (`ReadAudit.move`, run by every sealer before each pass, and before auditors'
queries): spool records, in spool id order, are inserted into audit_records as they are
(body, hash, signature and search columns unchanged; the sealer checks and seals them like
any record) in one main-database write transaction that also records, in
audit_spool_marks, the last spool id moved. Spool ids never come back (AUTOINCREMENT) and
the spool names itself with a uuid, so the mark is exact: a mover reads the mark again
under the write lock and moves only what is above it, then deletes what is at or below it
from the spool. A crash between the move's commit and the delete leaves records that the
next mover deletes without moving; any number of movers in any number of processes move
each record exactly once.

A spool record is not in the tree until moved and sealed. `check` gives what `hub audit
verify` can say about them: how many are waiting, and the first whose hash, signature or
search columns are wrong.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import (
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from hub.audit.models import AuditSpoolMarkRow
from hub.audit.records import Entry, columns_agree, insert_rows, instant_text, signed_rows
from hub.audit.signing import Signer, verify_signature
from hub.config import Settings
from hub.db.engine import Database
from hub.db.types import UTCDateTime
from hub.errors import AuditUnavailableError

log = logging.getLogger("hub.audit.spool")
SUFFIX = "-audit-spool.db"
MOVE_BATCH = 5000
"""Spool records moved per main-database transaction at most."""

_meta = MetaData()
_SPOOL = Table(
    "audit_spool", _meta,
    Column("id", Integer, primary_key=True),  # AUTOINCREMENT: an id is never handed out twice
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("patient_ref", String(128)),
    Column("agent", String(255), nullable=False),
    Column("action", String(1), nullable=False),
    Column("subtype", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("leaf_hash", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("key_id", String(64), nullable=False),
    sqlite_autoincrement=True,
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spool_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_spool (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "recorded_at DATETIME NOT NULL, patient_ref VARCHAR(128), agent VARCHAR(255) NOT NULL, "
    "action VARCHAR(1) NOT NULL, subtype VARCHAR(64) NOT NULL, body BLOB NOT NULL, "
    "leaf_hash VARCHAR(64) NOT NULL, signature VARCHAR(128) NOT NULL, "
    "key_id VARCHAR(64) NOT NULL)",
)
_INSERT = insert(_SPOOL)
_COLUMNS = ("recorded_at", "patient_ref", "agent", "action", "subtype", "body", "leaf_hash",
            "signature", "key_id")
_MARK = AuditSpoolMarkRow


def spool_file(db: Database) -> str | None:
    """The spool file of an SQLite database file; None for PostgreSQL or an in-memory SQLite
    database (their reads append to audit_records directly)."""
    if db.dialect != "sqlite":
        return None
    name = db.engine.url.database
    if not name or name == ":memory:" or "mode=memory" in str(db.engine.url):
        return None
    return f"{os.path.abspath(name)}{SUFFIX}"


@dataclass(frozen=True)
class SpoolState:
    """What `check` found in the spool: records waiting to be moved, and the first that
    could not be sealed (None when all are good)."""

    waiting: int
    problem: str | None = None


class ReadAudit:
    """Commits the audit records of reads (see the module docstring); one per process and
    database. `close()` when done. `create=False` opens only a spool file that exists
    (for looking: without one, `check` finds nothing waiting)."""

    def __init__(self, db: Database, settings: Settings | None = None, *,
                 create: bool = True) -> None:
        self.db = db
        self.path = spool_file(db)
        self.spool: Database | None = None
        self.spool_id = ""
        self._guard = threading.Lock()
        self._group: _GroupCommitter | None = None
        if self.path is not None and (create or os.path.exists(self.path)):
            self.spool = Database.connect(settings or Settings(), f"sqlite:///{self.path}")
            self.spool_id = self._prepare(self.spool)

    @staticmethod
    def _prepare(spool: Database) -> str:
        """Create the spool's tables if missing; its uuid (made once, kept in the file)."""
        with spool.session(write=True) as s:
            for statement in _SCHEMA:
                s.execute(text(statement))
            found = s.scalar(text("SELECT value FROM spool_meta WHERE key = 'spool_id'"))
            if found is None:
                found = str(uuid.uuid4())
                s.execute(text("INSERT INTO spool_meta (key, value) VALUES ('spool_id', :v)"),
                          {"v": found})
            return str(found)

    def append(self, signer: Signer, entries: Sequence[Entry]) -> None:
        """Commit the records of `entries` durably, without the main database's write lock
        on SQLite. Raises AuditUnavailableError when they cannot be committed (and
        ValueError for entries append_all would refuse)."""
        rows = signed_rows(signer, entries)
        if not rows:
            return
        try:
            if self.spool is None:
                with self.db.session(write=True) as s:
                    insert_rows(s, rows)
            else:
                self._committer().commit(rows)
        except Exception as exc:
            log.exception("could not commit the audit record of a read")
            raise AuditUnavailableError(
                "The audit trail cannot take the record of this read just now, so nothing is "
                "disclosed; send the request again later.") from exc

    def _committer(self) -> _GroupCommitter:
        with self._guard:
            if self._group is None:
                assert self.spool is not None
                self._group = _GroupCommitter(self.spool)
            return self._group

    def _moved_through(self, session: Session) -> int:
        found = session.scalar(select(_MARK.moved_through).where(_MARK.spool_id == self.spool_id))
        return int(found or 0)

    def move(self, limit: int = MOVE_BATCH) -> int:
        """Move up to `limit` spool records into audit_records, oldest first, exactly once;
        how many this call moved (0 without a spool). Then drop what is moved from the
        spool. Safe to run anywhere at any time (see the module docstring)."""
        if self.spool is None:
            return 0
        with self.db.session(write=False) as s:
            done = self._moved_through(s)
        with self.spool.session(write=False) as s:
            rows = s.execute(select(_SPOOL).where(_SPOOL.c.id > done)
                             .order_by(_SPOOL.c.id).limit(limit)).all()
            oldest = s.scalar(select(func.min(_SPOOL.c.id)))
        moved = 0
        if rows:
            with self.db.session(write=True) as s:
                done = self._moved_through(s)  # again, under the write lock
                todo = [r for r in rows if r.id > done]
                if todo:
                    insert_rows(s, [{c: getattr(r, c) for c in _COLUMNS} for r in todo])
                    if done:
                        s.execute(update(_MARK).where(_MARK.spool_id == self.spool_id)
                                  .values(moved_through=todo[-1].id))
                    else:
                        s.execute(insert(_MARK).values(spool_id=self.spool_id,
                                                       moved_through=todo[-1].id))
                    moved, done = len(todo), todo[-1].id
        if oldest is not None and oldest <= done:
            self._forget(done)
        return moved

    def move_all(self) -> int:
        """`move` until the spool is empty (of what was there when it started, at least)."""
        total = 0
        while (moved := self.move()) > 0:
            total += moved
            if moved < MOVE_BATCH:
                break
        return total

    def _forget(self, through: int) -> None:
        """Delete the spool records up to `through`, all of them already in audit_records."""
        assert self.spool is not None
        with self.spool.session(write=True) as s:
            s.execute(delete(_SPOOL).where(_SPOOL.c.id <= through))

    def check(self, keys: Mapping[str, Ed25519PublicKey]) -> SpoolState:
        """The records still in the spool and not yet moved: how many, and the first whose
        leaf hash, search columns or signature (by one of `keys`) is wrong. What `hub audit
        verify` reports beside the trail (a spool record is in no tree yet)."""
        if self.spool is None:
            return SpoolState(0)
        with self.db.session(write=False) as s:
            done = self._moved_through(s)
        waiting, problem = 0, None
        with self.spool.session(write=False) as s:
            for row in s.execute(select(_SPOOL).where(_SPOOL.c.id > done)
                                 .order_by(_SPOOL.c.id)):
                waiting += 1
                if problem is None:
                    problem = _problem(row, keys)
        return SpoolState(waiting, problem)

    def close(self) -> None:
        """Stop committing and close the spool's connections."""
        if self._group is not None:
            self._group.stop()
        if self.spool is not None:
            self.spool.dispose()


class _Ticket:
    """One caller's rows waiting in a _GroupCommitter: set when committed (or failed)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.done = threading.Event()
        self.error: BaseException | None = None


class _GroupCommitter:
    """One thread that commits the rows of every waiting caller of this process in one
    spool transaction (one insert, one fsync), then wakes them: the spool's write lock is
    held for that insert and commit only, never while callers come in one by one."""

    def __init__(self, spool: Database) -> None:
        self.spool = spool
        self._waiting: list[_Ticket] = []
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="audit-spool", daemon=True)
        self._thread.start()

    def commit(self, rows: list[dict[str, Any]]) -> None:
        """Return once `rows` are committed; raise what made their commit fail."""
        ticket = _Ticket(rows)
        with self._cv:
            if self._stopped:
                raise RuntimeError("the audit spool is closed")
            self._waiting.append(ticket)
            self._cv.notify()
        if not ticket.done.wait(self.spool.busy_timeout + 30):
            raise TimeoutError("the audit spool did not commit in time")
        if ticket.error is not None:
            raise ticket.error

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._stopped:
                    self._cv.wait()
                if not self._waiting:
                    return
                batch, self._waiting = self._waiting, []
            error: BaseException | None = None
            try:
                with self.spool.session(write=True) as s:
                    s.connection().execute(_INSERT, [r for t in batch for r in t.rows])
            except BaseException as exc:  # each caller raises it; this thread goes on
                error = exc
            for ticket in batch:
                ticket.error = error
                ticket.done.set()

    def stop(self) -> None:
        """Commit what is waiting, then end the thread."""
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(self.spool.busy_timeout + 30)


def _problem(row: Any, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    body = bytes(row.body)
    digest = hashlib.sha256(b"\x00" + body).digest()
    where = f"spool record {row.id}"
    if digest.hex() != row.leaf_hash:
        return f"{where} was edited: its content does not match its hash"
    if not columns_agree(body, instant_text(row.recorded_at), row.action, row.patient_ref,
                         row.agent, row.subtype):
        return f"{where} was edited: its search columns differ from its body"
    key = keys.get(row.key_id)
    if key is None:
        return f"{where} is signed by an unknown key ({row.key_id})"
    if not verify_signature(key, digest, row.signature):
        return f"{where} has a bad signature: not written by a hub process, or edited"
    return None

"""Audit records of reads, committed without the database's write lock (issue #16).

A read (read, vread, history, search) runs in a read-only transaction; its records are then
committed by `ReadAudit.append` before the answer goes out. Where they go:

- SQLite: a spool file of this process's own, `<database file>-audit-spool/<uuid>.db`
  (WAL, synchronous=FULL). A read never waits for the main write lock (WAL readers wait for
  no one), and an audited read is no longer a write transaction queued behind ingest's. One
  thread per process commits the records of all reads waiting at that moment in one
  transaction (group commit); no other process writes that file except a mover deleting
  what it moved, so no lock is shared by the reads of all processes. `<uuid>.db.owner` is
  flocked by the owning process for its life: a mover that can take it knows the owner is
  gone, moves what is left and deletes the file.
- PostgreSQL: straight into audit_records, in a short transaction of its own (a plain
  insert that waits for no one; there is no spool), also committed by one thread per
  process for all reads waiting at that moment (one WAL flush for them all).

If the read's transaction fails nothing is appended here (the error handler records the
failure); if the append fails the read fails too (AuditUnavailableError, 503): nothing is
disclosed unaudited.

Moving (by every sealer's pass, hub/audit/seal.py, and `ReadAudit.move` before auditors'
queries; movers take turns on `movers.lock` in the spool directory): each spool's records,
in spool id order, are inserted into audit_records as they are (body, hash, signature and
search columns unchanged) in one main-database write transaction that also records, in
audit_spool_marks, the last spool id moved. A sealer checks them first, as it checks any
record, and inserts them sealed in its own transaction (their leaf indexes after those of
the trail's unsealed records); `move` inserts them unsealed, for the next seal. Spool ids
never come back (AUTOINCREMENT) and the spool names itself with a uuid, so the mark is
exact: a mover reads the mark again under the write lock and moves only what is above it,
then deletes what is at or below it from the spool. A crash between the move's commit and
the delete leaves records that the next mover deletes without moving; any number of movers
in any number of processes move each record exactly once.

A spool record is not in the tree until moved and sealed. `check` gives what `hub audit
verify` can say about them: how many are waiting, and the first whose hash, signature or
search columns are wrong.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import (
    Column,
    Integer,
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

from hub.audit import copies
from hub.audit.models import AuditRecordRow, AuditSpoolMarkRow
from hub.audit.records import (
    Entry,
    columns_agree,
    event_id_of,
    instant_text,
    signed_rows,
    store_rows,
)
from hub.audit.signing import Signer, verify_signature
from hub.config import Settings
from hub.db.engine import Database
from hub.db.types import ExactBytes, UTCDateTime
from hub.errors import AuditUnavailableError

log = logging.getLogger("hub.audit.spool")
SUFFIX = "-audit-spool"
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
    Column("body", ExactBytes, nullable=False),
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


def spool_dir(db: Database) -> str | None:
    """The directory of the spool files of an SQLite database file; None for PostgreSQL or
    an in-memory SQLite database (their reads append to audit_records directly)."""
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


@dataclass
class Batch:
    """What one spool file has waiting for a mover (see `ReadAudit.moving`)."""

    spool: _SpoolFile
    rows: list[Any]  # above the mark when read, oldest first, at most the limit
    left: bool  # more than the limit were waiting
    oldest: int | None  # the lowest id in the file (anything to drop at all)
    gone: int | None  # the owner's lock, held: its process is gone
    mark: int  # the last id in audit_records: as read, then as moved
    sealable: int = 0  # of `rows`, how many from the first passed the checks (keys given)
    # each row's AuditEvent.id by spool id (audit_records.event_id), read from its body
    # here rather than under the main database's write lock
    event_ids: dict[int, str | None] = field(default_factory=dict)
    problem: str | None = None  # why the next one may not be sealed


class _SpoolFile:
    """One process's spool file, opened by its owner (to append) or by a mover."""

    def __init__(self, path: str, settings: Settings) -> None:
        self.path = path
        self.db = Database.connect(settings, f"sqlite:///{path}")
        self.spool_id = ""

    def prepare(self) -> None:
        """Create the tables and the spool's uuid (the owner, once)."""
        with self.db.session(write=True) as s:
            for statement in _SCHEMA:
                s.execute(text(statement))
            self.spool_id = str(uuid.uuid4())
            s.execute(text("INSERT INTO spool_meta (key, value) VALUES ('spool_id', :v)"),
                      {"v": self.spool_id})

    def known(self) -> bool:
        """Whether the file has its uuid yet (read it); an owner may still be making it."""
        if not self.spool_id:
            try:
                with self.db.session(write=False) as s:
                    found = s.scalar(text("SELECT value FROM spool_meta "
                                          "WHERE key = 'spool_id'"))
            except Exception:  # no tables yet
                return False
            self.spool_id = str(found or "")
        return bool(self.spool_id)

    def remove(self) -> None:
        """Delete the file (an orphan, everything in it moved); the caller holds its owner
        lock, which goes last."""
        self.db.dispose()
        for suffix in ("", "-wal", "-shm", "-writer.lock", ".owner"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + suffix)


def _try_flock(path: str, *, wait: bool = False) -> int | None:
    """An fd holding an exclusive flock of `path` (created if missing), or None if another
    holds it (and not `wait`). Never on a file SQLite has open: closing any fd of a file
    drops the process's POSIX locks on it, SQLite's included."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class ReadAudit:
    """Commits the audit records of reads (see the module docstring); one per process and
    database. Its own spool file is made on the first append; `close()` when done (what is
    left in it is moved by the next mover). A ReadAudit that never appends is just a mover
    (the sealer's, `hub audit verify`'s)."""

    def __init__(self, db: Database, settings: Settings | None = None) -> None:
        self.db = db
        self.settings = settings or Settings()
        self.dir = spool_dir(db)
        self.own: _SpoolFile | None = None
        self._owner_fd: int | None = None
        self._files: dict[str, _SpoolFile] = {}  # others' files this mover has open
        self._guard = threading.Lock()
        self._group: _GroupCommitter | None = None

    @property
    def path(self) -> str | None:
        """This process's spool file, once made."""
        return self.own.path if self.own is not None else None

    def append(self, signer: Signer, entries: Sequence[Entry]) -> None:
        """Commit the records of `entries` durably, without the main database's write lock
        on SQLite. Raises AuditUnavailableError when they cannot be committed (and
        ValueError for entries append_all would refuse)."""
        rows = signed_rows(signer, entries)
        if not rows:
            return
        try:
            self._committer().commit(rows)
        except Exception as exc:
            log.exception("could not commit the audit record of a read")
            raise AuditUnavailableError(
                "The audit trail cannot take the record of this read just now, so nothing is "
                "disclosed; send the request again later.") from exc

    def _committer(self) -> _GroupCommitter:
        with self._guard:
            if self._group is None and self.dir is None:  # PostgreSQL: audit_records
                self._group = _GroupCommitter(self.db, store_rows)
            if self._group is None:
                assert self.dir is not None
                os.makedirs(self.dir, mode=0o700, exist_ok=True)
                path = os.path.join(self.dir, f"{uuid.uuid4()}.db")
                # The owner lock first: a mover that can take it knows the owner is gone.
                self._owner_fd = _try_flock(f"{path}.owner", wait=True)
                own = _SpoolFile(path, self.settings)
                own.prepare()
                self.own = own
                self._group = _GroupCommitter(own.db, _spool_rows)
            return self._group

    @staticmethod
    def _moved_through(session: Session, spool_id: str) -> int:
        found = session.scalar(select(_MARK.moved_through).where(_MARK.spool_id == spool_id))
        return int(found or 0)

    def _spool_files(self) -> list[_SpoolFile]:
        """Every spool file of the database, this process's first."""
        if self.dir is None or not os.path.isdir(self.dir):
            return [self.own] if self.own is not None else []
        out = [self.own] if self.own is not None else []
        for name in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, name)
            if not name.endswith(".db") or (self.own is not None and path == self.own.path):
                continue
            if path not in self._files:
                self._files[path] = _SpoolFile(path, self.settings)
            out.append(self._files[path])
        return out

    def move(self, limit: int = MOVE_BATCH) -> int:
        """Move up to `limit` records of each spool file into audit_records, oldest first,
        exactly once, then drop them from the spool; delete the files of processes that are
        gone once they are empty. How many this call moved (0 without spools). Safe to run
        anywhere at any time: movers take turns on a lock file in the spool directory.
        The records go in unsealed; a sealer's pass moves and seals in one transaction
        (`moving`, `move_in`, hub/audit/seal.py)."""
        with self.moving(limit) as batches:
            if not any(b.rows for b in batches):
                return 0
            with self.db.session(write=True) as s:
                return self.move_in(s, batches)

    @contextmanager
    def moving(self, limit: int = MOVE_BATCH,
               keys: Mapping[str, Ed25519PublicKey] | None = None) -> Iterator[list[Batch]]:
        """The movers' turn, and what waits in each spool file: up to `limit` records above
        its mark each, read without the main database's write lock (`keys`: also check them,
        for a sealer that seals them as it moves them). The caller moves them with
        `move_in` in a write transaction of its own, committed inside the block; on leaving
        the block normally, what the marks say is in audit_records is dropped from the
        spools, and the files of processes that are gone are deleted once empty."""
        if self.dir is None or not os.path.isdir(self.dir):
            yield []
            return
        turn = _try_flock(os.path.join(self.dir, "movers.lock"), wait=True)
        assert turn is not None
        batches: list[Batch] = []
        seen: set[str] = set()  # AuditEvent ids of the spools' records read so far
        try:
            for spool in self._spool_files():
                if not spool.known():
                    continue
                gone = None if spool is self.own else _try_flock(f"{spool.path}.owner")
                batches.append(self._waiting(spool, limit, gone, keys, seen))
            yield batches
            for batch in batches:
                self._drop_moved(batch)
        finally:
            for batch in batches:
                if batch.gone is not None:
                    os.close(batch.gone)
            os.close(turn)

    def _waiting(self, spool: _SpoolFile, limit: int, gone: int | None,
                 keys: Mapping[str, Ed25519PublicKey] | None, seen: set[str]) -> Batch:
        with self.db.session(write=False) as s:
            done = self._moved_through(s, spool.spool_id)
        with spool.db.session(write=False) as s:
            rows = s.execute(select(_SPOOL).where(_SPOOL.c.id > done)
                             .order_by(_SPOOL.c.id).limit(limit + 1)).all()
            oldest = s.scalar(select(func.min(_SPOOL.c.id)))
        batch = Batch(spool, list(rows[:limit]), len(rows) > limit, oldest, gone, done)
        batch.event_ids = {row.id: event_id_of(bytes(row.body)) for row in batch.rows}
        if keys is not None:
            held = self._held(batch.event_ids.values())
            for row in batch.rows:
                batch.problem = _problem(row, keys) or _copy_problem(
                    row.id, batch.event_ids[row.id], held, seen)
                if batch.problem is not None:
                    break
                batch.sealable += 1
        return batch

    def _held(self, event_ids: Iterable[str | None]) -> dict[str, list[copies.Holder]]:
        """The trail's records holding any of `event_ids`."""
        wanted = [e for e in event_ids if e is not None]
        if not wanted:
            return {}
        with self.db.session(write=False) as s:
            return copies.holders(s.connection(), wanted)

    def move_in(self, session: Session, batches: Sequence[Batch],
                leaf_index: Callable[[Any], int | None] | None = None) -> int:
        """In the caller's write transaction on the main database: insert the records of
        `batches` that are still above their spool's mark (read again here, under the write
        lock, so that no record goes in twice), and move the marks; how many went in.
        `leaf_index(row)`: the leaf index a record goes in sealed with (its leaf is the hash
        it was spooled with), or None (unsealed; the default for all), called in the order
        the records go in."""
        moved = 0
        # The AuditEvent ids held already, in the trail or earlier in this move: a spool
        # record that repeats one (a copy put into a spool file) goes in without its
        # event_id, which is unique, so that the move does not fail on it; verify and the
        # sealer know it by its body (copies.py), and a sealer's `moving` did not pass it.
        wanted = sorted({e for b in batches for e in b.event_ids.values() if e is not None})
        taken: set[str] = set()
        for start in range(0, len(wanted), 1000):
            taken.update(e for e in session.execute(select(AuditRecordRow.event_id).where(
                AuditRecordRow.event_id.in_(wanted[start:start + 1000]))).scalars()
                if e is not None)
        for batch in batches:
            done = self._moved_through(session, batch.spool.spool_id)
            todo = [r for r in batch.rows if r.id > done]
            if not todo:
                batch.mark = done
                continue
            rows = []
            for r in todo:
                row = {c: getattr(r, c) for c in _COLUMNS}
                event_id = batch.event_ids[r.id]
                row["event_id"] = event_id if event_id not in taken else None
                if event_id is not None:
                    taken.add(event_id)
                row["leaf_index"] = leaf_index(r) if leaf_index is not None else None
                rows.append(row)
            store_rows(session, rows)
            if done:
                session.execute(update(_MARK).where(_MARK.spool_id == batch.spool.spool_id)
                                .values(moved_through=todo[-1].id))
            else:
                session.execute(insert(_MARK).values(spool_id=batch.spool.spool_id,
                                                     moved_through=todo[-1].id))
            moved += len(todo)
            batch.mark = todo[-1].id
        return moved

    def _drop_moved(self, batch: Batch) -> None:
        """Delete from `batch`'s spool what its mark says is in audit_records, and the file
        of a process that is gone once nothing is left in it."""
        spool = batch.spool
        if batch.oldest is not None and batch.oldest <= batch.mark:
            with spool.db.session(write=True) as s:  # all of them are in audit_records
                s.execute(delete(_SPOOL).where(_SPOOL.c.id <= batch.mark))
        if batch.gone is not None and not batch.left and (
                not batch.rows or batch.mark >= batch.rows[-1].id):
            spool.remove()
            self._files.pop(spool.path, None)

    def move_all(self) -> int:
        """`move` until the spools are empty (of what was there when it started, at least)."""
        total = 0
        while (moved := self.move()) > 0:
            total += moved
            if moved < MOVE_BATCH:
                break
        return total

    def check(self, keys: Mapping[str, Ed25519PublicKey]) -> SpoolState:
        """The records still in the spools and not yet moved: how many, and the first whose
        leaf hash, search columns or signature (by one of `keys`) is wrong. What `hub audit
        verify` reports beside the trail (a spool record is in no tree yet)."""
        waiting, problem = 0, None
        seen: set[str] = set()
        for spool in self._spool_files():
            if not spool.known():
                continue
            with self.db.session(write=False) as s:
                done = self._moved_through(s, spool.spool_id)
            with spool.db.session(write=False) as s:
                rows = s.execute(select(_SPOOL).where(_SPOOL.c.id > done)
                                 .order_by(_SPOOL.c.id)).all()
            waiting += len(rows)
            if problem is not None or not rows:
                continue
            ids = {row.id: event_id_of(bytes(row.body)) for row in rows}
            held = self._held(ids.values())
            for row in rows:
                problem = _problem(row, keys) or _copy_problem(row.id, ids[row.id], held, seen)
                if problem is not None:
                    break
        return SpoolState(waiting, problem)

    def close(self) -> None:
        """Stop committing, close the spools' connections, let go of this process's file."""
        if self._group is not None:
            self._group.stop()
        for spool in [*self._files.values(), *([self.own] if self.own else [])]:
            spool.db.dispose()
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None


class _Ticket:
    """One caller's rows waiting in a _GroupCommitter: set when committed (or failed)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.done = threading.Event()
        self.error: BaseException | None = None


def _spool_rows(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows made by `signed_rows` into the spool, which keeps no event_id (the mover
    reads it from the body: spool files of an older hub have no such column)."""
    session.connection().execute(_INSERT, [{c: row[c] for c in _COLUMNS} for row in rows])


class _GroupCommitter:
    """One thread that commits the rows of every waiting caller of this process in one
    transaction (one insert, one fsync), then wakes them: on SQLite the spool's write lock
    is held for that insert and commit only, never while callers come in one by one; on
    PostgreSQL the reads of a process share one WAL flush."""

    def __init__(self, spool: Database,
                 write: Callable[[Session, Sequence[Mapping[str, Any]]], object]) -> None:
        self.spool = spool
        self._write = write
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
                    self._write(s, [r for t in batch for r in t.rows])
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


def _copy_problem(spool_id: int, event_id: str | None, held: Mapping[str, list[copies.Holder]],
                  seen: set[str]) -> str | None:
    """Why a spool record repeats an AuditEvent the trail (`held`) or an earlier spool
    record (`seen`, which this adds its id to) holds already; None if it is the first."""
    if event_id is None:
        return None
    if event_id in held:
        return (f"spool record {spool_id} is a copy of record {held[event_id][0].seq} (the "
                f"same AuditEvent, {event_id}): inserted into the spool")
    if event_id in seen:
        return (f"spool record {spool_id} repeats an AuditEvent ({event_id}) an earlier "
                "spool record holds: a copy inserted into the spool")
    seen.add(event_id)
    return None


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

"""Engines and sessions. SQLite gets WAL and `BEGIN IMMEDIATE` for writers so that two writers
queue on the lock instead of failing on upgrade; PostgreSQL runs at READ COMMITTED.

SQLite durability: WAL with synchronous=FULL, so a commit is on disk (the WAL is synced) before
the hub answers; with NORMAL a power cut could lose the last accepted messages, which the hub
promises never to do. The sync costs about 0.2 ms per commit here.

SQLite writers queue, first within the process (a lock), then across processes (`hub serve
--workers`, the CLI) on an flock of `<database>-writer.lock`: waiting in SQLite's busy handler
instead, whose sleeps grow to 100 ms, gave a p99 near a second with two workers."""

from __future__ import annotations

import fcntl
import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Settings
from hub.db import lockstats
from hub.db.direct import plain_savepoints


class _WriterQueue:
    """Where the writers of one SQLite file take turns: a reentrant lock for this process's
    threads, and an flock of a lock file beside the database for the other processes."""

    def __init__(self, lock_path: str | None) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._lock_path = lock_path
        self._fd: int | None = None
        self._pid = 0
        self._count_guard = threading.Lock()
        self.waiting = 0  # threads of this process waiting for a turn
        self.group: _Group | None = None  # the open group transaction, if any
        self._taken_at = 0.0  # when this process took the file lock (lockstats)
        self.name = lock_path.removesuffix("-writer.lock") if lock_path else ""  # the file

    @property
    def depth(self) -> int:
        """How many turns the thread holding the queue has taken (reentrant)."""
        return self._depth

    def _file(self) -> int | None:
        if self._lock_path is None:
            return None
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            try:
                self._fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:  # e.g. a read-only directory: SQLite's own locking still holds
                self._lock_path = None
                return None
            self._pid = os.getpid()
        return self._fd

    def acquire(self, timeout: float) -> bool:
        """Take a turn; False when it did not come within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._count_guard:
            self.waiting += 1
        try:
            if not self._lock.acquire(timeout=timeout):
                return False
        finally:
            with self._count_guard:
                self.waiting -= 1
        # An open group already holds the file (taken by the writer that opened it).
        if self._depth == 0 and self.group is None and (fd := self._file()) is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not self._wait_for_file(fd, deadline - time.monotonic()):
                    self._lock.release()
                    return False
            self._taken_at = time.monotonic()
        self._depth += 1
        return True

    def _wait_for_file(self, fd: int, timeout: float) -> bool:
        """Block in flock (the kernel wakes a waiter when the holder lets go: no polling, no
        growing sleeps) on a helper thread, so that the wait can end after `timeout`."""
        got, done, guard = [False], threading.Event(), threading.Lock()
        cancelled = [False]

        def wait() -> None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with guard:
                if cancelled[0]:  # gave up meanwhile: let go again, and of this file
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                else:
                    got[0] = True
            done.set()

        threading.Thread(target=wait, name="sqlite-writer-wait", daemon=True).start()
        done.wait(max(timeout, 0.0))
        with guard:
            if not got[0]:
                cancelled[0] = True
                self._fd = None  # the helper closes that one; the next turn opens anew
            return got[0]

    def release(self) -> None:
        """End a turn taken by `acquire`."""
        self._depth -= 1
        if (self._depth == 0 and self.group is None and self._fd is not None
                and self._pid == os.getpid()):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            lockstats.held(f"sqlite write lock of {self.name}",
                           time.monotonic() - self._taken_at)
        self._lock.release()


GROUP_MAX_WRITERS = 16
"""At most this many write transactions of one process share one SQLite commit."""
GROUP_MAX_OPEN = 0.05
"""Seconds a group commit may stay open for writers joining it (bounds the first's wait)."""


class _Group:
    """Write transactions of one process that share one SQLite transaction and one commit
    (group commit): each runs in a savepoint of the group's connection, one after the other
    under the writers' queue; the last commits for all, and each answers only then."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.opened = time.monotonic()
        self.members = 0
        self.committed = threading.Event()
        self.error: BaseException | None = None


_SQLITE_WRITERS: dict[str, _WriterQueue] = {}
_SQLITE_WRITERS_GUARD = threading.Lock()


def _writers_lock(engine: Engine) -> _WriterQueue:
    """The queue this process's writers of one SQLite file wait in."""
    url = engine.url.render_as_string(hide_password=False)
    database = engine.url.database
    on_disk = bool(database) and database != ":memory:" and "mode=memory" not in url
    with _SQLITE_WRITERS_GUARD:
        if url not in _SQLITE_WRITERS:
            _SQLITE_WRITERS[url] = _WriterQueue(f"{database}-writer.lock" if on_disk else None)
        return _SQLITE_WRITERS[url]


def _sqlite_setup(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event own transaction start (pysqlite's own is broken).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cur.close()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn: Any, _record: Any) -> None:
        # SQLite keeps a transaction open when its COMMIT fails (a deferred constraint), and
        # SQLAlchemy, taking it for ended, pools the connection without its rollback: the
        # next writer's BEGIN then failed ("cannot start a transaction within a
        # transaction"). Whatever path returns a connection, none comes back in a transaction.
        if dbapi_conn is not None and dbapi_conn.in_transaction:
            dbapi_conn.rollback()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str, settings: Settings) -> Engine:
    """An engine for `url` with the hub's per-dialect setup."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": settings.sqlite_busy_timeout}
        )
        _sqlite_setup(engine, settings.sqlite_busy_timeout)
    else:
        engine = create_engine(
            url,
            # psycopg never prepares a statement of its own accord (its threshold is never
            # reached): after five runs PostgreSQL would switch a search to a generic plan
            # that ignores the values and scans (bench/store.py: 4.7 searches/s instead of
            # about 400 at 100k resources). The fixed statements of hub/db/direct.py ask for it,
            # unless HUB_DB_PREPARE is off: None then refuses even their asking (a pooler in
            # transaction mode may hand the next transaction another server connection).
            connect_args=({"prepare_threshold": NEVER if settings.db_prepare else None}
                          if "+psycopg" in url else {}),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_size,
            pool_pre_ping=True,
        )
        if "+psycopg" in url:
            _ping_when_spoken_to(engine.dialect)
    plain_savepoints(engine.dialect)
    return engine


NEVER = 2**31 - 1
"""psycopg's prepare_threshold for the hub's connections: only an explicit prepare=True."""


def _ping_when_spoken_to(dialect: Any) -> None:
    """Make the pool's check of a psycopg connection it hands out (pool_pre_ping) a look at
    the socket instead of a round trip to the server, unless the server has said something.

    An idle connection hears nothing from PostgreSQL (the hub does not LISTEN) until the
    server ends it: a restart, a failover or pg_terminate_backend sends a notice and closes
    the socket, which then reads as ready. Only then is the dialect's own ping (an empty
    statement) run, which finds the connection gone, and the pool opens a new one. The round
    trip it saves came twice a request (the token's look-up and the work); with the
    server's prepared statements (hub/db/direct.py) and the look-up's autocommit
    (`one_read`), bench/ingest.py went from 133-176 to 193-209 msg/s (README). A server
    that vanishes without closing the socket (a host gone off the network) is found by the
    next statement instead, which fails as a database away (503, and SQLAlchemy renews the
    pool)."""
    full = dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        if dbapi_connection.closed or dbapi_connection.broken:
            return False
        try:
            socket = select.poll()  # poll, not select: a descriptor past 1024 is fine
            socket.register(dbapi_connection.pgconn.socket, select.POLLIN)
            ready = socket.poll(0)
        except (OSError, ValueError, dialect.loaded_dbapi.Error):
            return False
        return True if not ready else bool(full(dbapi_connection))

    dialect.do_ping = do_ping


def _commit(queue: _WriterQueue, group: _Group) -> None:
    """Commit an open group, give back the caller's turn of `queue`, then tell the members.

    The turn (and the file lock) goes first: waking the members starts their threads, which
    then compete with this one for the GIL, and the next writer, of this process or another,
    would wait for that (cross-process hand-overs took 0.1-1 ms after the commit, py-spy and
    a trace of bench/ingest.py). A commit that fails rolls back before the turn goes."""
    queue.group = None
    try:
        group.conn.commit()
    except BaseException as exc:
        group.error = exc
        group.conn.close()  # the pool rolls back what the failed COMMIT left (_sqlite_setup)
    finally:
        queue.release()
        try:
            group.conn.close()  # back to the pool (a no-op after the close above)
        finally:
            group.committed.set()


@dataclass
class Database:
    """One database: an engine plus read and write session factories."""

    engine: Engine
    _read: sessionmaker[Session]
    _write: sessionmaker[Session]
    busy_timeout: float = 30.0

    @classmethod
    def connect(cls, settings: Settings, url: str | None = None) -> Database:
        """Open the database at `url` (default: settings.database_url)."""
        engine = make_engine(url or settings.database_url, settings)
        writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        return cls(
            engine,
            sessionmaker(engine, expire_on_commit=False),
            sessionmaker(writer, expire_on_commit=False),
            settings.sqlite_busy_timeout,
        )

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, write: bool) -> Iterator[Session]:
        """A session whose transaction commits on normal exit and rolls back on an exception."""
        factory = self._write if write else self._read
        if write and self.dialect == "sqlite":
            # Writers queue here instead of polling SQLite's busy handler, whose growing
            # sleeps gave a p99 over a second (bench/ingest.py: 1.4 s -> 0.18 s). A writer
            # that does not take the queue (another program) is still waited for in SQLite's
            # busy_timeout; so are we, at most.
            queue = _writers_lock(self.engine)
            if not queue.acquire(timeout=self.busy_timeout):
                raise TimeoutError(f"SQLite write lock still taken after {self.busy_timeout} s")
            if queue.depth > 1:  # a write session inside a write session: on its own
                try:
                    with factory() as session, session.begin():
                        yield session
                finally:
                    queue.release()
                return
            yield from self._in_group(queue)
            return
        with factory() as session, session.begin():
            yield session

    @contextmanager
    def one_read(self) -> Iterator[Session]:
        """A session for work that reads with one statement (a token's look-up, before every
        request). On PostgreSQL it runs without a transaction (autocommit): the BEGIN and
        COMMIT would be two more round trips for nothing, as one statement sees one
        snapshot anyway. Elsewhere it is `session(write=False)`."""
        if self.dialect != "postgresql":
            with self.session(write=False) as session:
                yield session
            return
        with (self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
              Session(bind=conn, expire_on_commit=False) as session):
            yield session

    def _in_group(self, queue: _WriterQueue) -> Iterator[Session]:
        """One write transaction as a member of a group commit (see _Group); the caller holds
        a turn of `queue`, which this gives back. Returns (or raises) only after the commit
        that makes its work durable, or raises the error of a commit that failed."""
        group = queue.group
        try:
            if group is None:
                conn = self._write.kw["bind"].connect()
                try:
                    conn.begin()
                except BaseException:
                    conn.close()
                    raise
                group = queue.group = _Group(conn)
        except BaseException:
            queue.release()
            raise
        failed: BaseException | None = None
        try:
            with Session(bind=group.conn, join_transaction_mode="create_savepoint",
                         expire_on_commit=False) as session, session.begin():
                yield session
        except BaseException as exc:  # rolled back to its savepoint; the others stand
            failed = exc
        group.members += 1
        if (queue.waiting and group.members < GROUP_MAX_WRITERS
                and time.monotonic() - group.opened < GROUP_MAX_OPEN):
            queue.release()  # the next writer joins; the last one commits for all
            if failed is not None:
                raise failed
            while not group.committed.wait(GROUP_MAX_OPEN):
                # The writer expected to join gave up waiting: commit the group ourselves.
                if queue.acquire(timeout=self.busy_timeout):
                    if queue.group is group:
                        _commit(queue, group)  # gives the turn back
                    else:
                        queue.release()
        else:
            _commit(queue, group)  # gives the turn back
            if failed is not None:
                raise failed
        if group.error is not None:
            raise group.error

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

"""Engines and sessions. SQLite gets WAL and `BEGIN IMMEDIATE` for writers so that two writers
queue on the lock instead of failing on upgrade; PostgreSQL runs at READ COMMITTED."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Settings

_SQLITE_WRITERS: dict[str, threading.RLock] = {}
_SQLITE_WRITERS_GUARD = threading.Lock()


def _writers_lock(url: str) -> threading.RLock:
    """The lock this process's writers of one SQLite file queue on."""
    with _SQLITE_WRITERS_GUARD:
        return _SQLITE_WRITERS.setdefault(url, threading.RLock())


def _sqlite_setup(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event own transaction start (pysqlite's own is broken).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cur.close()

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
        return engine
    return create_engine(
        url,
        # No server-side prepared statements: after five runs PostgreSQL would switch a search
        # to a generic plan that ignores the values and scans (bench/store.py: 4.7 searches/s
        # instead of about 400 at 100k resources).
        connect_args={"prepare_threshold": None} if "+psycopg" in url else {},
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
    )


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
            # Writers of this process queue here instead of polling SQLite's busy handler,
            # whose growing sleeps gave a p99 over a second (bench/ingest.py: 1.4 s -> 0.18 s).
            # Other processes still wait through busy_timeout; so do we, at most.
            lock = _writers_lock(self.engine.url.render_as_string(hide_password=False))
            if not lock.acquire(timeout=self.busy_timeout):
                raise TimeoutError(f"SQLite write lock still taken after {self.busy_timeout} s")
            try:
                with factory() as session, session.begin():
                    yield session
            finally:
                lock.release()
            return
        with factory() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

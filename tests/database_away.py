"""Taking the PostgreSQL test database away as a restart or failover does: new connections
refused and the open ones ended; and letting them in again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


class Connections:
    """Switches connections to the database of `db_url` off and on, from the server's
    `postgres` database (so it works while they are off)."""

    def __init__(self, db_url: str) -> None:
        self.name = make_url(db_url).database
        self.admin = create_engine(make_url(db_url).set(database="postgres"),
                                   isolation_level="AUTOCOMMIT")

    def allow(self, yes: bool) -> None:
        with self.admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS '
                           f'{str(yes).lower()}'))
            if not yes:
                c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = :name"), {"name": self.name})

    def close(self) -> None:
        """Let connections in again and drop the admin engine."""
        self.allow(True)
        self.admin.dispose()


@contextmanager
def database_away(db_url: str) -> Iterator[Connections]:
    """The database refuses connections inside the block (open ones ended at its start)."""
    connections = Connections(db_url)
    connections.allow(False)
    try:
        yield connections
    finally:
        connections.close()

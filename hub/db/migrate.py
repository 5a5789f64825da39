"""Alembic migrations, run on start and by `hub db upgrade`; safe when processes start at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from hub.config import Settings
from hub.db.engine import Database
from hub.errors import DatabaseUnavailableError

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x6361726568756221  # "carehub!": one advisory lock for schema changes


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and `url`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision; concurrent callers on PostgreSQL take turns."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            conn.commit()
        try:
            cfg = alembic_config(engine.url.render_as_string(hide_password=False))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
        finally:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                conn.commit()


@contextmanager
def migrated_database(settings: Settings) -> Iterator[Database]:
    """The database of `settings`, brought to the newest schema, closed afterwards (for the
    command-line tools)."""
    database = Database.connect(settings)
    try:
        try:
            upgrade(database.engine)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(database.engine, exc) from None
        yield database
    finally:
        database.dispose()


def unavailable(engine: Engine, exc: DBAPIError) -> DatabaseUnavailableError:
    """The error of a database that cannot be reached or opened, in one sentence naming it
    (its URL without the password) and the driver's first line."""
    url = engine.url.render_as_string(hide_password=True)
    return DatabaseUnavailableError(f"Cannot use the database {url} (HUB_DATABASE_URL): "
                                    f"{driver_says(exc)}")


def driver_says(exc: DBAPIError) -> str:
    """The first line of what the database driver said (at most 300 characters)."""
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0][:300]

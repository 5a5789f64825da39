"""Test harness: every test that asks for `db_url` runs on SQLite and on PostgreSQL, each time
on a fresh, migrated database (copied from a template, so it is quick)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import adapters.registry  # noqa: F401  (the channels, as hub.app registers them)
import hub.wiring  # noqa: F401  (every rule registered before any work)
from hub.app import create_app
from hub.cli import HTTP, LOOP
from hub.config import Settings
from hub.db.engine import Database
from hub.db.migrate import upgrade

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
PG_ENV = "HUB_TEST_POSTGRES_URL"


def pytest_configure(config: pytest.Config) -> None:
    """The suite needs ../shared (examples, R4 examples) beside the checkout, as in CI."""
    if not (SHARED / "fhir-r4-examples").is_dir() or not (SHARED / "examples").is_dir():
        raise pytest.UsageError(
            f"{SHARED} with examples/ and fhir-r4-examples/ must sit beside the checkout; "
            "the conformance tests read it.")


def _postgres_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url and os.environ.get("CI"):
        pytest.fail(f"{PG_ENV} is not set: CI must run the suite on PostgreSQL too "
                    "(scripts/test.sh starts one).")
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file to copy."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database.connect(Settings(), f"sqlite:///{path}")
    upgrade(db.engine)
    db.dispose()
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """Name of a migrated PostgreSQL template database (None without PostgreSQL)."""
    url = _postgres_url()
    if not url:
        yield None
        return
    name = f"carehub_tpl_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    target = make_url(url).set(database=name).render_as_string(hide_password=False)
    db = Database.connect(Settings(), target)
    upgrade(db.engine)
    db.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    """URL of a fresh, migrated database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "hub.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    if template is None:
        pytest.skip(f"PostgreSQL not configured ({PG_ENV} unset; CI sets it)")
    url = os.environ[PG_ENV]
    name = f"carehub_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield make_url(url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings pointing at the fresh database (and an audit key of the test's own). The
    delivery dispatcher, the timed checks' scheduler and the audit sealer are off: their
    tests run them themselves, and end-to-end tests turn them on."""
    return Settings(database_url=db_url, base_url="http://testserver",
                    audit_key_file=str(tmp_path / "audit-key.pem"), dispatcher=False,
                    scheduler=False, sealer=False)


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    """Direct database access for service-level tests."""
    db = Database.connect(settings)
    yield db
    db.dispose()


TEST_ORG = "org-test"
"""The organisation the `client` fixture acts for (registered by the fixture)."""


@pytest.fixture
def bearer(settings: Settings, database: Database) -> str:
    """A real access token (system/*.*) of a client acting for TEST_ORG, obtained through
    POST /auth/token with a signed assertion."""
    from tests.auth_helpers import register_and_token

    with TestClient(create_app(settings)) as c:
        return register_and_token(c, database, org_id=TEST_ORG)


@pytest.fixture
def client(settings: Settings, bearer: str) -> Iterator[TestClient]:
    """An HTTP client on the hub app, authenticated as a client of TEST_ORG."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers["Content-Type"] = "application/fhir+json"
        c.headers["Authorization"] = f"Bearer {bearer}"
        yield c


def loopback_socket() -> socket.socket:
    """A socket bound to a free loopback port, for a live server to serve on. The server is
    handed the socket itself, so no other process can take the port between the choice of a
    port and the server's bind (as with a port number chosen first)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serving(settings: Settings, **config: Any) -> Iterator[str]:
    """The hub of `settings` served by uvicorn (uvloop, httptools) on a loopback socket of its
    own, in a thread; its base URL. `config`: more uvicorn.Config options."""
    import uvicorn

    with loopback_socket() as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        options: dict[str, Any] = {"log_level": "warning", "loop": LOOP, "http": HTTP, **config}
        server = uvicorn.Server(uvicorn.Config(
            create_app(settings.model_copy(update={"base_url": url})), **options))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        try:
            yield url
        finally:
            server.should_exit = True
            thread.join(10)


@pytest.fixture
def live_url(settings: Settings) -> Iterator[str]:
    """The hub served by uvicorn on loopback (for real concurrency)."""
    with serving(settings) as url:
        yield url

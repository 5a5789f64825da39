"""A second organisation's HTTP client, for tests that need two parties."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from hub.app import create_app
from hub.config import Settings
from hub.db.engine import Database
from tests.auth_helpers import register_and_token


@contextmanager
def other_client(settings: Settings, database: Database, org_id: str) -> Iterator[TestClient]:
    """A client acting for Organization/org_id (registered if missing), with a real token."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers["Content-Type"] = "application/fhir+json"
        c.headers["Authorization"] = "Bearer " + register_and_token(c, database, org_id=org_id)
        yield c

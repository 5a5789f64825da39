"""Fixtures of the delivery tests: quick settings, real receivers, sweeping until done."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from hub.app import create_app
from hub.config import Settings
from hub.db.engine import Database
from hub.delivery.dispatcher import SweepReport, sweep
from tests.auth_helpers import register_and_token
from tests.delivery.receivers import Receiver


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Settings with short delivery times (first retry and poll 0.05 s, timeout 0.5 s), and
    no dispatcher inside the app (the tests sweep themselves)."""
    return settings.model_copy(update={
        "delivery_first_retry": 0.05, "delivery_poll_interval": 0.05,
        "delivery_timeout": 0.5, "delivery_max_age": 3600, "dispatcher": False})


ReceiverFactory = Callable[..., Receiver]


@pytest.fixture
def receiver() -> Iterator[ReceiverFactory]:
    """Start real receivers: `receiver("name")` (listening), `receiver("x", up=False)`."""
    made: list[Receiver] = []

    def make(name: str = "receiver", *, up: bool = True) -> Receiver:
        r = Receiver(name)
        made.append(r)
        return r.start() if up else r

    yield make
    for r in made:
        r.stop()


def sweep_until(db: Database, settings: Settings, done: Callable[[], bool], *,
                within: float = 15.0, what: str = "the deliveries to settle") -> list[SweepReport]:
    """Sweep every poll interval until `done()`; fail after `within` seconds."""
    reports = []
    deadline = time.monotonic() + within
    while True:
        reports.append(sweep(db, settings))
        if done():
            return reports
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {within} s")
        time.sleep(settings.delivery_poll_interval)


def wait_for(done: Callable[[], bool], *, within: float = 15.0, what: str = "it") -> None:
    """Poll `done()` every 20 ms; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {within} s")
        time.sleep(0.02)


@pytest.fixture
def api(fast: Settings, database: Database) -> Iterator[TestClient]:
    """The hub app (no dispatcher inside; the tests sweep), and no
    credentials: pass `headers=auth(...)`."""
    app = create_app(fast)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


Auth = Callable[[str], dict[str, str]]


@pytest.fixture
def auth(api: TestClient, database: Database) -> Auth:
    """`auth(org)`: headers of a real access token of a client of that organisation."""
    tokens: dict[str, str] = {}

    def headers(org: str) -> dict[str, str]:
        if org not in tokens:
            tokens[org] = register_and_token(api, database, org_id=org)
        return {"Authorization": f"Bearer {tokens[org]}",
                "Content-Type": "application/fhir+json"}

    return headers

"""HUB_WRITE_CONCURRENCY: a bulkhead for writes. At most that many write requests of one
process are worked on at once; the others wait for a turn, and reads never wait for one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import hub.api.messaging
from hub.config import Settings
from hub.db.engine import Database
from tests.access_clients import other_client
from tests.delivery.conftest import wait_for
from tests.factories import fnr, patient
from tests.messaging.test_story import EXAMPLES, load, register_story_organizations

CONSENT, CARE_PLAN, ADMISSION = (load(EXAMPLES[i]) for i in (0, 1, 2))


class HeldValidation:
    """check_message (the first work of a message, before any database lock) that holds
    the first message in it until `release`."""

    def __init__(self, real: Callable[[Any], Any]) -> None:
        self.real, self.entered, self.gate = real, 0, threading.Event()
        self.guard = threading.Lock()

    def __call__(self, bundle: Any) -> Any:
        with self.guard:
            self.entered += 1
            first = self.entered == 1
        if first:
            assert self.gate.wait(30), "never released"
        return self.real(bundle)


@contextmanager
def in_background(fn: Callable[[], httpx.Response]) -> Iterator[list[httpx.Response]]:
    """Run fn on a thread; on leaving, wait for it and hand its response over."""
    got: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: got.append(fn()))
    thread.start()
    try:
        yield got
    finally:
        thread.join(60)


@pytest.fixture
def dps_at(settings: Settings, database: Database) -> Callable[[int], Any]:
    """A client of the centre on a hub with a given HUB_WRITE_CONCURRENCY, the consent of
    the examples already in."""
    register_story_organizations(database)

    @contextmanager
    def make(turns: int) -> Iterator[TestClient]:
        limited = settings.model_copy(update={"write_concurrency": turns})
        with other_client(limited, database, "jaeren-dps") as dps:
            r = dps.post("/fhir/$process-message", json=CONSENT)
            assert r.status_code == 200, r.text
            yield dps

    return make


def _patient_id(dps: TestClient) -> str:
    found = dps.get("/fhir/Patient")
    assert found.status_code == 200, found.text
    return str(found.json()["entry"][0]["resource"]["id"])


def test_a_write_waits_for_a_turn_while_reads_go_on(
        dps_at: Callable[[int], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with dps_at(1) as dps:
        pid = _patient_id(dps)
        held = HeldValidation(hub.api.messaging.check_message)
        monkeypatch.setattr(hub.api.messaging, "check_message", held)
        limiter = dps.app.state.write_limiter  # type: ignore[attr-defined]
        def message(body: dict[str, Any]) -> Callable[[], httpx.Response]:
            return lambda: dps.post("/fhir/$process-message", json=body)

        with in_background(message(ADMISSION)) as first:
            wait_for(lambda: held.entered == 1, within=15, what="the first message held")
            with in_background(message(CARE_PLAN)) as second, \
                    in_background(lambda: dps.post("/fhir/Patient",
                                                   json=patient(fnr(start=9)))) as rest:
                wait_for(lambda: limiter.statistics().tasks_waiting == 2, within=15,
                         what="the message and the REST write queued")
                assert held.entered == 1  # the second message has not started
                read = dps.get(f"/fhir/Patient/{pid}")
                assert read.status_code == 200, read.text  # a read does not queue
                held.gate.set()
        assert first[0].status_code == 200, first[0].text
        assert second[0].status_code == 200, second[0].text
        assert rest[0].status_code == 201, rest[0].text
        assert held.entered == 2


def test_without_a_limit_writes_run_side_by_side(
        dps_at: Callable[[int], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with dps_at(0) as dps:
        held = HeldValidation(hub.api.messaging.check_message)
        monkeypatch.setattr(hub.api.messaging, "check_message", held)
        assert dps.app.state.write_limiter is None  # type: ignore[attr-defined]
        with in_background(lambda: dps.post("/fhir/$process-message", json=ADMISSION)) as a:
            wait_for(lambda: held.entered == 1, within=15, what="the first message held")
            with in_background(lambda: dps.post("/fhir/$process-message",
                                                json=CARE_PLAN)) as b:
                wait_for(lambda: held.entered == 2, within=15,
                         what="the second message started while the first is held")
                held.gate.set()
        assert a[0].status_code == 200, a[0].text
        assert b[0].status_code == 200, b[0].text


def test_by_default_postgresql_works_on_one_write_at_a_time_and_sqlite_on_all(
        settings: Settings, database: Database) -> None:
    unset = settings.model_copy(update={"write_concurrency": None})
    with other_client(unset, database, "jaeren-dps") as dps:
        limiter = dps.app.state.write_limiter  # type: ignore[attr-defined]
        if database.dialect == "postgresql":
            assert limiter.total_tokens == 1
        else:
            assert limiter is None

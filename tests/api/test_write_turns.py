"""HUB_WRITE_CONCURRENCY and HUB_WRITE_BURST (hub/api/turns.py): a bulkhead for writes. At
most that many write requests of one process are worked on at once (the burst while it
serves no read, the narrower number while it does); the others wait for a turn, and reads
never wait for one."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

import hub.api.messaging
import hub.store.service
from hub.config import Settings
from hub.db.engine import Database
from tests.access_clients import other_client
from tests.delivery.conftest import wait_for
from tests.factories import fnr, patient
from tests.messaging.test_story import EXAMPLES, load, register_story_organizations

CONSENT, CARE_PLAN, ADMISSION = (load(EXAMPLES[i]) for i in (0, 1, 2))


class HeldValidation:
    """check_message (the first work of a message, before any database lock) that holds
    the first `hold` messages in it until `gate` is set."""

    def __init__(self, real: Callable[[Any], Any], hold: int = 1) -> None:
        self.real, self.entered, self.gate = real, 0, threading.Event()
        self.guard, self.hold = threading.Lock(), hold

    def __call__(self, bundle: Any) -> Any:
        with self.guard:
            self.entered += 1
            first = self.entered <= self.hold
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
    def make(turns: int, burst: int | None = None, backlog: int = 64) -> Iterator[TestClient]:
        limited = settings.model_copy(update={"write_concurrency": turns,
                                              "write_burst": burst, "write_backlog": backlog})
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
        limiter = dps.app.state.write_turns.limiter  # type: ignore[attr-defined]
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
        assert dps.app.state.write_turns is None  # type: ignore[attr-defined]
        with in_background(lambda: dps.post("/fhir/$process-message", json=ADMISSION)) as a:
            wait_for(lambda: held.entered == 1, within=15, what="the first message held")
            with in_background(lambda: dps.post("/fhir/$process-message",
                                                json=CARE_PLAN)) as b:
                wait_for(lambda: held.entered == 2, within=15,
                         what="the second message started while the first is held")
                held.gate.set()
        assert a[0].status_code == 200, a[0].text
        assert b[0].status_code == 200, b[0].text


def test_by_default_postgresql_narrows_to_one_write_while_reading_and_sqlite_has_no_limit(
        settings: Settings, database: Database) -> None:
    unset = settings.model_copy(update={"write_concurrency": None, "write_burst": None})
    with other_client(unset, database, "jaeren-dps") as dps:
        turns = dps.app.state.write_turns  # type: ignore[attr-defined]
        if database.dialect == "postgresql":
            assert (turns.with_reads, turns.burst) == (1, 4)
            assert turns.limiter.total_tokens == 4  # nobody reading
        else:
            assert turns is None
    only = settings.model_copy(update={"write_concurrency": 2, "write_burst": None})
    with other_client(only, database, "jaeren-dps") as dps:
        turns = dps.app.state.write_turns  # type: ignore[attr-defined]
        assert (turns.with_reads, turns.burst) == (2, 2)  # set alone: no burst beyond it


class HeldRead:
    """service.vread (the work of GET .../_history/N) held in its transaction until
    `release`: a read in flight."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real, self.entered, self.gate = real, threading.Event(), threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        assert self.gate.wait(30), "never released"
        return self.real(*args, **kwargs)


def test_a_read_narrows_the_turns_and_with_nobody_reading_writes_take_the_burst(
        dps_at: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with dps_at(1, burst=2) as dps:
        pid = _patient_id(dps)
        held = HeldValidation(hub.api.messaging.check_message, hold=2)
        monkeypatch.setattr(hub.api.messaging, "check_message", held)
        turns = dps.app.state.write_turns  # type: ignore[attr-defined]
        assert turns.limiter.total_tokens == 1  # the search above is just over
        wait_for(lambda: turns.limiter.total_tokens == 2, within=5,
                 what="the burst once nobody has read for the grace")
        turns.grace = 1.0  # (0.5 s in service) long enough to see, short enough to wait for
        reading = HeldRead(hub.store.service.vread)
        monkeypatch.setattr(hub.store.service, "vread", reading)

        def message(body: dict[str, Any]) -> Callable[[], httpx.Response]:
            return lambda: dps.post("/fhir/$process-message", json=body)

        with in_background(lambda: dps.get(f"/fhir/Patient/{pid}/_history/1")) as read:
            assert reading.entered.wait(15), "the read never started"
            assert turns.limiter.total_tokens == 1  # a read in flight: one turn
            with in_background(message(ADMISSION)) as first:
                wait_for(lambda: held.entered == 1, within=15, what="the first message held")
                with in_background(message(CARE_PLAN)) as second:
                    wait_for(lambda: turns.limiter.statistics().tasks_waiting == 1,
                             within=15, what="the second message queued")
                    assert held.entered == 1  # it has not started
                    reading.gate.set()  # the read is answered: nobody reads any more
                    wait_for(lambda: bool(read), within=30, what="the read answered")
                    answered = time.monotonic()
                    assert turns.limiter.total_tokens == 1  # narrow for the grace still
                    assert held.entered == 1
                    # then the burst: the second message works beside the held first one
                    wait_for(lambda: held.entered == 2, within=15,
                             what="the second message started beside the first")
                    assert time.monotonic() - answered >= 0.9 * turns.grace
                    assert turns.limiter.total_tokens == 2
                    held.gate.set()
        assert read[0].status_code == 200, read[0].text
        assert first[0].status_code == 200, first[0].text
        assert second[0].status_code == 200, second[0].text
        assert turns.reads == 0


@contextmanager
def two_messages_held(dps: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two messages of `dps` held in validation (working, so held by the process) for the
    duration; on leaving they are let go and must be taken."""
    held = HeldValidation(hub.api.messaging.check_message, hold=2)
    monkeypatch.setattr(hub.api.messaging, "check_message", held)
    with in_background(lambda: dps.post("/fhir/$process-message", json=ADMISSION)) as first, \
            in_background(lambda: dps.post("/fhir/$process-message", json=CARE_PLAN)) as second:
        wait_for(lambda: held.entered == 2, within=15, what="two messages held")
        try:
            yield
            assert held.entered == 2  # nothing else began meanwhile
        finally:
            held.gate.set()
    assert first[0].status_code == 200, first[0].text
    assert second[0].status_code == 200, second[0].text


def test_past_the_backlog_a_write_is_shed_with_503_and_the_held_ones_are_taken(
        dps_at: Callable[..., Any], database: Database,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """HUB_WRITE_BACKLOG: a process holding that many write requests (here two, held in
    validation) answers one more 503 with Retry-After at once, stores nothing of it and
    records it in the audit trail; the held ones are taken, and once they are answered a
    write is taken again (the bound is on what is held, not on a count)."""
    with dps_at(0, backlog=2) as dps:
        reads = dps.app.state.read_audit  # type: ignore[attr-defined]
        spooled = reads.check({}).waiting
        with two_messages_held(dps, monkeypatch):
            shed = dps.post("/fhir/Patient", json=patient(fnr(start=11)))
            assert shed.status_code == 503, shed.text
            assert shed.headers["retry-after"] == "1"
            assert shed.json()["issue"][0]["code"] == "transient"
            if database.dialect == "sqlite":  # its audit record, off the main write lock
                assert reads.check({}).waiting == spooled + 1
        assert dps.app.state.writes_held == 0  # type: ignore[attr-defined]
        found = dps.get("/fhir/Patient", params={"identifier": fnr(start=11)})
        assert found.json().get("total", 0) == 0  # the shed Patient was not stored
        again = dps.post("/fhir/Patient", json=patient(fnr(start=11)))  # control
        assert again.status_code == 201, again.text
        reads.move_all()
        with database.session(write=False) as s:
            bodies = [json.loads(b) for b in s.execute(
                text("SELECT body FROM audit_records")).scalars()]
        shed_records = [b for b in bodies if "already holds" in b.get("outcomeDesc", "")]
        assert [b["outcome"] for b in shed_records] == ["8"]  # recorded once, as a 5xx


def test_without_a_backlog_bound_every_write_waits_its_turn(
        dps_at: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with dps_at(0, backlog=0) as dps, two_messages_held(dps, monkeypatch):
        third = dps.post("/fhir/Patient", json=patient(fnr(start=11)))
        assert third.status_code == 201, third.text

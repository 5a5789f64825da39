"""The background Dispatcher and the `hub deliveries` commands."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from hub.audit.models import AuditRecordRow
from hub.config import Settings, get_settings
from hub.db.engine import Database
from hub.delivery.cli import deliveries_app
from hub.delivery.dispatcher import BATCH, Dispatcher, start_dispatcher, sweep
from tests.delivery.conftest import ReceiverFactory, wait_for
from tests.delivery.factory import accept, add_org, add_patient, deliveries, delivery
from tests.delivery.receivers import Reply


def test_the_dispatcher_delivers_in_the_background_and_stops_cleanly(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("time")
    add_org(database, "sender")
    add_org(database, "time", r.url)
    p = add_patient(database)
    dispatcher = start_dispatcher(database, fast)
    try:
        assert dispatcher.running
        sent = [accept(database, fast, sender="sender", receivers=["time"], patient_id=p)
                for _ in range(5)]
        wait_for(lambda: len(r.accepted) == 5, within=15, what="five deliveries")
    finally:
        started = time.monotonic()
        dispatcher.stop()
    assert time.monotonic() - started < 2
    assert not dispatcher.running
    assert r.accepted_ids() == [s.header_id for s in sent]
    wait_for(lambda: all(d.status == "delivered" for d in deliveries(database)), within=5)
    assert dispatcher.sweeps > 0
    assert dispatcher.failures == 0


@pytest.mark.parametrize("threads", [1, 2])
def test_a_hanging_receiver_holds_up_no_other_receiver_across_passes(
        database: Database, fast: Settings, receiver: ReceiverFactory, threads: int) -> None:
    """A receiver that takes every POST in and never answers in time, with more deliveries
    due than the process has senders: while the dispatcher waits out those attempts, a
    message to another receiver accepted meanwhile goes at once, not when the hanging
    attempts time out (a pass must not wait for its slowest, and one receiver must not take
    every sender: HUB_DELIVERY_PER_RECEIVER)."""
    settings = fast.model_copy(update={"delivery_timeout": 3.0})
    hanging, quick = receiver("hanging"), receiver("quick")
    hanging.reply = lambda _h: Reply(200, delay=30.0)
    add_org(database, "sender")
    add_org(database, "hanging", hanging.url)
    add_org(database, "quick", quick.url)
    many = 2 * BATCH + 4  # one queue head per patient: more than the process's senders
    for n in range(many):
        accept(database, settings, sender="sender", receivers=["hanging"],
               patient_id=add_patient(database, n))
    with Dispatcher(database, settings, threads=threads):
        cap = settings.delivery_per_receiver
        wait_for(lambda: len(hanging.requests) >= cap, within=15,
                 what="the hanging receiver's attempts")
        first = hanging.requests[0].at
        m = accept(database, settings, sender="sender", receivers=["quick"],
                   patient_id=add_patient(database, many))
        wait_for(lambda: len(quick.accepted) == 1, within=15, what="the quick delivery")
        # taken in before the first hanging attempt gave up (measured from that attempt's
        # own arrival, so that the machine's load, which delays both alike, does not count)
        assert quick.accepted[0].at - first < settings.delivery_timeout
        # and the hanging receiver held no more senders than its cap
        assert len(hanging.requests) == cap
    assert quick.accepted_ids() == [m.header_id]


def test_two_dispatchers_share_one_cap_per_receiver(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    """HUB_DELIVERY_PER_RECEIVER counts the attempts under way of every dispatcher on the
    database (their leases), not each one's own: two dispatchers, which share nothing but
    the database (as two processes), hold no more than the cap at a hanging receiver, where
    each held a cap of its own before (6 here); the other receivers still get theirs."""
    settings = fast.model_copy(update={"delivery_timeout": 3.0, "delivery_per_receiver": 3})
    hanging, quick = receiver("hanging"), receiver("quick")
    hanging.reply = lambda _h: Reply(200, delay=30.0)
    add_org(database, "sender")
    add_org(database, "hanging", hanging.url)
    add_org(database, "quick", quick.url)
    for n in range(12):  # one queue head per patient
        accept(database, settings, sender="sender", receivers=["hanging"],
               patient_id=add_patient(database, n))
    with Dispatcher(database, settings) as one, Dispatcher(database, settings) as two:
        wait_for(lambda: len(hanging.requests) >= 3, within=15,
                 what="the hanging receiver's attempts")
        first = hanging.requests[0].at
        passes = one.sweeps + two.sweeps
        wait_for(lambda: one.sweeps + two.sweeps >= passes + 10, within=15,
                 what="more passes of both dispatchers")
        # well before the held attempts time out (their leases stay until then)
        assert time.monotonic() - first < settings.delivery_timeout
        assert len(hanging.requests) == 3
        m = accept(database, settings, sender="sender", receivers=["quick"],
                   patient_id=add_patient(database, 12))
        wait_for(lambda: len(quick.accepted) == 1, within=15, what="the quick delivery")
    assert quick.accepted_ids() == [m.header_id]


def test_a_backlog_to_one_receiver_goes_as_fast_as_it_answers_not_a_cap_a_poll(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    """A receiver with more due than its cap (HUB_DELIVERY_PER_RECEIVER) gets the next as
    soon as an attempt to it ends, not the cap once a poll interval: 20 deliveries at a cap
    of 2 with a poll of 5 s arrive within one interval (before, they came in batches a poll
    apart: 10 s for the 20)."""
    settings = fast.model_copy(update={"delivery_per_receiver": 2,
                                       "delivery_poll_interval": 5.0})
    quick = receiver("quick")
    add_org(database, "sender")
    add_org(database, "quick", quick.url)
    for n in range(20):  # one queue head per patient: all due at once
        accept(database, settings, sender="sender", receivers=["quick"],
               patient_id=add_patient(database, n))
    with Dispatcher(database, settings):
        wait_for(lambda: len(quick.accepted) >= 1, within=15, what="the first delivery")
        first = quick.accepted[0].at
        wait_for(lambda: len(quick.accepted) == 20, within=30, what="all 20 deliveries")
        assert quick.accepted[-1].at - first < settings.delivery_poll_interval


def test_an_injected_transport_replaces_the_network(database: Database, fast: Settings) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    add_org(database, "sender")
    add_org(database, "time", "http://receiver.invalid/fhir")
    m = accept(database, fast, sender="sender", receivers=["time"],
               patient_id=add_patient(database))
    assert sweep(database, fast, transport=httpx.MockTransport(handle)).delivered == 1
    assert [str(q.url) for q in seen] == ["http://receiver.invalid/fhir"]
    assert seen[0].headers["content-type"] == "application/fhir+json"
    assert delivery(database, m.deliveries["time"]).status == "delivered"
    with Dispatcher(database, fast, transport=httpx.MockTransport(handle)) as running:
        assert running.running


@pytest.fixture
def cli(fast: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("HUB_DATABASE_URL", fast.database_url)
    monkeypatch.setenv("HUB_AUDIT_KEY_FILE", fast.audit_key_file)  # the replay's records
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_lists_and_replays_dead_letters(
        cli: CliRunner, database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("time")
    r.script.extend([Reply(410), Reply(422)])
    add_org(database, "sender")
    add_org(database, "time", r.url)
    p = add_patient(database)
    one = accept(database, fast, sender="sender", receivers=["time"], patient_id=p)
    two = accept(database, fast, sender="sender", receivers=["time"], patient_id=p)
    sweep(database, fast)
    sweep(database, fast)
    assert [d.status for d in deliveries(database)] == ["dead-letter", "dead-letter"]
    listed = cli.invoke(deliveries_app, ["list", "--status", "dead-letter"])
    assert listed.exit_code == 0, listed.output
    assert one.header_id in listed.output
    assert two.header_id in listed.output
    assert "HTTP 410" in listed.output
    did = cli.invoke(deliveries_app, ["replay", str(one.deliveries["time"])])
    assert did.exit_code == 0, did.output
    assert did.output.split() == [str(one.deliveries["time"])]
    did = cli.invoke(deliveries_app, ["replay", "--message", two.header_id])
    assert did.output.split() == [str(two.deliveries["time"])]
    assert [d.status for d in deliveries(database)] == ["queued", "queued"]
    again = cli.invoke(deliveries_app, ["replay", "--message", two.header_id])
    assert again.exit_code == 1
    assert "no dead letters" in again.output
    assert "Traceback" not in again.output
    bad = cli.invoke(deliveries_app, ["list", "--status", "lost"])
    assert bad.exit_code == 1
    assert cli.invoke(deliveries_app, ["replay"]).exit_code == 2


def _admin_records(database: Database) -> list[tuple[str, str]]:
    """(outcome, outcomeDesc) of each admin record, oldest first."""
    with database.session(write=False) as s:
        bodies = [json.loads(bytes(b)) for b in s.scalars(
            select(AuditRecordRow.body).where(AuditRecordRow.subtype == "admin")
            .order_by(AuditRecordRow.seq))]
    return [(b["outcome"], b.get("outcomeDesc", "")) for b in bodies]


def test_cli_replay_leaves_an_admin_record_done_or_refused(
        cli: CliRunner, database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    """`hub deliveries replay` is an admin command: recorded with the operator, done or
    refused (as `hub org add`), and each replayed delivery keeps its history in the trail
    (the same service the /ui button and $replay use)."""
    r = receiver("time")
    r.script.append(Reply(422))
    add_org(database, "sender")
    add_org(database, "time", r.url)
    m = accept(database, fast, sender="sender", receivers=["time"],
               patient_id=add_patient(database))
    sweep(database, fast)
    did = m.deliveries["time"]
    assert _admin_records(database) == []
    assert cli.invoke(deliveries_app, ["replay", str(did)]).exit_code == 0
    assert _admin_records(database) == [("0", f"deliveries replay {did}")]
    refused = cli.invoke(deliveries_app, ["replay", str(did)])  # queued now: not a dead letter
    assert refused.exit_code == 1
    unknown = cli.invoke(deliveries_app, ["replay", "--message", "nonexistent"])
    assert unknown.exit_code == 1
    later = _admin_records(database)[1:]
    assert [outcome for outcome, _ in later] == ["4", "4"]
    assert later[0][1].startswith(f"deliveries replay {did} (refused: Only dead letters")
    assert later[1][1].startswith("deliveries replay --message nonexistent (refused: ")
    with database.session(write=False) as s:
        steps = [json.loads(bytes(b))["outcomeDesc"] for b in s.scalars(
            select(AuditRecordRow.body).where(AuditRecordRow.subtype == "delivery"))]
    assert any(t.startswith("Replayed by System/") and "HTTP 422" in t for t in steps)

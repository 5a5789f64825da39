"""Several dispatcher processes on one database, and one killed with SIGKILL mid-send."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from hub.config import Settings
from hub.db.engine import Database
from tests.delivery.conftest import ReceiverFactory, wait_for
from tests.delivery.factory import accept, add_org, add_patient, deliveries
from tests.delivery.receivers import Reply
from tests.delivery.workers import sweep_until_none_queued

ROOT = Path(__file__).resolve().parents[2]


def test_two_dispatcher_processes_deliver_every_message_exactly_once(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    a, b = receiver("a"), receiver("b")
    a.reply = b.reply = lambda _h: Reply(200, delay=0.02)
    add_org(database, "sender")
    add_org(database, "a", a.url)
    add_org(database, "b", b.url)
    patients = [add_patient(database, n) for n in range(5)]
    sent = [accept(database, fast, sender="sender", receivers=["a", "b"], patient_id=p)
            for _ in range(6) for p in patients]
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 4  # both begin together, after the imports
    with ctx.Pool(2) as pool:
        shares = pool.starmap(sweep_until_none_queued,
                              [(fast.model_dump_json(), start_at, start_at + 60)] * 2)
    expected = Counter(s.header_id for s in sent)
    assert Counter(a.accepted_ids()) == expected  # every message exactly once
    assert Counter(b.accepted_ids()) == expected
    assert Counter(a.requested_ids()) == expected  # and never sent twice, not even in vain
    assert sum(shares) == 2 * len(sent)
    assert all(d.status == "delivered" and d.attempts == 1 for d in deliveries(database))
    for r in (a, b):  # per patient, in acceptance order
        got = r.accepted_ids()
        for n, _ in enumerate(patients):
            mine = [s.header_id for s in sent[n::5]]
            assert [h for h in got if h in mine] == mine


def _dispatcher(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HUB_DATABASE_URL": settings.database_url,
           "HUB_DELIVERY_TIMEOUT": str(settings.delivery_timeout),
           "HUB_DELIVERY_FIRST_RETRY": str(settings.delivery_first_retry),
           "HUB_DELIVERY_POLL_INTERVAL": str(settings.delivery_poll_interval),
           "HUB_DELIVERY_MAX_AGE": str(settings.delivery_max_age)}
    return subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "deliveries", "run"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def _until_delivered(database: Database, settings: Settings, log: Path, what: str) -> int:
    """Run `hub deliveries run` until every delivery is delivered, then stop it with SIGTERM
    (it must exit 0); its process id."""
    proc = _dispatcher(settings, log)
    try:
        wait_for(lambda: all(d.status == "delivered" for d in deliveries(database)),
                 within=40, what=what)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()
    return proc.pid


def test_a_dispatcher_killed_mid_send_loses_nothing(
        database: Database, fast: Settings, receiver: ReceiverFactory, tmp_path: Path) -> None:
    """SIGKILL after the POST and before the outcome is recorded: the lease expires and the
    next dispatcher sends those again. Every message arrives at least once; only the ones in
    flight at the kill arrive twice, and none more than twice."""
    settings = fast.model_copy(update={"delivery_timeout": 1.0})  # lease: 3 s
    r = receiver("time")
    slow = {"on": True}
    r.reply = lambda _h: Reply(200, delay=1.5 if slow["on"] else 0.0)
    add_org(database, "sender")
    add_org(database, "time", r.url)
    patients = [add_patient(database, n) for n in range(3)]
    sent = [accept(database, settings, sender="sender", receivers=["time"], patient_id=p)
            for _ in range(2) for p in patients]
    log = tmp_path / "dispatchers.log"
    first = _dispatcher(settings, log)
    try:
        wait_for(lambda: len(r.requests) >= 3, within=30, what="the first dispatcher to send")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    in_flight = set(r.accepted_ids())  # taken in by the receiver, never recorded
    assert in_flight
    assert all(d.status == "queued" for d in deliveries(database))
    slow["on"] = False
    _until_delivered(database, settings, log, "the second dispatcher to deliver everything")
    got = Counter(r.accepted_ids())
    assert set(got) == {s.header_id for s in sent}  # nothing lost
    # at least once: those in flight at the kill were sent again (the lease expired), and
    # only those, and only once more
    assert {h for h, n in got.items() if n > 1} == in_flight
    assert max(got.values()) == 2
    first_arrivals = list(dict.fromkeys(r.accepted_ids()))
    for n, _ in enumerate(patients):  # still per patient in order
        mine = [s.header_id for s in sent[n::3]]
        assert [h for h in first_arrivals if h in mine] == mine


def test_a_dispatcher_process_logs_each_failed_attempt_with_its_time(
        database: Database, fast: Settings, receiver: ReceiverFactory, tmp_path: Path) -> None:
    """The operator's view of a receiver in trouble: `hub deliveries run` writes one line per
    failed attempt, with time, level, logger and process id, naming the delivery; the
    attempt that succeeds writes none."""
    r = receiver("time")
    r.script.append(Reply(503))
    add_org(database, "sender")
    add_org(database, "time", r.url)
    m = accept(database, fast, sender="sender", receivers=["time"],
               patient_id=add_patient(database))
    log = tmp_path / "dispatcher.log"
    pid = _until_delivered(database, fast, log, "the delivery after one 503")
    lines = [ln for ln in log.read_text().splitlines() if " hub.delivery[" in ln]
    d = m.deliveries["time"]
    assert len(lines) == 1, log.read_text()
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} WARNING hub\.delivery\[{pid}\]: "
        rf"delivery {d} to time: attempt 1 failed \(HTTP 503 from {re.escape(r.url)}.*\); "
        r"next try at \d{4}-\d\d-\d\dT\S+", lines[0]), lines[0]

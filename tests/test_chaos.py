"""The short chaos run (issue #16): bench/chaos.py with a small load and a quick schedule.

Every role process is SIGKILLed once under load, PostgreSQL is crashed and started again, and
both receivers are down for a while; afterwards nothing answered 200 may be lost or stored
twice, every delivery must have reached its receiver in order, every due timer (a discharge's
follow-up checks; the notices of a consent's expiry, a meeting, an unanswered
ready-for-discharge and an unacknowledged delivery) must have been acted on once, and `hub
audit verify` must pass. The run brings its own PostgreSQL up with scripts/pg.sh (it
restarts it, so it cannot use the suite's server); it runs where the suite runs on PostgreSQL
(HUB_TEST_POSTGRES_URL set, as scripts/test.sh and CI do).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ENV

ROOT = Path(__file__).resolve().parent.parent

# Checks the report must show with zero: each one a way of losing or doubling something.
ZERO = (
    "story messages never answered 200",
    "accepted messages not stored (lost)",
    "accepted messages stored more than once",
    "messages never answered 200 but stored",
    "messages never answered 200 with resources stored (partial)",
    "people stored as more than one Patient",
    "accepted discharges without exactly 3 follow-up checks",
    "accepted messages with no delivery to Time kommune",
    "deliveries not delivered (queued, dead-letter)",
    "delivered per the hub but never received",
    "received but not a delivery of the hub",
    "duplicates at receivers, unexplained",
    "(receiver, patient) queues out of order",
    "due timers not acted on",
    "due timers closed without acting (no contact was sent)",
    "timers not acted on exactly once (overdue versions, notices per receiver)",
    "follow-up-overdue notices stored beyond one per escalated timer",
    "deliveries to chase without exactly one acknowledgement timer",
    "acknowledgement timers due but not acted on",
    "acknowledgement timers closed without a notice",
    "acknowledgement timers not acted on exactly once (notices per receiver)",
    "delivery-unacknowledged notices stored beyond one per notified timer",
    "answers from time-kommune not accepted, stored once and received",
    "hangs that held no POST (nothing was sent there while it hung)",
    "drain bound reached before settling",
    "audit verify failures",
    "role processes dead at the end",
)
# The timers whose action is one notice: (name in the report, story message, notice event).
NOTICE_TIMERS = (("consent expiry", "consent", "consent-expiring"),
                 ("meeting reminder", "meeting", "meeting-reminder"),
                 ("readiness", "readiness", "discharge-readiness-overdue"))
ZERO += tuple(check for name, story, event in NOTICE_TIMERS for check in (
    f"accepted {story} messages without exactly one {name} timer",
    f"{name} timers due but not acted on",
    f"{name} timers closed without a notice",
    f"{name} timers not acted on exactly once (notices per receiver)",
    f"{event} notices stored beyond one per notified timer"))
EVENTS = ("SIGKILL api-1", "SIGKILL dispatcher", "SIGKILL scheduler", "SIGKILL sealer",
          "PostgreSQL stop -m immediate, start", "receiver time-kommune port closed",
          "receiver time-kommune answers 503")


def _report(out: str) -> dict[str, str]:
    lines = {}
    for line in out.splitlines():
        m = re.match(r"^(\S.*?)\s{2,}(\S.*)$", line)
        if m:
            lines[m.group(1)] = m.group(2)
    return lines


@pytest.mark.timeout(900)
def test_nothing_accepted_is_lost_or_doubled_under_chaos() -> None:
    if not os.environ.get(PG_ENV):
        pytest.skip(f"PostgreSQL not configured ({PG_ENV} unset; CI sets it)")
    # Bounds scale with how busy the machine is: the drain waits for retries and sweeps,
    # and for the dispatcher to work off the load's backlog (about 7,000 deliveries): 138-141 s
    # on a quiet machine in session 18, parent tree and this alike, over the 120 s this
    # bound gave at a load under the cores (one such run failed on it, 112 still queued).
    busy = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    drain = int(min(480.0, 240 * busy))
    done = subprocess.run(
        [sys.executable, "bench/chaos.py", "--clients", "2", "--gap", "5", "--pause", "2",
         "--down", "4", "--drain", str(drain)],
        cwd=ROOT, capture_output=True, text=True, timeout=360 + drain, check=False)
    out = done.stdout
    assert done.returncode == 0, f"{out[-6000:]}\n{done.stderr[-3000:]}"
    assert "violations: 0" in out, out
    report = _report(out)
    for name in ZERO:
        assert report.get(name) == "0", f"{name}: {report.get(name)}\n{out}"
    for event in EVENTS:
        assert re.search(rf"^\s+[\d.]+ -\s+[\d.]+\s+{re.escape(event)}$", out, re.M), \
            f"the chaos event {event!r} did not happen\n{out}"
    # The run did something worth checking: messages accepted, delivered, timers acted on.
    assert int(report["accepted (200)"]) >= 30, out
    assert report["answers from time-kommune posted while jaeren-dps hung"] == "1", out
    assert int(report["deliveries made (distinct messages received)"]) >= 30, out
    assert int(report["timers acted on (escalated)"]) >= 5, out
    for name, _story, _event in NOTICE_TIMERS:
        assert int(report[f"{name} timers acted on (notice sent)"]) >= 3, out
    # every meeting invitation and ready-for-discharge delivered to Time kommune goes
    # unanswered here, so each is chased once its HUB_ACK_TIMEOUT has passed
    assert int(report["acknowledgement timers acted on (notice sent)"]) >= 3, out
    refused, answered_422 = re.findall(r"\d+", report["refused on purpose (422 expected)"])[:2]
    assert int(refused) >= 1, out
    assert answered_422 == refused, out

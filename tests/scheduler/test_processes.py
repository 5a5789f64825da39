"""Restart-safe and exactly once: what fell due while the hub was down is done when it starts
(inside `hub serve`, or `hub scheduler`), and sweepers sharing one database raise each
escalation once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.app import create_app
from hub.config import Settings
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.delivery.content import message_bundle
from hub.scheduler.models import ScheduledCheckRow
from hub.scheduler.sweep import SweepReport, sweep
from tests.factories import fnr
from tests.scheduler.story import accepted, discharge, follow_up_tasks, notices, oslo, overdue

ROOT = Path(__file__).resolve().parents[2]
Hub = dict[str, TestClient]


def test_a_restart_catches_up_what_fell_due_while_down(
        hub: Hub, database: Database, settings: Settings) -> None:
    accepted(hub, discharge(oslo(2, 10)))  # first contact due tomorrow
    assert sweep(database, settings).acted == 0
    # the hub is down for two days; a fresh process (its own Database) sweeps on start
    fresh = Database.connect(settings)
    try:
        report = sweep(fresh, settings, now=utcnow() + timedelta(days=2))
    finally:
        fresh.dispose()
    assert report.outcomes == {"escalated": 1}
    assert overdue(follow_up_tasks(hub)["first-contact"])


def test_hub_serve_sweeps_at_start(hub: Hub, database: Database, settings: Settings) -> None:
    accepted(hub, discharge(oslo(40, 10)))  # everything fell due while "down"
    serving = settings.model_copy(update={"scheduler": True, "scheduler_interval": 3600})
    with TestClient(create_app(serving)) as restarted:
        scheduler = restarted.app.state.scheduler  # type: ignore[attr-defined]
        assert scheduler is not None
        assert scheduler.running
        assert scheduler.swept.wait(30)
        assert scheduler.last is not None
        assert scheduler.last.outcomes == {"escalated": 3}
    assert not scheduler.running
    assert len(notices(database, "follow-up-overdue")) == 3


def _scheduler_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HUB_DATABASE_URL": settings.database_url,
            "HUB_BASE_URL": settings.base_url, "HUB_AUDIT_KEY_FILE": settings.audit_key_file,
            **extra}


def test_hub_scheduler_command_catches_up(hub: Hub, database: Database,
                                          settings: Settings) -> None:
    accepted(hub, discharge(oslo(40, 10)))
    done = subprocess.run([sys.executable, "-m", "hub.cli", "scheduler", "--once"],
                          env=_scheduler_env(settings), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "acted on 3 due checks" in done.stdout
    assert len(notices(database, "follow-up-overdue")) == 3


def _discharged_long_ago(hub: Hub, patients: int) -> None:
    for n in range(patients):
        accepted(hub, discharge(oslo(40, 10), fnr=fnr(start=100 + n)))


def _each_escalated_once(database: Database, checks: int) -> None:
    sent = notices(database, "follow-up-overdue")
    with database.session(write=False) as s:
        rows = s.scalars(select(ScheduledCheckRow)).all()
        tasks = Counter(message_bundle(s, m)["entry"][1]["resource"]["id"] for m, _ in sent)
    assert all(r.outcome == "escalated" for r in rows)
    assert len(tasks) == checks
    assert set(tasks.values()) == {1}
    assert all(len(deliveries) == 2 for _m, deliveries in sent)


def test_two_hub_scheduler_processes_raise_each_escalation_once(
        hub: Hub, database: Database, settings: Settings) -> None:
    _discharged_long_ago(hub, 12)
    env = _scheduler_env(settings, HUB_SCHEDULER_BATCH="4")
    procs = [subprocess.Popen([sys.executable, "-m", "hub.cli", "scheduler", "--once"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    acted = [int(out.split("acted on ")[1].split()[0]) for out, _err in outputs]
    assert sum(acted) == 36
    _each_escalated_once(database, 36)


def test_two_sweepers_raise_each_escalation_once(hub: Hub, database: Database,
                                                 settings: Settings) -> None:
    _discharged_long_ago(hub, 12)
    small = settings.model_copy(update={"scheduler_batch": 4})
    start = threading.Barrier(2)
    reports: list[SweepReport] = []

    def sweeper() -> None:
        own = Database.connect(small)  # its own connections, like another process
        try:
            start.wait()
            reports.append(sweep(own, small))
        finally:
            own.dispose()

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sum(r.acted for r in reports) == 36
    assert sum(r.failed for r in reports) == 0
    _each_escalated_once(database, 36)

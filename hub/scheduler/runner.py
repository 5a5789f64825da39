"""The scheduler process: APScheduler 3 runs a sweep every HUB_SCHEDULER_INTERVAL seconds,
the first at once on start (so what fell due while the hub was down is done now).

It runs inside `hub serve` (HUB_SCHEDULER, on by default) or alone as `hub scheduler`; any
number of them may share one database, as sweeps claim their rows (hub/scheduler/sweep.py).
One sweep at a time per process (max_instances 1; a sweep that overruns its interval makes
the next one wait, never pile up).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from hub.audit.recorder import Auditor
from hub.config import Settings
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.scheduler.sweep import SweepReport, sweep

log = logging.getLogger("hub.scheduler")
JOB = "hub-timed-checks"


class Scheduler:
    """Sweeps due checks in the background; `start()`, then `stop()` on shutdown."""

    def __init__(self, db: Database, settings: Settings, *,
                 auditor: Auditor | None = None) -> None:
        self.db = db
        self.settings = settings
        self.auditor = auditor
        self.sweeps = 0
        self.failures = 0
        self.last: SweepReport | None = None
        self.swept = threading.Event()  # set after each sweep (tests wait on it)
        self._aps = BackgroundScheduler(executors={"default": ThreadPoolExecutor(1)},
                                        timezone="UTC")

    def run_once(self) -> SweepReport | None:
        """One sweep now; failures are logged and counted, never raised (the next interval
        tries again)."""
        try:
            report = sweep(self.db, self.settings, auditor=self.auditor)
        except Exception:
            self.failures += 1
            log.exception("timed-check sweep failed; trying again next interval")
            return None
        finally:
            self.sweeps += 1
            self.swept.set()
        self.last = report
        if report.acted or report.failed:
            log.info("timed checks: %s, %d failed", report.outcomes, report.failed)
        return report

    @property
    def running(self) -> bool:
        """Whether the background scheduler runs."""
        return bool(self._aps.running)

    def start(self, first_at: datetime | None = None) -> Scheduler:
        """Start sweeping: at once (catching up), then every interval."""
        self._aps.add_job(self.run_once, "interval", id=JOB,
                          seconds=self.settings.scheduler_interval,
                          next_run_time=first_at or utcnow(), max_instances=1, coalesce=True,
                          misfire_grace_time=None)
        self._aps.start()
        return self

    def stop(self, wait: bool = True) -> None:
        """Stop sweeping (waiting for a sweep under way, unless `wait` is False)."""
        if self._aps.running:
            self._aps.shutdown(wait=wait)


def start_scheduler(db: Database, settings: Settings,
                    auditor: Auditor | None = None) -> Scheduler:
    """A started Scheduler on the app's database (call `.stop()` on shutdown)."""
    return Scheduler(db, settings, auditor=auditor).start()

"""One sweep: act on every due row, in batches, each batch one transaction.

Safe in any number of threads and hub processes on one database: a batch locks its rows
(`FOR UPDATE SKIP LOCKED` on PostgreSQL, so sweepers share the work; SQLite's write
transaction is exclusive), acts on each, closes each, and commits the effects with the
closing. A row is therefore acted on exactly once, whoever sweeps; a crash before the commit
leaves it open for the next sweep. A failing row rolls back its own savepoint only, counts
an attempt and waits a little longer (at most an hour) so it never blocks the rows behind it.

What is due is found through the partial index on the due time of open rows: a sweep that
finds nothing reads one index page, however many checks are pending.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from hub.audit.recorder import Auditor
from hub.config import Settings
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.scheduler.actions import ACTIONS, Act
from hub.scheduler.due import claim, close
from hub.scheduler.journal import Journal, auditor_for
from hub.scheduler.models import ScheduledCheckRow

log = logging.getLogger("hub.scheduler")
C = ScheduledCheckRow
MAX_RETRY = 3600.0


@dataclass
class SweepReport:
    """What one sweep did: rows closed per outcome, failures, batches."""

    outcomes: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def acted(self) -> int:
        """Rows closed."""
        return sum(self.outcomes.values())


def _anything_due(db: Database, at: datetime) -> bool:
    """Looked up in a read transaction first, so an idle sweep never takes SQLite's one
    write lock."""
    with db.session(write=False) as session:
        return session.execute(select(C.id).where(C.closed_at.is_(None), C.due_at <= at)
                               .limit(1)).first() is not None


def _act(act: Act, row: ScheduledCheckRow, report: SweepReport) -> None:
    action = ACTIONS.get(row.kind)
    try:
        with act.session.begin_nested():
            if action is None:
                raise LookupError(f"no action for due rows of kind {row.kind}")
            outcome = action(act, row)
            close(row, outcome, act.now)
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
    except Exception as exc:  # one broken row must not hold back the others
        log.exception("timed check %s %s failed", row.kind, row.target)
        act.session.info.pop("disclosures", None)
        row.attempts += 1
        row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        row.due_at = act.now + timedelta(seconds=min(60.0 * 2 ** min(row.attempts, 12),
                                                     MAX_RETRY))
        report.failed += 1
        report.errors.append(f"{row.kind} {row.target}: {row.last_error}")


def sweep(db: Database, settings: Settings, *, now: datetime | None = None,
          auditor: Auditor | None = None, batch: int | None = None) -> SweepReport:
    """Act on every row due at `now` (default: the clock), `batch` rows a transaction
    (default HUB_SCHEDULER_BATCH). `now` is injected by tests; effects are stamped with it."""
    at = now or utcnow()
    size = batch or settings.scheduler_batch
    audit = auditor or auditor_for(settings)
    report = SweepReport()
    while _anything_due(db, at):
        with db.session(write=True) as session:
            rows = claim(session, at, size)
            act = Act(session, settings, Journal(session, audit), at)
            for row in rows:
                _act(act, row, report)
        report.batches += 1
        if len(rows) < size:
            break
    return report

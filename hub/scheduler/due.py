"""Scheduling, cancelling and claiming due rows (hub/scheduler/models.py).

Everything here runs in the caller's transaction: a message's handler schedules in the
message's own transaction (CONTRACT 4: scheduled checks commit with it or not at all), and a
sweep claims and closes in the transaction of the effects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.db.types import utcnow
from hub.errors import InvalidResourceError
from hub.scheduler.models import ScheduledCheckRow

C = ScheduledCheckRow


def counted_from(at: datetime, seconds: float, *, what: str, expression: str) -> datetime:
    """`at` moved by `seconds` (negative: before it), for a due time counted from a time a
    message gave. Raises InvalidResourceError (422 naming `expression`) when that falls
    outside the calendar (a time near the year 1 or 9999), which is the sender's to correct,
    not a fault to retry."""
    try:
        return at + timedelta(seconds=seconds)
    except OverflowError:
        raise InvalidResourceError(
            f"{what} ({at.isoformat()}) is too near the end of the calendar: the hub's timed "
            "check counted from it would fall outside the years 1 to 9999.",
            expression=expression) from None


def find(session: Session, kind: str, target: str) -> ScheduledCheckRow | None:
    """The row of (kind, target), locked, or None."""
    return session.scalars(select(C).where(C.kind == kind, C.target == target)
                           .with_for_update()).one_or_none()


def schedule(session: Session, *, kind: str, target: str, due_at: datetime,
             patient_ref: str | None = None, recipients: Iterable[str] = (),
             anchor_at: datetime | None = None, move: bool = False) -> ScheduledCheckRow:
    """The due row of (kind, target), made if new. An existing row is kept as it is, unless
    `move`: then it takes the new due time, anchor and recipients, and is opened again if it
    had closed for another time or was cancelled (a meeting moved or booked again, a consent
    given a new end)."""
    orgs = ",".join(dict.fromkeys(o for o in recipients if o))
    row = find(session, kind, target)
    if row is None:
        try:
            with session.begin_nested():
                row = C(kind=kind, target=target, patient_ref=patient_ref, recipients=orgs,
                        anchor_at=anchor_at, due_at=due_at, created_at=utcnow(), attempts=0)
                session.add(row)
                session.flush()
            return row
        except IntegrityError:  # scheduled at the same moment by another transaction
            row = find(session, kind, target)
            assert row is not None
    if not move:
        return row
    moved = row.anchor_at != anchor_at or row.due_at != due_at
    if row.closed_at is not None and not moved and row.outcome != "cancelled":
        return row  # already done for this very time
    row.due_at, row.anchor_at, row.recipients = due_at, anchor_at, orgs
    row.patient_ref = patient_ref or row.patient_ref
    row.closed_at, row.outcome, row.attempts, row.last_error = None, None, 0, None
    return row


def cancel(session: Session, *, kind: str, target: str, outcome: str = "cancelled") -> bool:
    """Close the open row of (kind, target) without acting; whether there was one."""
    row = find(session, kind, target)
    if row is None or row.closed_at is not None:
        return False
    close(row, outcome)
    return True


def close(row: ScheduledCheckRow, outcome: str, at: datetime | None = None) -> None:
    """Mark a row done (in the caller's transaction, with whatever it did)."""
    row.closed_at, row.outcome = at or utcnow(), outcome


def open_checks(session: Session, *, kind: str, patient_ref: str) -> list[ScheduledCheckRow]:
    """The open rows of one kind about one patient, locked, earliest due first."""
    return list(session.scalars(
        select(C).where(C.kind == kind, C.patient_ref == patient_ref, C.closed_at.is_(None))
        .order_by(C.due_at, C.id).with_for_update()))


def claim(session: Session, at: datetime, limit: int) -> Sequence[ScheduledCheckRow]:
    """Lock up to `limit` due rows for this transaction. PostgreSQL skips rows another
    sweeper holds (FOR UPDATE SKIP LOCKED) and re-checks `closed_at` on rows it waited for;
    on SQLite the write transaction is exclusive, so no other sweeper runs meanwhile."""
    query = (select(C).where(C.closed_at.is_(None), C.due_at <= at)
             .order_by(C.due_at, C.id).limit(limit).with_for_update(skip_locked=True))
    return list(session.scalars(query))

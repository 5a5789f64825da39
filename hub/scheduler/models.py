"""The due rows of the timed checks: one per deadline, the truth the sweeps act on."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import PK, Base
from hub.db.types import UTCDateTime

OPEN = text("closed_at IS NULL")


class ScheduledCheckRow(Base):
    """One deadline: what it watches (`kind`, `target`), when it falls due, and how it ended.

    (kind, target) is unique, so scheduling the same deadline twice (a message sent again)
    finds the first row. An open row has no `closed_at`; the partial index on `due_at` holds
    only open rows, so a sweep costs with what is due, not with everything ever scheduled.
    A sweep locks a due row, acts, and closes it in one transaction: done exactly once.

    kind: follow-up | discharge-readiness | meeting-reminder | consent-expiry | ack-timeout.
    outcome: escalated | notified | met | cancelled | expired | answered | acknowledged."""

    __tablename__ = "scheduled_checks"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(200))  # "Task/<id>", "Delivery/<id>", ...
    patient_ref: Mapped[str | None] = mapped_column(String(100), nullable=True)
    recipients: Mapped[str] = mapped_column(String(1000), default="")  # organisation ids, ","
    # What the deadline counts from: the discharge, the meeting start, the consent end, ...
    anchor_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(30), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed attempts to act
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    __table_args__ = (
        UniqueConstraint("kind", "target", name="uq_scheduled_checks_kind_target"),
        Index("ix_scheduled_checks_due", "due_at", "id", sqlite_where=OPEN,
              postgresql_where=OPEN),
        Index("ix_scheduled_checks_patient", "patient_ref", "kind"),
    )

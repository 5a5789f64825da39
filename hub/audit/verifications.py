"""The runs of `hub audit verify`, kept so that people can see when the whole trail was last
checked and what was found (the auditors' disclosure log shows the latest)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.audit.models import AuditVerificationRow
from hub.audit.verify import VerifyResult


def record(session: Session, result: VerifyResult, *, at: datetime) -> None:
    """Keep the outcome of one verification (in the caller's transaction)."""
    session.add(AuditVerificationRow(verified_at=at, ok=result.ok, intact=result.count,
                                     first_broken_seq=result.first_broken_seq,
                                     reason=result.reason))


def latest(session: Session) -> AuditVerificationRow | None:
    """The newest verification, or None when the trail was never verified."""
    return session.scalars(select(AuditVerificationRow)
                           .order_by(AuditVerificationRow.verified_at.desc(),
                                     AuditVerificationRow.id.desc()).limit(1)).first()

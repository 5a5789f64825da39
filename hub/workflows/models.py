"""Tables of the care-coordination rules: user-controlled admission (self-admission).

The FHIR resources stay in the store; these rows keep what the rules must query quickly and
lock: the unit and its number of user-controlled beds, each agreement's terms, and every
request with what became of it (the figures are counted from them).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import Base
from hub.db.types import UTCDateTime


class SelfAdmissionUnitRow(Base):
    """A unit with user-controlled beds (a stored Location). Requests for one unit lock its
    row, so two of them cannot both take the last bed."""

    __tablename__ = "self_admission_units"
    unit_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # Location id
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    managing_org: Mapped[str | None] = mapped_column(String(64), nullable=True)
    beds: Mapped[int] = mapped_column(Integer)  # extension user-controlled-beds
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SelfAdmissionAgreementRow(Base):
    """The terms of one agreement (a stored ServiceRequest), as its latest version says."""

    __tablename__ = "self_admission_agreements"
    agreement_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # ServiceRequest id
    patient_ref: Mapped[str] = mapped_column(String(100))
    unit_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("self_admission_units.unit_id"))
    centre_org: Mapped[str] = mapped_column(String(64))  # the performer that sent it
    status: Mapped[str] = mapped_column(String(20))  # ServiceRequest.status
    max_days_per_stay: Mapped[int] = mapped_column(Integer)
    min_days_between_stays: Mapped[int] = mapped_column(Integer)
    valid_from_at: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The organisations party to it (",a,b,"): the sender, performers, requester, receivers.
    parties: Mapped[str] = mapped_column(String(1000))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    __table_args__ = (Index("ix_self_admission_agreements_unit", "unit_id"),)


class SelfAdmissionRequestRow(Base):
    """One request (a stored Task) and its outcome; kept whatever the outcome.

    status: requested (waiting for the centre; it holds a bed for its period) | accepted (an
    admission: start_at..end_at is the stay) | rejected (by the hub, decided_by 'hub', when it
    broke the terms or no bed was free; or by the centre) | cancelled."""

    __tablename__ = "self_admission_requests"
    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # Task id
    agreement_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("self_admission_agreements.agreement_id"))
    unit_id: Mapped[str] = mapped_column(String(64))
    patient_ref: Mapped[str] = mapped_column(String(100))
    requester_org: Mapped[str] = mapped_column(String(64))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())
    days: Mapped[int] = mapped_column(Integer)
    over_maximum: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20))
    decided_by: Mapped[str | None] = mapped_column(String(10), nullable=True)  # hub | centre
    reason_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_possible_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    flag_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # over the maximum
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    __table_args__ = (
        Index("ix_self_admission_requests_unit", "unit_id", "status", "start_at"),
        Index("ix_self_admission_requests_agreement", "agreement_id", "status"),
    )

"""Tables of the audit trail: the records of the hash chain and the one-row chain head."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import PK, Base
from hub.db.types import UTCDateTime

GENESIS_HASH = "0" * 64  # the head's hash before the first record (seq 0)


class AuditRecordRow(Base):
    """One AuditEvent in the chain; never changed after insert.

    `body` is exactly the bytes hashed: hash = sha256(bytes.fromhex(prev_hash) + body), and
    `signature` is Ed25519 over bytes.fromhex(hash) by the key named `key_id`. The other
    columns are search indexes; the same values are inside the signed body, so verify can tell
    when one was edited.
    """

    __tablename__ = "audit_records"
    # Gapless position in the chain, assigned by the writer under the head lock.
    seq: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    patient_ref: Mapped[str | None] = mapped_column(String(128), nullable=True)  # "Patient/123"
    agent: Mapped[str] = mapped_column(String(255))  # who acted, e.g. "Client/abc"
    action: Mapped[str] = mapped_column(String(1))  # C R U D E
    subtype: Mapped[str] = mapped_column(String(64))  # read, search, disclosure, sign-in, ...
    body: Mapped[bytes] = mapped_column(LargeBinary)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))  # base64, 88 characters for Ed25519
    key_id: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        # patient=...&date=... for auditors and the consent trail; the prefix serves patient=.
        Index("ix_audit_records_patient", "patient_ref", "recorded_at"),
        Index("ix_audit_records_recorded", "recorded_at"),
    )


class AuditChainHeadRow(Base):
    """The newest link of the chain (seq 0 and GENESIS_HASH when empty); the append lock."""

    __tablename__ = "audit_chain_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(PK)
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class AuditVerificationRow(Base):
    """One run of `hub audit verify`: when, whether the trail was whole, how many records
    were intact, and the first broken one. What the auditors' pages show as the state of
    the trail."""

    __tablename__ = "audit_verifications"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ok: Mapped[bool] = mapped_column(Boolean)
    intact: Mapped[int] = mapped_column(PK)  # records checked and intact
    first_broken_seq: Mapped[int | None] = mapped_column(PK, nullable=True)
    reason: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_audit_verifications_at", "verified_at"),)

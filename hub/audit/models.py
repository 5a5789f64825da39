"""Tables of the audit trail: the records, the Merkle tree they are sealed into, and its
signed checkpoints (see hub/audit/__init__.py for how they fit together)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Sequence,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import PK, Base
from hub.db.types import ExactBytes, UTCDateTime

GENESIS_HASH = "0" * 64  # the legacy hash chain's "previous hash" of its first record
UNSEALED = text("leaf_index IS NULL")
RECORD_SEQ = Sequence("audit_records_seq_seq")  # PostgreSQL; SQLite numbers rows itself


class AuditRecordRow(Base):
    """One AuditEvent; written by a plain insert, never changed afterwards except that the
    sealer gives it its place in the tree (`leaf_index`), and its `event_id` where it has
    none (a record of a hub process older than migration 0014).

    `body` is exactly the bytes of the canonical AuditEvent JSON; `leaf_hash` is RFC 9162's
    leaf hash of it, SHA-256(0x00 || body), hex; `signature` is the writer's Ed25519
    signature of those 32 bytes by the key named `key_id`, which the sealer checks before it
    seals the record (so a row slipped into the table without the key is never sealed). The
    search columns repeat values inside the signed body, so an edited column is caught.

    Records written before the tree (migration 0008) keep their hash-chain columns:
    `prev_hash` and `hash` (sha256(prev || body)), their signature is over `hash`, and their
    `leaf_hash` is filled in when they are sealed, in chain order, after the chain is checked.
    """

    __tablename__ = "audit_records"
    # The record's id: from a sequence at insert, so not gapless and not in commit order.
    seq: Mapped[int] = mapped_column(PK, RECORD_SEQ, primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    patient_ref: Mapped[str | None] = mapped_column(String(128), nullable=True)  # "Patient/123"
    agent: Mapped[str] = mapped_column(String(255))  # who acted, e.g. "Client/abc"
    action: Mapped[str] = mapped_column(String(1))  # C R U D E
    subtype: Mapped[str] = mapped_column(String(64))  # read, search, disclosure, sign-in, ...
    body: Mapped[bytes] = mapped_column(ExactBytes)
    leaf_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    signature: Mapped[str] = mapped_column(String(128))  # base64, 88 characters for Ed25519
    key_id: Mapped[str] = mapped_column(String(64))
    # Position in the tree, 0-based, given by the sealer in the order it seals: NULL until then.
    leaf_index: Mapped[int | None] = mapped_column(PK, nullable=True)
    # The body's AuditEvent.id, for reading a record by it (GET /fhir/AuditEvent/{id}); like
    # the search columns it repeats the signed body, and verify checks that it does. NULL
    # until the sealer fills it for a record of an older hub process (not an edit: nothing
    # the record says is changed), and where migration 0014 found a body that is no JSON.
    # Unique: the body's id is what binds a signed record to being written once (copies.py).
    event_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # legacy chain
    hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # legacy chain

    __table_args__ = (
        # patient=...&date=... for auditors and the consent trail; the prefix serves patient=.
        Index("ix_audit_records_patient", "patient_ref", "recorded_at"),
        Index("ix_audit_records_recorded", "recorded_at"),
        Index("ix_audit_records_leaf", "leaf_index", unique=True),
        # One record an AuditEvent (migration 0015): a copy of a signed record is refused.
        Index("ix_audit_records_event", "event_id", unique=True),
        # What the sealer looks for: only unsealed rows, so it costs with what is waiting.
        Index("ix_audit_records_unsealed", "seq", sqlite_where=UNSEALED,
              postgresql_where=UNSEALED),
    )


class AuditTreeNodeRow(Base):
    """A complete node of the tree above the leaves: (level, idx) covers leaves
    [idx * 2^level, (idx + 1) * 2^level); written once by the sealer, never changed. Proofs
    read them instead of rehashing the trail (the leaves are audit_records.leaf_hash)."""

    __tablename__ = "audit_tree_nodes"
    level: Mapped[int] = mapped_column(Integer)
    idx: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    hash: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (PrimaryKeyConstraint("level", "idx", name="pk_audit_tree_nodes"),)


class AuditCheckpointRow(Base):
    """A signed statement of the tree: its size, its root hash and when (see checkpoint.py
    for the signed text). One per seal; a witness keeps exported ones to hold the hub to them."""

    __tablename__ = "audit_checkpoints"
    tree_size: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=False)
    root_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


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


class AuditSpoolMarkRow(Base):
    """How far the records of one read spool (hub/audit/spool.py, a file beside an SQLite
    database) have been moved into audit_records: every spool record with an id up to
    `moved_through` is in the trail. Written in the same transaction as the records it
    moves, so a move interrupted anywhere is done again exactly once (idempotent by id)."""

    __tablename__ = "audit_spool_marks"
    spool_id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the spool file's uuid
    moved_through: Mapped[int] = mapped_column(PK)

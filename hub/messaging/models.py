"""Tables of message exchange: accepted messages and one delivery per destination."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import PK, Base
from hub.db.types import UTCDateTime


class MessageRow(Base):
    """An accepted message: who sent it, what it was, and the response the hub gave.

    (sender_org, header_id) is unique: the same MessageHeader.id from the same sender is the
    same message, also when two copies arrive at once (the loser of the insert race returns
    the winner's stored response)."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    sender_org: Mapped[str] = mapped_column(String(64))
    header_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the received bytes' JSON
    patient_ref: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # resource types the message carries, comma-separated (routing decides on them again)
    content_types: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    bundle_id: Mapped[str] = mapped_column(String(64))  # the stored Bundle resource's id
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    response: Mapped[bytes] = mapped_column(LargeBinary)  # the response message, as sent
    __table_args__ = (
        UniqueConstraint("sender_org", "header_id", name="uq_messages_sender_header"),
        Index("ix_messages_patient", "patient_ref"),
        # Acknowledgements and replays name a message by its header id alone (a receiver may
        # not know the sender's org); without this they read every delivery of the receiver.
        Index("ix_messages_header", "header_id"),
    )


class DeliveryRow(Base):
    """One message to one receiver: routing decision, state, attempts, acknowledgement.

    status: queued | delivered | acknowledged | withheld | dead-letter. For one patient and
    one receiver, deliveries go out in id order (acceptance order); a receiver's failures
    hold back only its own queue."""

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(PK, ForeignKey("messages.id", ondelete="CASCADE"))
    receiver_org: Mapped[str] = mapped_column(String(64))
    patient_ref: Mapped[str | None] = mapped_column(String(100), nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    decision: Mapped[str] = mapped_column(String(30))  # permit | deny | permit-with-redaction
    basis: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    # A withheld delivery that a later consent releases: what it waits for (policy codes).
    withheld_for: Mapped[str | None] = mapped_column(String(40), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # While a dispatcher's attempt is under way: its lease (next_attempt_at says the same of
    # a retry waiting for its time). Counted per receiver by every dispatcher process.
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When the message became visible to pulls, assigned in commit order by the dispatcher,
    # so that `_lastUpdated=gt<last seen>` never skips a message committed late.
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ack_code: Mapped[str | None] = mapped_column(String(20), nullable=True)
    __table_args__ = (
        UniqueConstraint("message_id", "receiver_org", name="uq_deliveries_message_receiver"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        Index("ix_deliveries_queue", "receiver_org", "patient_ref", "id"),
        Index("ix_deliveries_pull", "receiver_org", "published_at"),
        Index("ix_deliveries_leased", "leased_until", "receiver_org"),
    )


class MessageFullUrlRow(Base):
    """The stored resource an accepted message's `urn:uuid:` fullUrl became. UUIDs are unique
    everywhere, so a later message that still names an entry by such a fullUrl (instead of
    by identifier) is understood."""

    __tablename__ = "message_full_urls"
    full_url: Mapped[str] = mapped_column(String(100), primary_key=True)
    target: Mapped[str] = mapped_column(String(200))  # "Type/id"

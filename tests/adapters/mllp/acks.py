"""Reading ACKs and counting what the hub kept, for the MLLP tests."""

from __future__ import annotations

from dataclasses import dataclass

import hl7
from sqlalchemy import func, select

from hub.db.engine import Database
from hub.db.models import ResourceVersionRow
from hub.messaging.models import DeliveryRow, MessageRow


@dataclass(frozen=True)
class Ack:
    """The parts of an ACK the tests look at."""

    raw: bytes
    code: str  # MSA-1
    control_id: str  # MSA-2: the message it answers
    location: str  # ERR-2
    error: str  # ERR-3.1
    text: str  # ERR-8 (MSA-3 when there is no ERR)


def read(raw: bytes, encoding: str = "utf-8") -> Ack:
    """Parse an ACK with the hl7 library."""
    message = hl7.parse(raw.decode(encoding))
    msa = message.segment("MSA")
    try:
        err = message.segment("ERR")
    except KeyError:
        return Ack(raw, str(msa(1)), str(msa(2)), "", "", str(msa(3)))
    return Ack(raw, str(msa(1)), str(msa(2)), str(err(2)), str(err(3)(1)(1)),
               message.unescape(str(err(8))))


@dataclass(frozen=True)
class Kept:
    """How much the hub has stored: messages, deliveries, resource versions."""

    messages: int
    deliveries: int
    versions: int


def kept(database: Database) -> Kept:
    with database.session(write=False) as s:
        return Kept(s.scalar(select(func.count()).select_from(MessageRow)) or 0,
                    s.scalar(select(func.count()).select_from(DeliveryRow)) or 0,
                    s.scalar(select(func.count()).select_from(ResourceVersionRow)) or 0)

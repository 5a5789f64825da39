"""A frame holds one message (MLLP): two ADT messages in one frame are refused whole with an
AE naming the second MSH, never an AA for the first with the second silently lost (C6). A
malformed MSH-1 or MSH-2 gets an AE that says what is wrong with it (C12)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from sqlalchemy import select

from adapters.mllp.simulator import adt
from hub.audit.models import AuditRecordRow
from hub.db.engine import Database
from tests.adapters.mllp.acks import kept, read
from tests.adapters.mllp.conftest import Listener, stay

Listen = Callable[..., Listener]


def _records(database: Database) -> int:
    with database.session(write=False) as s:
        return len(s.scalars(select(AuditRecordRow.seq)).all())


def test_two_messages_in_one_frame_get_an_ae_and_neither_is_taken(
        listen: Listen, database: Database) -> None:
    listener = listen()
    first = stay("TWO-A")
    second = replace(stay("TWO-B"), fnr="21889510088", family="Løvås", given="Ingrid")
    both = adt(first, "A01", "TWO-A") + adt(second, "A01", "TWO-B")
    before, records = kept(database), _records(database)
    with listener.pas() as pas:
        ack = read(pas.send(both))
        assert (ack.code, ack.control_id, ack.error) == ("AE", "TWO-A", "100"), ack.text
        segments = len(adt(first, "A01", "TWO-A").strip(b"\r").split(b"\r"))
        assert ack.location == f"^{segments + 1}"  # the second MSH
        assert "more than one message" in ack.text
        assert kept(database) == before
        assert _records(database) == records + 1  # the refusal is in the audit trail
        # control: each in its own frame is taken
        assert read(pas.send(adt(first, "A01", "TWO-A"))).code == "AA"
        assert read(pas.send(adt(second, "A01", "TWO-B"))).code == "AA"
    assert kept(database).messages == before.messages + 2


@pytest.mark.parametrize(("msh", "location", "words"), [
    ("MSH|^^^^|", "MSH^1^2", "'^^^^' repeats a character"),
    ("MSH|^~|", "MSH^1^2", "'^~' (2 characters)"),
    ("MSH|^~a&|", "MSH^1^2", "'^~a&' holds one that is not"),
])
def test_a_malformed_msh_2_gets_an_ae_saying_what_is_wrong(
        listen: Listen, database: Database, msh: str, location: str, words: str) -> None:
    listener = listen()
    good = adt(stay(), "A01", "ENC-1")
    bad = msh.encode() + good[len(b"MSH|^~\\&|"):]
    before, records = kept(database), _records(database)
    with listener.pas() as pas:
        ack = read(pas.send(bad))
        assert (ack.code, ack.location, ack.error) == ("AE", location, "102"), ack.text
        assert "MSH-2 (encoding characters) must be four distinct characters" in ack.text
        assert words in ack.text
        assert kept(database) == before
        assert _records(database) == records + 1
        assert read(pas.send(good)).code == "AA"  # control: the usual ^~\&

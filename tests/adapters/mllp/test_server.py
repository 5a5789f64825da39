"""The MLLP listener over real loopback sockets: framing, ACKs, and nothing kept of what is
refused."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from sqlalchemy import select

from adapters.mllp.framing import Deframer, Frame, frame
from adapters.mllp.simulator import adt
from hub.audit.models import AuditRecordRow
from hub.db.engine import Database
from tests.adapters.mllp.acks import kept, read
from tests.adapters.mllp.conftest import CENTRE_HERID, Listener, stay

Listen = Callable[..., Listener]


def _raw(listener: Listener) -> socket.socket:
    return socket.create_connection(("127.0.0.1", listener.port), timeout=10)


def _acks(sock: socket.socket, n: int) -> list[bytes]:
    deframer, out = Deframer(max_bytes=1 << 20), []
    while len(out) < n:
        data = sock.recv(65536)
        assert data, "the hub closed the connection"
        out += [p.payload for p in deframer.feed(data) if isinstance(p, Frame)]
    return out


def test_a_message_in_tiny_pieces_is_one_message(listen: Listen) -> None:
    listener = listen()
    wire = frame(adt(stay(), "A01", "PIECES-1"))
    with _raw(listener) as sock:
        for i in range(0, len(wire), 7):
            sock.sendall(wire[i:i + 7])
            time.sleep(0.002)
        ack = read(_acks(sock, 1)[0])
    assert (ack.code, ack.control_id) == ("AA", "PIECES-1")


def test_several_messages_on_one_connection_each_answered_in_order(
        listen: Listen, database: Database) -> None:
    listener = listen()
    wire = b"".join(frame(adt(stay(f"V{n}"), "A01", f"MANY-{n}")) for n in range(4))
    with _raw(listener) as sock:
        sock.sendall(wire)  # all at once: the hub reads several frames from one read
        acks = [read(a) for a in _acks(sock, 4)]
    assert [(a.code, a.control_id) for a in acks] == [("AA", f"MANY-{n}") for n in range(4)]
    assert kept(database).messages == 4


def test_a_one_megabyte_message_is_taken(listen: Listen, database: Database) -> None:
    listener = listen()
    note = "ZNT|1|" + "x" * (1024 * 1024)  # a site segment the hub does not use
    message = adt(stay(), "A01", "BIG-1", extra_segments=[note])
    assert len(message) > 1024 * 1024
    with listener.pas() as pas:
        ack = read(pas.send(message))
    assert ack.code == "AA"
    assert kept(database).messages == 1


def test_a_message_over_the_limit_gets_an_ae_and_the_connection_goes_on(
        listen: Listen, database: Database) -> None:
    listener = listen(max_bytes=64 * 1024)
    big = adt(stay(), "A01", "TOO-BIG", extra_segments=["ZNT|1|" + "x" * 200_000])
    with listener.pas() as pas:
        too_big = read(pas.send(big))
        fine = read(pas.send(adt(stay(), "A01", "AFTER-BIG")))
    assert (too_big.code, too_big.control_id) == ("AE", "TOO-BIG")
    assert "limit is 65536" in too_big.text
    assert (fine.code, fine.control_id) == ("AA", "AFTER-BIG")
    assert kept(database).messages == 1


def test_bad_framing_is_answered_or_skipped_and_the_stream_recovers(
        listen: Listen, database: Database) -> None:
    listener = listen()
    unframed = adt(stay(), "A01", "NO-START")
    with _raw(listener) as sock:
        # a message without its start block, then noise, then a message cut off by the next
        sock.sendall(unframed + b"\x1c\r" + b"line noise\x1c\r"
                     + b"\x0b" + adt(stay("V2"), "A01", "CUT")[:40]
                     + frame(adt(stay("V3"), "A01", "GOOD")))
        first, second = (read(a) for a in _acks(sock, 2))
    assert (first.code, first.control_id) == ("AE", "NO-START")
    assert "not framed as MLLP" in first.text
    assert (second.code, second.control_id) == ("AA", "GOOD")
    assert kept(database).messages == 1


def test_a_garbage_segment_is_named_and_nothing_is_kept(
        listen: Listen, database: Database) -> None:
    listener = listen()
    before = kept(database)
    with listener.pas() as pas:
        ack = read(pas.send(adt(stay(), "A01", "GARBAGE", extra_segments=["this is garbage"])))
    assert (ack.code, ack.control_id, ack.error) == ("AE", "GARBAGE", "100")
    assert ack.location == "^5"  # the fifth segment
    assert "Segment 5 ('this is garbage') is not an HL7 segment" in ack.text
    assert kept(database) == before


def test_an_unknown_sending_facility_gets_ae_naming_msh_4(
        listen: Listen, database: Database) -> None:
    listener = listen()
    before = kept(database)
    with listener.pas() as pas:
        ack = read(pas.send(adt(stay(facility="999999999"), "A01", "WHO")))
    assert (ack.code, ack.error, ack.location) == ("AE", "204", "MSH^1^4")
    assert "999999999 is not a registered organisation" in ack.text
    assert kept(database) == before
    # the refusal is in the audit trail (as an API request's failure would be)
    with database.session(write=False) as s:
        bodies = list(s.scalars(select(AuditRecordRow.body)))
    refused = [b for b in bodies if b"MLLP ADT^A01 WHO from 999999999: AE" in b]
    assert len(refused) == 1


def test_the_centre_is_also_known_by_its_her_id(listen: Listen) -> None:
    listener = listen()
    with listener.pas() as pas:
        ack = read(pas.send(adt(stay(facility=CENTRE_HERID), "A01", "HER")))
    assert ack.code == "AA", ack.text


def test_a_wrong_check_digit_gets_ae_naming_pid_3(listen: Listen, database: Database) -> None:
    listener = listen()
    before = kept(database)
    with listener.pas() as pas:
        ack = read(pas.send(adt(stay(fnr="13116900217"), "A01", "DIGIT")))
    assert (ack.code, ack.location) == ("AE", "PID^1^3")
    assert "wrong check digit" in ack.text
    assert kept(database) == before


def test_an_unknown_municipality_gets_ae_naming_pid_11_9(listen: Listen) -> None:
    listener = listen()
    with listener.pas() as pas:
        ack = read(pas.send(adt(stay(kommune="0301"), "A01", "KOMMUNE")))
    assert (ack.code, ack.location) == ("AE", "PID^1^11^1^9")
    assert "kommunenummer 0301" in ack.text


def test_a_duplicate_msh_10_gets_the_first_ack_and_changes_nothing(
        listen: Listen, database: Database) -> None:
    listener = listen()
    message = adt(stay(), "A01", "TWICE")
    with listener.pas() as pas:
        first = pas.send(message)
        after_first = kept(database)
        again = pas.send(message)
    assert read(first).code == "AA"
    assert again == first  # byte for byte: the same MSH-10 and MSH-7 of the ACK too
    assert kept(database) == after_first


def test_the_same_msh_10_with_other_content_is_refused(listen: Listen, database: Database) -> None:
    listener = listen()
    with listener.pas() as pas:
        assert read(pas.send(adt(stay("V1"), "A01", "REUSED"))).code == "AA"
        after_first = kept(database)
        ack = read(pas.send(adt(stay("V2"), "A01", "REUSED")))
    assert (ack.code, ack.error, ack.location) == ("AE", "205", "MSH^1^10")
    assert kept(database) == after_first


def test_iso_8859_1_and_utf_8_both_arrive_as_written(
        listen: Listen, database: Database) -> None:
    from hub.auth.subject import Subject
    from hub.store import service

    listener = listen()
    latin = stay("V1", fnr="13116900216")
    latin = type(latin)(**{**latin.__dict__, "family": "Ødegård", "given": "Åse"})
    utf8 = stay("V2", fnr="01017000027")
    utf8 = type(utf8)(**{**utf8.__dict__, "family": "Bjørnstad", "given": "Kåre"})
    with listener.pas() as pas:
        assert read(pas.send(adt(latin, "A01", "LATIN", charset="iso-8859-1")),
                    "iso-8859-1").code == "AA"
        assert read(pas.send(adt(utf8, "A01", "UTF8", charset="utf-8"))).code == "AA"
        # Latin-1 bytes declared as UTF-8 are refused, naming MSH-18.
        wrong = adt(latin, "A01", "WRONG", charset="iso-8859-1").replace(b"8859/1",
                                                                         b"UNICODE UTF-8")
        ack = read(pas.send(wrong))
    assert (ack.code, ack.location) == ("AE", "MSH^1^18")
    with database.session(write=False) as s:
        names = sorted(
            (p.body or {})["name"][0]["family"]
            for p in service.search(s, Subject.hub_itself(), request=_patients())[0])
    assert names == ["Bjørnstad", "Ødegård"]


def _patients() -> object:
    from hub.store.query import SearchRequest

    return SearchRequest("Patient", [], count=10)


def test_a_disabled_centre_is_refused(listen: Listen, database: Database) -> None:
    from hub.auth.subject import Subject
    from hub.orgs.service import set_organization_active

    with database.session(write=True) as s:
        set_organization_active(s, Subject.hub_itself(), "jaeren-dps", False)
    before = kept(database)
    listener = listen()
    with listener.pas() as pas:
        ack = read(pas.send(adt(stay(), "A01", "DISABLED")))
    assert (ack.code, ack.location) == ("AE", "MSH^1^4")
    assert "disabled" in ack.text
    assert kept(database) == before


@pytest.mark.parametrize(("field", "change", "element", "location"), [
    ("visit", {"visit": "V\x01\x00"}, "Encounter.identifier[0].value", "PV1^1^19"),
    ("family", {"family": "Nord\x01mann"}, "Patient.name[0].family", "PID^1^5^1^1"),
    ("city", {"city": "Bry\x1fne"}, "Patient.address[0].city", "PID^1^11^1^3"),
])
def test_a_field_holding_a_control_character_gets_ae_naming_it_and_nothing_is_kept(
        listen: Listen, database: Database, field: str, change: dict[str, str], element: str,
        location: str) -> None:
    """A visit number, a family name or a city with a control character: FHIR strings hold
    none below U+0020 but tab and line breaks, and PostgreSQL cannot store U+0000
    (hub/fhir/strings.py). The AE names the element in ERR-8 and the field it came from in
    ERR-2, with ERR-3 102 (data type error); the same stay without it is taken."""
    listener = listen()
    before = kept(database)
    with listener.pas() as pas:
        ack = read(pas.send(adt(replace(stay(), **change), "A01", "CONTROL")))
        assert ack.code == "AE", ack.text
        assert element in ack.text
        assert "U+00" in ack.text
        assert (ack.location, ack.error) == (location, "102")
        assert kept(database) == before
        assert read(pas.send(adt(stay(), "A01", "CONTROL-2"))).code == "AA"
    assert kept(database).messages == before.messages + 1

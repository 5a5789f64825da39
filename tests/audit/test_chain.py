"""The audit hash chain: appends verify; every kind of tampering is caught at the right record;
concurrent writers (threads, and separate processes) keep the chain linear."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, text

from hub.audit.chain import (
    INDEX_EXTENSION,
    Entry,
    VerifyResult,
    append,
    append_all,
    canonical_json,
    link_hash,
    verify,
)
from hub.audit.models import GENESIS_HASH
from hub.audit.signing import Signer
from hub.config import Settings
from hub.db.engine import Database

N = 10


def event(i: int) -> dict[str, Any]:
    """An AuditEvent of a RESTful read of Patient/{i} by a client (BALP-like)."""
    return {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                 "code": "rest"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
        "outcome": "0",
        "agent": [{"who": {"reference": "Organization/time-kommune"}, "requestor": True}],
        "source": {"observer": {"display": "CareHub"}},
        "entity": [{"what": {"reference": f"Patient/{i}"}}],
    }


def fill(database: Database, signer: Signer, n: int, *, per_transaction: int = 50) -> None:
    """Append n reads (Patient/1..n) in transactions of `per_transaction`."""
    done = 0
    while done < n:
        with database.session(write=True) as s:
            for _ in range(min(per_transaction, n - done)):
                done += 1
                append(s, signer, event(done), patient_ref=f"Patient/{done}",
                       agent="Client/time", action="R", subtype="read")


def check(database: Database, *keys: Signer) -> VerifyResult:
    """verify() with the public keys of `keys`, each batch in its own read session."""
    public = {k.key_id: k.public_key for k in keys}
    return verify(lambda: database.session(write=False), public)


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.from_file(tmp_path / "audit-key.pem")


@pytest.fixture
def attacker() -> Signer:
    return Signer.from_key(Ed25519PrivateKey.generate())


@pytest.fixture
def filled(database: Database, signer: Signer) -> Database:
    fill(database, signer, N, per_transaction=4)
    return database


def tamper(database: Database, work: Callable[[Connection], object]) -> None:
    """Edit the database directly, as someone with database access would."""
    with database.engine.begin() as conn:
        work(conn)


def rows(conn: Connection) -> list[Any]:
    return list(conn.execute(text(
        "SELECT seq, body, prev_hash, hash, signature, key_id FROM audit_records ORDER BY seq")))


def rechain(conn: Connection, start: int, resign: Signer | None = None) -> None:
    """Recompute prev_hash/hash from record `start` on (and the head), as a forger would;
    `resign` also re-signs them with the forger's own key."""
    prev = GENESIS_HASH
    for row in rows(conn):
        if row.seq >= start:
            digest = link_hash(prev, bytes(row.body))
            values: dict[str, Any] = {"s": row.seq, "p": prev, "h": digest}
            sql = "UPDATE audit_records SET prev_hash = :p, hash = :h"
            if resign is not None:
                values.update(sig=resign.sign(bytes.fromhex(digest)), k=resign.key_id)
                sql += ", signature = :sig, key_id = :k"
            conn.execute(text(sql + " WHERE seq = :s"), values)
            prev = digest
        else:
            prev = row.hash
    conn.execute(text("UPDATE audit_chain_head SET seq = (SELECT max(seq) FROM audit_records), "
                      "hash = :h WHERE id = 1"), {"h": prev})


def body_of(conn: Connection, seq: int) -> bytes:
    return bytes(conn.execute(text("SELECT body FROM audit_records WHERE seq = :s"),
                              {"s": seq}).scalar_one())


def set_body(conn: Connection, seq: int, body: bytes) -> None:
    conn.execute(text("UPDATE audit_records SET body = :b WHERE seq = :s"), {"b": body, "s": seq})


def forged_row(conn: Connection, seq: int, prev: str, forger: Signer) -> None:
    """Insert a well-formed record at `seq` chained onto `prev`, signed by `forger`."""
    body = canonical_json({**event(999), "id": "forged", "recorded": "2026-01-01T00:00:00.000000Z",
                           "action": "R", "extension": [{"url": INDEX_EXTENSION, "extension": [
                               {"url": "agent", "valueString": "Client/time"},
                               {"url": "subtype", "valueCode": "read"}]}]})
    digest = link_hash(prev, body)
    conn.execute(text(
        "INSERT INTO audit_records (seq, recorded_at, patient_ref, agent, action, subtype, body, "
        "prev_hash, hash, signature, key_id) VALUES (:s, :t, NULL, 'Client/time', 'R', 'read', "
        ":b, :p, :h, :sig, :k)"),
        {"s": seq, "t": "2026-01-01 00:00:00", "b": body, "p": prev, "h": digest,
         "sig": forger.sign(bytes.fromhex(digest)), "k": forger.key_id})


# --- appending -------------------------------------------------------------------------


def test_empty_trail_verifies(database: Database, signer: Signer) -> None:
    result = check(database, signer)
    assert (result.ok, result.count, result.first_broken_seq) == (True, 0, None)


def test_appended_records_verify_with_their_count(database: Database, signer: Signer) -> None:
    fill(database, signer, 123, per_transaction=17)
    result = check(database, signer)
    assert result.ok, result.reason
    assert result.count == 123
    assert result.first_broken_seq is None


def test_verify_streams_in_batches(
    database: Database, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hub.audit.chain.BATCH_SIZE", 7)
    fill(database, signer, 30)
    seen: list[tuple[int, int]] = []
    with database.session(write=False) as s:  # a plain session works as well as a factory
        result = verify(s, {signer.key_id: signer.public_key},
                        progress=lambda done, total: seen.append((done, total)))
    assert (result.ok, result.count) == (True, 30)
    assert seen == [(7, 30), (14, 30), (21, 30), (28, 30), (30, 30)]


def test_record_holds_the_signed_event_and_its_search_columns(
    database: Database, signer: Signer
) -> None:
    with database.session(write=True) as s:
        first = append(s, signer, event(7), patient_ref="Patient/7", agent="Client/time",
                       action="R", subtype="read")
        second = append(s, signer, {"resourceType": "AuditEvent"}, patient_ref=None,
                        agent="User/ola", action="E", subtype="sign-in")
    assert (first, second) == (1, 2)
    with database.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM audit_records WHERE seq = 1")).one()
        head = conn.execute(text("SELECT seq, hash FROM audit_chain_head")).one()
        last_hash = conn.execute(text("SELECT hash FROM audit_records WHERE seq = 2")).scalar()
    body = json.loads(row.body)
    assert bytes(row.body) == canonical_json(body)  # sorted keys, compact
    assert len(body["id"]) == 36
    assert body["recorded"].endswith("Z")
    assert body["action"] == "R"
    assert body["entity"] == event(7)["entity"]
    assert row.prev_hash == GENESIS_HASH
    assert row.hash == link_hash(GENESIS_HASH, bytes(row.body))
    assert (row.patient_ref, row.agent, row.action, row.subtype) == (
        "Patient/7", "Client/time", "R", "read")
    assert row.key_id == signer.key_id
    assert tuple(head) == (2, last_hash)


def test_rolled_back_appends_leave_no_trace(database: Database, signer: Signer) -> None:
    fill(database, signer, 3)
    def failing_request() -> None:
        with database.session(write=True) as s:
            append(s, signer, event(1), patient_ref=None, agent="a", action="R", subtype="read")
            raise RuntimeError("request failed")

    with pytest.raises(RuntimeError):
        failing_request()
    fill(database, signer, 2)
    result = check(database, signer)
    assert (result.ok, result.count) == (True, 5)


@pytest.mark.parametrize(("action", "given"), [("X", None), ("R", "C")])
def test_append_refuses_a_bad_action(
    database: Database, signer: Signer, action: str, given: str | None
) -> None:
    ev = {**event(1), **({"action": given} if given else {})}
    with pytest.raises(ValueError, match="action"), database.session(write=True) as s:
        append(s, signer, ev, patient_ref=None, agent="a", action=action, subtype="read")


def test_append_all_links_a_batch_like_single_appends(database: Database, signer: Signer) -> None:
    """Several entries in one append: consecutive seqs, each chained onto the one before,
    the head at the last, and a single append after them continues the chain."""
    fill(database, signer, 2)
    entries = [Entry(event(i), f"Patient/{i}", "Client/time", "R", "read") for i in (3, 4, 5)]
    with database.session(write=True) as s:
        assert append_all(s, signer, entries) == [3, 4, 5]
        assert append_all(s, signer, []) == []
    fill(database, signer, 1)
    with database.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT seq, prev_hash, hash, patient_ref FROM audit_records ORDER BY seq")).all()
        head = conn.execute(text("SELECT seq, hash FROM audit_chain_head")).one()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.patient_ref for r in rows[2:5]] == ["Patient/3", "Patient/4", "Patient/5"]
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False))
    assert tuple(head) == (6, rows[-1].hash)
    result = check(database, signer)
    assert (result.ok, result.count) == (True, 6)


def test_append_all_refuses_a_bad_entry_before_writing_any(
    database: Database, signer: Signer
) -> None:
    entries = [Entry(event(1), None, "a", "R", "read"), Entry(event(2), None, "a", "X", "read")]
    with database.session(write=True) as s:
        with pytest.raises(ValueError, match="action"):
            append_all(s, signer, entries)
        count = s.execute(text("SELECT count(*) FROM audit_records")).scalar()
    assert count == 0


# --- tampering -----------------------------------------------------------------------------


def test_edited_body_byte(filled: Database, signer: Signer) -> None:
    def edit(conn: Connection) -> None:
        body = bytearray(body_of(conn, 5))
        body[body.index(b"Patient/5")+8] = ord("6")  # a read of Patient/5 becomes Patient/6
        set_body(conn, 5, bytes(body))

    tamper(filled, edit)
    result = check(filled, signer)
    assert (result.ok, result.first_broken_seq, result.count) == (False, 5, 4)
    assert result.reason == "record 5 was edited: its content does not match its hash"


def test_edited_hash(filled: Database, signer: Signer) -> None:
    tamper(filled, lambda c: c.execute(text(
        "UPDATE audit_records SET hash = :h WHERE seq = 6"), {"h": "ab" * 32}))
    result = check(filled, signer)
    assert result.first_broken_seq == 6
    assert "does not match its hash" in result.reason


def test_edited_body_with_the_chain_recomputed_fails_the_signature(
    filled: Database, signer: Signer
) -> None:
    def edit(conn: Connection) -> None:
        set_body(conn, 4, body_of(conn, 4).replace(b'"outcome":"0"', b'"outcome":"8"'))
        rechain(conn, 4)  # every hash and the head consistent again, but no key to sign with

    tamper(filled, edit)
    result = check(filled, signer)
    assert (result.ok, result.first_broken_seq) == (False, 4)
    assert "bad signature" in result.reason


def test_recomputed_chain_resigned_with_another_key_under_the_real_key_id(
    filled: Database, signer: Signer, attacker: Signer
) -> None:
    def edit(conn: Connection) -> None:
        set_body(conn, 8, body_of(conn, 8).replace(b'"outcome":"0"', b'"outcome":"4"'))
        rechain(conn, 8, resign=attacker)
        conn.execute(text("UPDATE audit_records SET key_id = :k"), {"k": signer.key_id})

    tamper(filled, edit)
    result = check(filled, signer)
    assert result.first_broken_seq == 8
    assert "bad signature" in result.reason


def test_records_signed_by_a_key_not_given_to_verify(
    filled: Database, signer: Signer, attacker: Signer
) -> None:
    result = check(filled, attacker)
    assert (result.ok, result.first_broken_seq) == (False, 1)
    assert f"unknown key ({signer.key_id})" in result.reason


def test_deleted_middle_record(filled: Database, signer: Signer) -> None:
    tamper(filled, lambda c: c.execute(text("DELETE FROM audit_records WHERE seq = 5")))
    result = check(filled, signer)
    assert (result.ok, result.first_broken_seq, result.count) == (False, 5, 4)
    assert result.reason == ("record 5 is missing (deleted): the chain jumps from record 4 to 6")


def test_deleted_middle_records_renumbered_and_rechained(filled: Database, signer: Signer) -> None:
    def edit(conn: Connection) -> None:
        conn.execute(text("DELETE FROM audit_records WHERE seq IN (3, 4)"))
        conn.execute(text("UPDATE audit_records SET seq = -(seq - 2) WHERE seq > 4"))
        conn.execute(text("UPDATE audit_records SET seq = -seq WHERE seq < 0"))
        rechain(conn, 3)

    tamper(filled, edit)
    result = check(filled, signer)
    assert result.first_broken_seq == 3
    assert "bad signature" in result.reason


def test_deleted_last_record_is_a_truncated_tail(filled: Database, signer: Signer) -> None:
    tamper(filled, lambda c: c.execute(text("DELETE FROM audit_records WHERE seq = :s"), {"s": N}))
    result = check(filled, signer)
    assert (result.ok, result.first_broken_seq, result.count) == (False, N, N - 1)
    assert "truncated tail" in result.reason


def test_forged_record_chained_onto_the_tail(
    filled: Database, signer: Signer, attacker: Signer
) -> None:
    def edit(conn: Connection) -> None:
        last = conn.execute(text("SELECT hash FROM audit_chain_head")).scalar_one()
        forged_row(conn, N + 1, last, attacker)
        rechain(conn, N + 1, resign=attacker)  # moves the head onto it too

    tamper(filled, edit)
    result = check(filled, signer)
    assert (result.ok, result.first_broken_seq) == (False, N + 1)
    assert "unknown key" in result.reason


def test_forged_record_behind_the_head(
    filled: Database, signer: Signer, attacker: Signer
) -> None:
    def edit(conn: Connection) -> None:
        last = conn.execute(text("SELECT hash FROM audit_chain_head")).scalar_one()
        forged_row(conn, N + 1, last, attacker)  # the head still says N

    tamper(filled, edit)
    result = check(filled, signer)
    assert (result.ok, result.first_broken_seq) == (False, N + 1)
    assert "beyond the chain head" in result.reason


def test_forged_record_inserted_in_the_middle(
    filled: Database, signer: Signer, attacker: Signer
) -> None:
    def edit(conn: Connection) -> None:
        prev = conn.execute(text("SELECT hash FROM audit_records WHERE seq = 5")).scalar_one()
        conn.execute(text("UPDATE audit_records SET seq = -(seq + 1) WHERE seq >= 6"))
        conn.execute(text("UPDATE audit_records SET seq = -seq WHERE seq < 0"))
        forged_row(conn, 6, prev, attacker)

    tamper(filled, edit)
    result = check(filled, signer)
    assert (result.ok, result.first_broken_seq) == (False, 6)
    assert "unknown key" in result.reason

    tamper(filled, lambda c: rechain(c, 7))  # and with the rest of the chain re-linked
    assert check(filled, signer).first_broken_seq == 6


def test_forged_record_in_the_middle_without_a_key_is_an_insertion(
    filled: Database, signer: Signer, attacker: Signer
) -> None:
    def edit(conn: Connection) -> None:
        conn.execute(text("UPDATE audit_records SET seq = -(seq + 1) WHERE seq >= 3"))
        conn.execute(text("UPDATE audit_records SET seq = -seq WHERE seq < 0"))
        forged_row(conn, 3, "cd" * 32, attacker)  # chained onto nothing in this trail

    tamper(filled, edit)
    result = check(filled, signer)
    assert result.first_broken_seq == 3
    assert "inserted or reordered" in result.reason


def test_reordered_records(filled: Database, signer: Signer) -> None:
    def swap(conn: Connection) -> None:
        conn.execute(text("UPDATE audit_records SET seq = -1 WHERE seq = 4"))
        conn.execute(text("UPDATE audit_records SET seq = 4 WHERE seq = 7"))
        conn.execute(text("UPDATE audit_records SET seq = 7 WHERE seq = -1"))

    tamper(filled, swap)
    result = check(filled, signer)
    assert (result.ok, result.first_broken_seq, result.count) == (False, 4, 3)
    assert "inserted or reordered" in result.reason


@pytest.mark.parametrize(("column", "value"), [("patient_ref", "Patient/99"),
                                                ("agent", "Client/other"),
                                                ("action", "C"),
                                                ("subtype", "search")])
def test_edited_search_column(filled: Database, signer: Signer, column: str, value: str) -> None:
    tamper(filled, lambda c: c.execute(text(
        f"UPDATE audit_records SET {column} = :v WHERE seq = 3"), {"v": value}))
    result = check(filled, signer)
    assert result.first_broken_seq == 3
    assert result.reason == f"record 3 was edited: its {column} differs from the signed record"


def test_hidden_from_the_patient(filled: Database, signer: Signer) -> None:
    tamper(filled, lambda c: c.execute(text(
        "UPDATE audit_records SET patient_ref = NULL WHERE seq = 2")))
    assert check(filled, signer).first_broken_seq == 2


def test_edited_recorded_at(filled: Database, signer: Signer) -> None:
    tamper(filled, lambda c: c.execute(text(
        "UPDATE audit_records SET recorded_at = :t WHERE seq = 9"), {"t": "2020-01-01 00:00:00"}))
    result = check(filled, signer)
    assert result.first_broken_seq == 9
    assert "recorded_at" in result.reason


def test_edited_head(filled: Database, signer: Signer) -> None:
    tamper(filled, lambda c: c.execute(text("UPDATE audit_chain_head SET hash = :h"),
                                       {"h": "ef" * 32}))
    result = check(filled, signer)
    assert (result.ok, result.first_broken_seq, result.count) == (False, N, N)
    assert "head" in result.reason


# --- concurrent writers --------------------------------------------------------------------


def test_threads_appending_at_once_keep_one_chain(database: Database, signer: Signer) -> None:
    threads, per_thread = 6, 200
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with database.session(write=True) as s:
                    append(s, signer, event(i), patient_ref=f"Patient/{i}", agent=f"T{t}",
                           action="R", subtype="read")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(240)
    assert not errors, errors
    result = check(database, signer)
    assert result.ok, result.reason
    assert result.count == threads * per_thread


def test_appends_of_one_transaction_are_contiguous(database: Database, signer: Signer) -> None:
    threads, transactions, per_tx = 4, 25, 3
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            start.wait()
            for x in range(transactions):
                with database.session(write=True) as s:
                    for _ in range(per_tx):
                        append(s, signer, event(x), patient_ref=None, agent=f"T{t}-{x}",
                               action="R", subtype="read")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert not errors, errors
    with database.engine.connect() as conn:
        spans = conn.execute(text(
            "SELECT agent, min(seq), max(seq), count(*) FROM audit_records GROUP BY agent")).all()
    assert len(spans) == threads * transactions
    assert all(hi - lo + 1 == n == per_tx for _agent, lo, hi, n in spans)
    assert check(database, signer).count == threads * transactions * per_tx


def _process_writer(url: str, key_path: str, name: str, count: int, start: Any) -> None:
    """A separate hub process: its own engine on `url`, appending `count` records."""
    database = Database.connect(Settings(database_url=url), url)
    signer = Signer.from_file(key_path)  # the key file race: one creates, the other reads
    try:
        start.wait(60)
        for i in range(count):
            with database.session(write=True) as s:
                append(s, signer, event(i), patient_ref=f"Patient/{i}", agent=name,
                       action="R", subtype="read")
            # A request does other work between audits. Without a pause, SQLite's busy handler
            # (which sleeps, then polls) can let one process take every lock until it is done.
            time.sleep(0.001)
    finally:
        database.dispose()


def test_two_processes_appending_at_once_keep_one_chain(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    key = tmp_path / "shared-key.pem"
    count = 300
    procs = [ctx.Process(target=_process_writer, args=(db_url, str(key), f"P{p}", count, start))
             for p in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    assert [p.exitcode for p in procs] == [0, 0]
    result = check(database, Signer.from_file(key))
    assert result.ok, result.reason
    assert result.count == 2 * count
    with database.engine.connect() as conn:
        agents = [a for (a,) in conn.execute(text("SELECT agent FROM audit_records ORDER BY seq"))]
    switches = sum(a != b for a, b in zip(agents, agents[1:], strict=False))
    assert switches > 1, "the two processes did not actually write at the same time"

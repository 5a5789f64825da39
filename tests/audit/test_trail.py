"""The audit trail: appends are plain inserts; the sealer puts committed records into the
Merkle tree and signs checkpoints; verify catches every kind of tampering at the right
record; proofs hold; concurrent writers and sealers seal every record exactly once."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, text
from sqlalchemy.event import listen as event_listen
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from hub.audit import copies, merkle
from hub.audit import queries as audit_queries
from hub.audit import verify as verify_module
from hub.audit.checkpoint import Checkpoint
from hub.audit.models import AuditRecordRow
from hub.audit.queries import AuditQuery, search
from hub.audit.records import (
    INDEX_EXTENSION,
    Entry,
    _index_extension,
    append,
    append_all,
    canonical_json,
    columns_agree,
    index_bytes,
    instant_text,
    signed_rows,
)
from hub.audit.seal import SealError, SealReport, seal_all, seal_once
from hub.audit.signing import Signer
from hub.audit.tree import (
    TreeError,
    checkpoint_at,
    checkpoints,
    consistency_proof,
    inclusion_proof,
    latest_checkpoint,
)
from hub.audit.verify import VerifyResult, check_record, verify
from hub.db.direct import PIPELINE_FROM
from hub.db.engine import Database
from tests.plans import sqlite_plan, statements_of


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


def fill(database: Database, signer: Signer, n: int, *, per_transaction: int = 50,
         first: int = 1) -> None:
    """Append n reads (Patient/first..) in transactions of `per_transaction`."""
    done = 0
    while done < n:
        with database.session(write=True) as s:
            for _ in range(min(per_transaction, n - done)):
                append(s, signer, event(first + done), patient_ref=f"Patient/{first + done}",
                       agent="Client/time", action="R", subtype="read")
                done += 1


def seal(database: Database, signer: Signer) -> SealReport:
    return seal_all(database, signer)


def check(database: Database, *keys: Signer, witnessed: tuple[Checkpoint, ...] = (),
          jobs: int = 1) -> VerifyResult:
    """verify() with the public keys of `keys`, each chunk in its own read session (or in
    `jobs` worker processes)."""
    public = {k.key_id: k.public_key for k in keys}
    return verify(lambda: database.session(write=False), public, witnessed=witnessed, jobs=jobs,
                  url=database.engine.url.render_as_string(hide_password=False))


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.from_file(tmp_path / "audit-key.pem")


@pytest.fixture
def attacker() -> Signer:
    return Signer.from_key(Ed25519PrivateKey.generate())


N = 10


def seal_in_three_passes(database: Database, signer: Signer) -> Database:
    """Records 1..10 at leaves 0..9, sealed in three passes: checkpoints 4, 7 and 10."""
    for first, n in ((1, 4), (5, 3), (8, 3)):
        fill(database, signer, n, first=first)
        assert seal(database, signer).sealed == n
    return database


@pytest.fixture(params=[verify_module.CHUNK_LEVEL, 1], ids=["one chunk", "chunks of 2"])
def sealed(request: pytest.FixtureRequest, database: Database, signer: Signer,
           monkeypatch: pytest.MonkeyPatch) -> Database:
    """`seal_in_three_passes`; verify walks them in one chunk, or in chunks of two leaves
    (the tree above them rebuilt from the chunks' roots, checkpoints inside chunks and on
    their edges)."""
    monkeypatch.setattr(verify_module, "CHUNK_LEVEL", request.param)
    return seal_in_three_passes(database, signer)


def tamper(database: Database, work: Callable[[Connection], object]) -> None:
    """Edit the database directly, as someone with database access would."""
    with database.engine.begin() as conn:
        work(conn)


def leaf_hashes(conn: Connection) -> list[bytes]:
    return [bytes.fromhex(h) for (h,) in conn.execute(text(
        "SELECT leaf_hash FROM audit_records WHERE leaf_index IS NOT NULL ORDER BY leaf_index"))]


def rebuild_nodes(conn: Connection) -> None:
    """Recompute every stored node from the records' leaf hashes, as a forger would."""
    conn.execute(text("DELETE FROM audit_tree_nodes"))
    nodes = merkle.nodes_of_leaves(leaf_hashes(conn))
    for (level, index), digest in nodes.items():
        if level > 0:
            conn.execute(text("INSERT INTO audit_tree_nodes (level, idx, hash) "
                              "VALUES (:l, :i, :h)"), {"l": level, "i": index, "h": digest})


def resign_checkpoints(conn: Connection, forger: Signer, key_id: str | None = None) -> None:
    """Recompute every checkpoint's root from the records and sign it with `forger`."""
    leaves = leaf_hashes(conn)
    with Session(bind=conn) as session:
        stored = checkpoints(session)
    for old in stored:
        cp = Checkpoint.sign(forger, old.tree_size, merkle.root_of(leaves[:old.tree_size]),
                             old.signed_at)
        conn.execute(text("UPDATE audit_checkpoints SET root_hash = :r, key_id = :k, "
                          "signature = :s WHERE tree_size = :n"),
                     {"r": cp.root_hash, "k": key_id or cp.key_id, "s": cp.signature,
                      "n": old.tree_size})


def body_of(conn: Connection, seq: int) -> bytes:
    return bytes(conn.execute(text("SELECT body FROM audit_records WHERE seq = :s"),
                              {"s": seq}).scalar_one())


def set_body(conn: Connection, seq: int, body: bytes, *, rehash: bool = False) -> None:
    values: dict[str, Any] = {"b": body, "s": seq}
    sql = "UPDATE audit_records SET body = :b"
    if rehash:
        values["h"] = hashlib.sha256(b"\x00" + body).hexdigest()
        sql += ", leaf_hash = :h"
    conn.execute(text(sql + " WHERE seq = :s"), values)


def forged_row(conn: Connection, forger: Signer, *, leaf_index: int | None) -> int:
    """Insert a well-formed record signed by `forger`; its id."""
    body = canonical_json({**event(999), "id": "forged", "recorded": "2026-01-01T00:00:00.000000Z",
                           "action": "R", "extension": [{"url": INDEX_EXTENSION, "extension": [
                               {"url": "agent", "valueString": "Client/time"},
                               {"url": "subtype", "valueCode": "read"}]}]})
    digest = hashlib.sha256(b"\x00" + body).digest()
    seq = int(conn.execute(text("SELECT max(seq) + 100 FROM audit_records")).scalar_one())
    conn.execute(text(
        "INSERT INTO audit_records (seq, recorded_at, patient_ref, agent, action, subtype, body, "
        "leaf_hash, signature, key_id, leaf_index, event_id) VALUES (:q, :t, NULL, "
        "'Client/time', 'R', 'read', :b, :h, :sig, :k, :i, 'forged')"),
        {"q": seq, "t": "2026-01-01 00:00:00", "b": body, "h": digest.hex(),
         "sig": forger.sign(digest), "k": forger.key_id, "i": leaf_index})
    return seq


# --- appending and sealing --------------------------------------------------------------------


def test_empty_trail_verifies(database: Database, signer: Signer) -> None:
    result = check(database, signer)
    assert (result.ok, result.count, result.first_broken_seq) == (True, 0, None)
    assert seal(database, signer) == SealReport(0, 0)
    with database.session(write=False) as s:
        assert latest_checkpoint(s) is None  # nothing sealed: nothing signed


def test_record_holds_the_signed_event_its_leaf_hash_and_search_columns(
    database: Database, signer: Signer
) -> None:
    with database.session(write=True) as s:
        first = append(s, signer, event(7), patient_ref="Patient/7", agent="Client/time",
                       action="R", subtype="read")
        second = append(s, signer, {"resourceType": "AuditEvent"}, patient_ref=None,
                        agent="User/ola", action="E", subtype="sign-in")
    assert second > first
    with database.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM audit_records WHERE seq = :s"),
                           {"s": first}).one()
    body = json.loads(row.body)
    assert bytes(row.body) == canonical_json(body)  # sorted keys, compact
    assert len(body["id"]) == 36
    assert body["recorded"].endswith("Z")
    assert body["entity"] == event(7)["entity"]
    assert row.leaf_hash == hashlib.sha256(b"\x00" + bytes(row.body)).hexdigest()
    assert signer.public_key.verify(__import__("base64").b64decode(row.signature),
                                    bytes.fromhex(row.leaf_hash)) is None
    assert (row.patient_ref, row.agent, row.action, row.subtype, row.key_id) == (
        "Patient/7", "Client/time", "R", "read", signer.key_id)
    assert row.leaf_index is None
    assert row.prev_hash is None
    result = check(database, signer)
    assert (result.ok, result.count, result.sealed, result.unsealed) == (True, 2, 0, 2)


def test_a_pass_with_nothing_to_seal_takes_no_write_lock(database: Database,
                                                         signer: Signer) -> None:
    """An idle sealer must not queue behind (or hold up) the hub's writers every pass."""
    if database.dialect != "sqlite":
        pytest.skip("SQLite's one write lock; on PostgreSQL an idle pass takes no lock either")
    fill(database, signer, 3, per_transaction=3)
    assert seal_once(database, signer) == SealReport(3, 3)
    path = database.engine.url.database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a writer holds the write lock throughout
    answers: list[SealReport | None] = []
    try:
        idle = threading.Thread(target=lambda: answers.append(seal_once(database, signer)),
                                daemon=True)
        idle.start()
        idle.join(timeout=20)
        assert answers == [SealReport(0, 3)], "the idle pass waited for the write lock"
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_an_idle_pass_reads_through_indexes_only(database: Database, signer: Signer) -> None:
    """A sealer passes every second over a trail of millions: with nothing to do, each of
    its statements on audit_records is an index search, none a read of the table (SQLite's
    plans of the statements it runs; the control is that it did run some)."""
    if database.dialect != "sqlite":
        pytest.skip("reads SQLite's query plans; the indexes are the same on both")
    fill(database, signer, 3)
    assert seal_once(database, signer) == SealReport(3, 3)
    ran = [(st, p) for st, p in statements_of(database.engine,
                                              lambda: seal_once(database, signer))
           if "FROM audit_records" in st]
    assert any("event_id IS NULL" in st for st, _ in ran)  # fill_event_ids looked
    for statement, params in ran:
        plan = sqlite_plan(database.engine, statement, params)
        assert "SCAN audit_records" not in plan, (statement, plan)


def test_sealing_puts_records_into_the_tree_in_order_and_signs_a_checkpoint(
    database: Database, signer: Signer
) -> None:
    fill(database, signer, 13, per_transaction=5)
    assert seal_once(database, signer, limit=8) == SealReport(8, 8)
    assert seal_once(database, signer) == SealReport(5, 13)
    assert seal_once(database, signer) == SealReport(0, 13)  # nothing waiting, nothing signed
    with database.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT seq, leaf_index, leaf_hash FROM audit_records ORDER BY seq")).all()
        nodes = {(r.level, r.idx): bytes(r.hash) for r in conn.execute(
            text("SELECT level, idx, hash FROM audit_tree_nodes"))}
    assert [r.leaf_index for r in rows] == list(range(13))
    leaves = [bytes.fromhex(r.leaf_hash) for r in rows]
    expected = {k: v for k, v in merkle.nodes_of_leaves(leaves).items() if k[0] > 0}
    assert nodes == expected  # every complete node above the leaves, once
    with database.session(write=False) as s:
        first, last = checkpoint_at(s, 8), latest_checkpoint(s)
    assert first is not None
    assert last is not None
    assert first.root_hash == merkle.root_of(leaves[:8]).hex()
    assert last.tree_size == 13
    assert last.root_hash == merkle.root_of(leaves).hex()
    assert last.problem({signer.key_id: signer.public_key}) is None
    result = check(database, signer)
    assert (result.ok, result.count, result.sealed, result.tree_size) == (True, 13, 13, 13)
    assert result.reason == "13 records intact (13 sealed under checkpoint 13)"


def test_rolled_back_appends_leave_no_trace(database: Database, signer: Signer) -> None:
    fill(database, signer, 3)
    def failing_request() -> None:
        with database.session(write=True) as s:
            append(s, signer, event(1), patient_ref=None, agent="a", action="R",
                   subtype="read")
            raise RuntimeError("request failed")

    with pytest.raises(RuntimeError):
        failing_request()
    fill(database, signer, 2)
    assert seal(database, signer).sealed == 5
    result = check(database, signer)
    assert (result.ok, result.count) == (True, 5)


def test_append_all_inserts_a_batch_and_refuses_a_bad_entry_before_writing(
    database: Database, signer: Signer
) -> None:
    entries = [Entry(event(i), f"Patient/{i}", "Client/time", "R", "read") for i in (3, 4, 5)]
    inserts: list[str] = []
    listen = (database.engine, "before_cursor_execute")
    event_listen(*listen, lambda *a: inserts.append(a[2]) if "INSERT" in a[2] else None)
    with database.session(write=True) as s:
        ids = append_all(s, signer, entries)
        assert append_all(s, signer, []) == []
    # a few records: one driver call each on SQLite (numbered in the order given); on
    # PostgreSQL, below PIPELINE_FROM, one prepared INSERT of three VALUES rows
    # (hub/db/direct.py)
    assert PIPELINE_FROM > 3
    assert len(inserts) == (1 if database.dialect == "postgresql" else 3)
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    with database.session(write=False) as s:  # each id is the record of its entry
        assert [s.execute(text("SELECT patient_ref FROM audit_records WHERE seq = :q"),
                          {"q": q}).scalar() for q in ids] == ["Patient/3", "Patient/4",
                                                               "Patient/5"]
    bad = [Entry(event(1), None, "a", "R", "read"), Entry(event(2), None, "a", "X", "read")]
    with database.session(write=True) as s:
        with pytest.raises(ValueError, match="action"):
            append_all(s, signer, bad)
        assert s.execute(text("SELECT count(*) FROM audit_records")).scalar() == 3
    with pytest.raises(ValueError, match="action"), database.session(write=True) as s:
        append(s, signer, {**event(1), "action": "C"}, patient_ref=None, agent="a",
               action="R", subtype="read")


def test_a_record_committed_late_is_sealed_at_the_next_pass(
    database: Database, signer: Signer
) -> None:
    """A transaction takes its record id, another takes a later id and commits first, the
    sealer seals that one; the first then commits and is sealed next, not skipped."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite writers run one at a time: ids are in commit order there")
    appended, go_on = threading.Event(), threading.Event()
    early: list[int] = []

    def slow_transaction() -> None:
        with database.session(write=True) as s:
            early.extend(append_all(s, signer, [Entry(event(1), None, "slow", "R", "read")]))
            appended.set()
            go_on.wait(30)

    slow = threading.Thread(target=slow_transaction)
    slow.start()
    assert appended.wait(30)
    fill(database, signer, 2, first=2)  # later ids, committed first
    assert seal(database, signer) == SealReport(2, 2)
    go_on.set()
    slow.join(30)
    assert seal(database, signer) == SealReport(1, 3)
    with database.engine.connect() as conn:
        leaf = conn.execute(text("SELECT leaf_index FROM audit_records WHERE seq = :s"),
                            {"s": early[0]}).scalar_one()
        later = conn.execute(text(
            "SELECT min(seq) FROM audit_records WHERE agent = 'Client/time'")).scalar_one()
    assert early[0] < later
    assert leaf == 2
    assert check(database, signer).ok


# --- tampering -------------------------------------------------------------------------------


def test_a_sealed_trail_verifies(sealed: Database, signer: Signer) -> None:
    result = check(sealed, signer)
    assert (result.ok, result.count, result.tree_size) == (True, N, N)


def test_edited_body_byte(sealed: Database, signer: Signer) -> None:
    def edit(conn: Connection) -> None:
        body = bytearray(body_of(conn, 5))
        body[body.index(b"Patient/5") + 8] = ord("6")  # a read of Patient/5 becomes Patient/6
        set_body(conn, 5, bytes(body))

    tamper(sealed, edit)
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq, result.position, result.count) == (
        False, 5, 4, 4)
    assert result.reason == "record 5 was edited: its content does not match its hash"


@pytest.mark.parametrize("sealed_too", [True, False])
def test_a_body_edited_in_sql_as_text_is_named_not_a_crash(
    sealed: Database, signer: Signer, sealed_too: bool
) -> None:
    """The edit a database user makes first: SQL's replace() on the body, which on SQLite
    stores TEXT in the BLOB column (PostgreSQL keeps bytea). Verification names the record,
    sealed or waiting for the sealer, instead of failing on the value's type; a body stored
    as TEXT with its bytes unchanged is no edit (the control)."""
    if not sealed_too:
        tamper(sealed, lambda c: c.execute(text(
            "UPDATE audit_records SET leaf_index = NULL WHERE seq >= 5")))
        tamper(sealed, lambda c: c.execute(text(
            "DELETE FROM audit_checkpoints WHERE tree_size > 4")))
    as_text = ("CAST(body AS TEXT)" if sealed.dialect == "sqlite"
               else "convert_to(convert_from(body, 'UTF8'), 'UTF8')")
    tamper(sealed, lambda c: c.execute(text(
        f"UPDATE audit_records SET body = {as_text} WHERE seq = 6")))
    control = check(sealed, signer)
    assert (control.ok, control.count) == (True, N), control.reason
    edit = ("replace(body, 'Patient/5', 'Patient/6')" if sealed.dialect == "sqlite"
            else "convert_to(replace(convert_from(body, 'UTF8'), 'Patient/5', 'Patient/6'), "
                 "'UTF8')")
    tamper(sealed, lambda c: c.execute(text(
        f"UPDATE audit_records SET body = {edit} WHERE seq = 5")))
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq) == (False, 5)
    assert result.reason == ("record 5 was edited: its content does not match its hash"
                             + ("" if sealed_too else " (not sealed yet)"))
    # the auditor's search still lists it, as it now reads (verify says it was edited)
    with sealed.session(write=False) as s:
        lines = {line.seq: line for line in search(s, AuditQuery(count=100)).lines}
    assert lines[5].body["entity"][0]["what"]["reference"] == "Patient/6"


@pytest.mark.parametrize("sealed_too", [True, False])
def test_a_body_edited_into_text_that_is_not_utf8_is_named_not_a_crash(
    sealed: Database, signer: Signer, sealed_too: bool
) -> None:
    """SQLite: `X'FF' || body` stores TEXT that is not UTF-8, which Python's driver cannot
    decode; the trail reads it as the bytes SQLite holds, so verify and the sealer name the
    record where they failed on it (PostgreSQL's bytea cannot hold such a value as text)."""
    if sealed.dialect != "sqlite":
        pytest.skip("SQLite's storage classes: PostgreSQL keeps bytea")
    if not sealed_too:
        tamper(sealed, lambda c: c.execute(text(
            "UPDATE audit_records SET leaf_index = NULL WHERE seq >= 5")))
        tamper(sealed, lambda c: c.execute(text(
            "DELETE FROM audit_checkpoints WHERE tree_size > 4")))
    tamper(sealed, lambda c: c.execute(text(
        "UPDATE audit_records SET body = CAST(X'FF' AS TEXT) || body WHERE seq = 5")))
    with sealed.engine.connect() as conn:  # the edit took: TEXT the driver cannot decode
        assert conn.execute(text("SELECT typeof(body) FROM audit_records WHERE seq = 5")
                            ).scalar() == "text"
        with pytest.raises((OperationalError, sqlite3.OperationalError), match="UTF-8"):
            conn.execute(text("SELECT body FROM audit_records WHERE seq = 5")).all()
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq) == (False, 5), result.reason
    assert result.reason == ("record 5 was edited: its content does not match its hash"
                             + ("" if sealed_too else " (not sealed yet)"))
    if not sealed_too:  # the sealer stops before it, naming it, and seals nothing past it
        report = seal(sealed, signer)
        assert (report.sealed, report.tree_size) == (0, 4)
        assert report.blocked == "record 5 was edited: its content does not match its hash"


def test_edited_body_with_its_leaf_hash_recomputed_fails_the_stored_tree(
    sealed: Database, signer: Signer
) -> None:
    tamper(sealed, lambda c: set_body(c, 5, body_of(c, 5).replace(b'"outcome":"0"',
                                                                  b'"outcome":"8"'), rehash=True))
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq, result.position) == (False, 5, 4)
    assert result.reason.startswith("record 5 has a bad signature")  # its node told where


def test_edited_body_with_the_whole_tree_recomputed_fails_the_checkpoint_and_signature(
    sealed: Database, signer: Signer
) -> None:
    def edit(conn: Connection) -> None:
        set_body(conn, 6, body_of(conn, 6).replace(b'"outcome":"0"', b'"outcome":"4"'),
                 rehash=True)
        rebuild_nodes(conn)  # every node consistent again, but the checkpoints are signed

    tamper(sealed, edit)
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq, result.position) == (False, 6, 5)
    assert "record 6 has a bad signature" in result.reason


def test_a_checkpoint_signed_by_another_key(
    sealed: Database, signer: Signer, attacker: Signer
) -> None:
    def edit(conn: Connection) -> None:
        set_body(conn, 6, body_of(conn, 6).replace(b'"outcome":"0"', b'"outcome":"4"'),
                 rehash=True)
        rebuild_nodes(conn)
        resign_checkpoints(conn, attacker)

    tamper(sealed, edit)
    result = check(sealed, signer)
    assert not result.ok
    assert f"checkpoint 4 is signed by an unknown key ({attacker.key_id})" in result.reason
    tamper(sealed, lambda c: resign_checkpoints(c, attacker, key_id=signer.key_id))
    result = check(sealed, signer)
    assert "checkpoint 4 has a bad signature" in result.reason


def test_edited_checkpoint_root(sealed: Database, signer: Signer) -> None:
    tamper(sealed, lambda c: c.execute(text(
        "UPDATE audit_checkpoints SET root_hash = :r WHERE tree_size = 7"), {"r": "ab" * 32}))
    result = check(sealed, signer)
    assert "checkpoint 7 has a bad signature" in result.reason


@pytest.mark.parametrize(("column", "value"), [("patient_ref", "Patient/99"),
                                                ("patient_ref", None),
                                                ("agent", "Client/other"),
                                                ("action", "C"),
                                                ("subtype", "search")])
def test_edited_search_column(sealed: Database, signer: Signer, column: str,
                              value: str | None) -> None:
    tamper(sealed, lambda c: c.execute(text(
        f"UPDATE audit_records SET {column} = :v WHERE seq = 3"), {"v": value}))
    result = check(sealed, signer)
    assert result.first_broken_seq == 3
    assert result.reason == f"record 3 was edited: its {column} differs from its body"


def disclosure_log_check(database: Database, seq: int, *keys: Signer) -> str | None:
    """What the disclosure log's check of one record (check_record) says of it."""
    with database.session(write=False) as s:
        row = s.get(AuditRecordRow, seq)
        assert row is not None
        return check_record(row, {k.key_id: k.public_key for k in keys})


@pytest.mark.parametrize(("edit", "reason"), [
    ("key_id = 'deadbeef'", "record 3 is signed by an unknown key (deadbeef)"),
    ("signature = (SELECT signature FROM audit_records WHERE seq = 4)",
     "record 3 has a bad signature"),
    ("key_id = :other", "record 3 has a bad signature"),
], ids=["unknown key", "another record's signature", "another trusted key"])
def test_edited_signature_columns_of_a_sealed_record(
    sealed: Database, signer: Signer, attacker: Signer, edit: str, reason: str
) -> None:
    """A sealed record's writer's signature, edited or pointed at another key, is caught as
    the disclosure log catches it, with the one check it uses (record_signature_problem):
    an unknown key_id by every verify (a lookup), a signature that does not hold by
    `verify --signatures` (one Ed25519 check a record, so not the default); the untouched
    trail verifies both ways (the control)."""
    assert check(sealed, signer, attacker).ok
    assert verify(lambda: sealed.session(write=False), {signer.key_id: signer.public_key},
                  signatures=True).ok
    tamper(sealed, lambda c: c.execute(text(f"UPDATE audit_records SET {edit} WHERE seq = 3"),
                                       {"other": attacker.key_id}))
    full = verify(lambda: sealed.session(write=False),
                  {k.key_id: k.public_key for k in (signer, attacker)}, signatures=True)
    assert (full.ok, full.first_broken_seq, full.position, full.count) == (False, 3, 2, 2)
    assert full.reason.startswith(reason)
    assert full.reason == disclosure_log_check(sealed, 3, signer, attacker)  # one check
    quick = check(sealed, signer, attacker)
    if "unknown key" in reason:
        assert (quick.ok, quick.first_broken_seq, quick.reason) == (False, 3, full.reason)
    else:  # the writer's signature of a sealed record is read only with --signatures
        assert quick.ok


@pytest.mark.parametrize("sealed_too", [True, False])
def test_edited_event_id_column(database: Database, signer: Signer, sealed_too: bool) -> None:
    """The event_id column (what GET /fhir/AuditEvent/{id} finds a record by) repeats the
    body's id like the search columns do: pointed at another record's id the database
    refuses it (the column is unique), and pointed at an id no record holds, sealed or not,
    it is caught; the untouched trail verifies (the control)."""
    fill(database, signer, 5)
    if sealed_too:
        seal(database, signer)
    assert check(database, signer).ok
    with pytest.raises(IntegrityError):
        tamper(database, lambda c: c.execute(text(
            "UPDATE audit_records SET event_id = (SELECT event_id FROM audit_records "
            "WHERE seq = 4) WHERE seq = 3")))
    tamper(database, lambda c: c.execute(text(
        "UPDATE audit_records SET event_id = :e WHERE seq = 3"),
        {"e": "0c8f4e2a-0000-4000-8000-000000000000"}))
    result = check(database, signer)
    assert result.first_broken_seq == 3
    assert result.reason.startswith("record 3 was edited: its event_id differs from its body")
    assert seal(database, signer).sealed == (0 if sealed_too else 5)
    assert check(database, signer).first_broken_seq == 3  # the sealer does not mend it


def test_records_without_an_event_id_get_their_bodies_from_the_sealer(
        database: Database, signer: Signer) -> None:
    """A hub process older than migration 0014, still running while another migrated, writes
    (or seals) records without event_id. Nothing they say is changed, so verify does not
    take that for an edit; the sealer's next pass gives each its body's id, sealed or not,
    after which each reads by id."""
    fill(database, signer, 3)
    seal(database, signer)
    fill(database, signer, 2, first=10)
    tamper(database, lambda c: c.execute(text(
        "UPDATE audit_records SET event_id = NULL WHERE seq IN (1, 3, 5)")))
    with database.session(write=False) as s:
        assert audit_queries.read(s, body_event_id(database, 1)) is None  # not until filled
    result = check(database, signer)
    assert (result.ok, result.sealed, result.unsealed) == (True, 3, 2), result.reason
    assert seal(database, signer).sealed == 2
    with database.engine.connect() as conn:
        rows = conn.execute(text("SELECT seq, body, event_id FROM audit_records "
                                 "ORDER BY seq")).all()
    assert [r.event_id for r in rows] == [json.loads(bytes(r.body))["id"] for r in rows]
    with database.session(write=False) as s:
        for row in rows:
            found = audit_queries.read(s, row.event_id)
            assert found is not None
            assert found.seq == row.seq
    result = check(database, signer)
    assert (result.ok, result.sealed) == (True, 5), result.reason


def body_event_id(database: Database, seq: int) -> str:
    with database.engine.connect() as conn:
        return str(json.loads(body_of(conn, seq))["id"])


def test_deleted_middle_record(sealed: Database, signer: Signer) -> None:
    tamper(sealed, lambda c: c.execute(text("DELETE FROM audit_records WHERE seq = 5")))
    result = check(sealed, signer)
    assert (result.ok, result.position, result.count) == (False, 4, 4)
    assert result.reason.startswith("the record at leaf 4 is missing (deleted)")


def test_deleted_middle_record_with_the_rest_moved_up_and_the_tree_rebuilt(
    sealed: Database, signer: Signer
) -> None:
    def edit(conn: Connection) -> None:
        conn.execute(text("DELETE FROM audit_records WHERE seq = 5"))
        conn.execute(text("UPDATE audit_records SET leaf_index = -(leaf_index - 1) "
                          "WHERE leaf_index > 4"))
        conn.execute(text("UPDATE audit_records SET leaf_index = -leaf_index "
                          "WHERE leaf_index < 0"))
        rebuild_nodes(conn)

    tamper(sealed, edit)
    result = check(sealed, signer)
    assert (result.ok, result.position) == (False, 4)
    assert "do not give checkpoint 7's root" in result.reason


def test_deleted_tail_record(sealed: Database, signer: Signer) -> None:
    tamper(sealed, lambda c: c.execute(text("DELETE FROM audit_records WHERE seq = :s"),
                                       {"s": N}))
    result = check(sealed, signer)
    assert (result.ok, result.position, result.count) == (False, N - 1, N - 1)
    assert "truncated tail" in result.reason


def test_truncation_after_a_checkpoint_is_caught_by_a_witness(
    sealed: Database, signer: Signer
) -> None:
    """Cutting the tail together with its nodes and checkpoints leaves a smaller trail that
    is consistent in itself; the checkpoint a witness exported before shows the cut."""
    with sealed.session(write=False) as s:
        kept = latest_checkpoint(s)
    assert kept is not None

    def cut(conn: Connection) -> None:
        conn.execute(text("DELETE FROM audit_records WHERE leaf_index >= 7"))
        conn.execute(text("DELETE FROM audit_checkpoints WHERE tree_size > 7"))
        conn.execute(text("DELETE FROM audit_tree_nodes WHERE (idx + 1) * "
                          "(CASE level WHEN 1 THEN 2 WHEN 2 THEN 4 ELSE 8 END) > 7"))

    tamper(sealed, cut)
    assert check(sealed, signer).ok  # what the database alone can tell
    witnessed = Checkpoint.loads(json.dumps(kept.to_json()))
    result = check(sealed, signer, witnessed=(witnessed,))
    assert (result.ok, result.position) == (False, 7)
    assert "truncated tail" in result.reason


def test_a_witnessed_checkpoint_rewritten_in_the_database(
    sealed: Database, signer: Signer, attacker: Signer
) -> None:
    with sealed.session(write=False) as s:
        kept = checkpoint_at(s, 7)
    assert kept is not None

    def rewrite(conn: Connection) -> None:
        set_body(conn, 2, body_of(conn, 2).replace(b'"outcome":"0"', b'"outcome":"4"'),
                 rehash=True)
        rebuild_nodes(conn)
        resign_checkpoints(conn, signer)  # even with the real key (a stolen key)

    tamper(sealed, rewrite)
    result = check(sealed, signer, witnessed=(kept,))
    assert "checkpoint 7 differs from the witnessed one" in result.reason


def test_inserted_sealed_record_with_the_tree_rebuilt(
    sealed: Database, signer: Signer, attacker: Signer
) -> None:
    def edit(conn: Connection) -> list[int]:
        conn.execute(text("UPDATE audit_records SET leaf_index = -(leaf_index + 1) "
                          "WHERE leaf_index >= 3"))
        conn.execute(text("UPDATE audit_records SET leaf_index = -leaf_index "
                          "WHERE leaf_index < 0"))
        forged.append(forged_row(conn, attacker, leaf_index=3))
        rebuild_nodes(conn)
        return forged

    forged: list[int] = []
    tamper(sealed, edit)
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq, result.position) == (False, forged[0], 3)
    assert "unknown key" in result.reason


def test_inserted_unsealed_record_is_named_and_never_sealed(
    sealed: Database, signer: Signer, attacker: Signer
) -> None:
    forged: list[int] = []
    tamper(sealed, lambda c: forged.append(forged_row(c, attacker, leaf_index=None)))
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq) == (False, forged[0])
    assert "unknown key" in result.reason
    assert "not sealed yet" in result.reason
    fill(sealed, signer, 2, first=50)
    report = seal(sealed, signer)
    assert report.blocked is not None
    assert f"record {forged[0]}" in report.blocked
    with sealed.engine.connect() as conn:
        assert conn.execute(text("SELECT leaf_index FROM audit_records WHERE seq = :s"),
                            {"s": forged[0]}).scalar() is None
    assert "unknown key" in check(sealed, signer).reason


def copy_record(conn: Connection, seq: int, *, event_id: bool = False,
                leaf_index: int | None = None) -> int:
    """Insert a byte copy of record `seq` (body, hash, signature, columns) with a new seq,
    as someone with database access would replay a genuine record; its seq."""
    # the seq the database gives (its sequence on PostgreSQL, which a seq chosen here would
    # leave behind for the next genuine record to collide with)
    return int(conn.execute(text(
        "INSERT INTO audit_records (recorded_at, patient_ref, agent, action, subtype, "
        "body, prev_hash, hash, signature, key_id, leaf_hash, leaf_index, event_id) "
        f"SELECT recorded_at, patient_ref, agent, action, subtype, body, prev_hash, hash, "
        f"signature, key_id, leaf_hash, :i, {'event_id' if event_id else 'NULL'} "
        "FROM audit_records WHERE seq = :s RETURNING seq"), {"i": leaf_index, "s": seq}
    ).scalar_one())


def test_a_copy_of_a_genuine_record_inserted_is_named_and_never_sealed(
    sealed: Database, signer: Signer
) -> None:
    """A byte copy of a genuine record passes every check of its own (its signature covers
    its body, not its seq): the database refuses it with its event_id (unique), and one
    slipped in without it is named by verify as a copy of the record it repeats, and
    stops the sealer there (a genuine record after it is not sealed either), as any record
    that fails its checks does; the untouched trail verifies (the control)."""
    assert check(sealed, signer).ok
    with pytest.raises(IntegrityError):
        tamper(sealed, lambda c: copy_record(c, 5, event_id=True))
    copied: list[int] = []
    tamper(sealed, lambda c: copied.append(copy_record(c, 5)))
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq, result.count) == (False, copied[0], N)
    assert result.reason == (f"record {copied[0]} is a copy of record 5 (the same AuditEvent, "
                             f"{body_event_id(sealed, 5)}, sealed at leaf 4): inserted into "
                             "the trail (not sealed yet)")
    fill(sealed, signer, 1, first=50)
    report = seal(sealed, signer)
    assert (report.sealed, report.tree_size) == (0, N)
    assert report.blocked is not None
    assert report.blocked.startswith(f"record {copied[0]} is a copy of record 5")
    with sealed.engine.connect() as conn:  # neither the copy nor what follows got a leaf
        assert conn.execute(text("SELECT count(*) FROM audit_records WHERE leaf_index IS NULL")
                            ).scalar() == 2
        assert conn.execute(text("SELECT event_id FROM audit_records WHERE seq = :s"),
                            {"s": copied[0]}).scalar() is None  # the sealer left it empty
    assert check(sealed, signer).first_broken_seq == copied[0]


def test_two_unsealed_records_of_one_auditevent_are_named_as_such(
    database: Database, signer: Signer
) -> None:
    """Both unsealed: which is the original cannot be told from the records, so verify says
    what it found; the sealer seals the first and stops at the second."""
    fill(database, signer, 3)
    copied: list[int] = []
    tamper(database, lambda c: copied.append(copy_record(c, 2)))
    result = check(database, signer)
    assert (result.ok, result.first_broken_seq) == (False, copied[0])
    assert result.reason == (f"records 2 and {copied[0]} hold the same AuditEvent "
                             f"({body_event_id(database, 2)}), which the hub writes once: one "
                             "of them is a copy inserted into the trail (not sealed yet)")
    report = seal(database, signer)
    assert (report.sealed, report.tree_size) == (3, 3)
    assert report.blocked is not None
    assert report.blocked.startswith(f"records 2 and {copied[0]} hold the same AuditEvent")
    assert check(database, signer).reason.startswith(  # now the sealed one is the original
        f"record {copied[0]} is a copy of record 2 (the same AuditEvent")


def test_a_copy_sealed_before_the_event_id_was_unique_is_named_at_its_leaf(
    sealed: Database, signer: Signer
) -> None:
    """A trail sealed by a sealer that did not look for copies (before session 22) holds
    the copy under a genuinely signed checkpoint: verify names it at its leaf, after the
    intact records before it."""
    def seal_a_copy(conn: Connection) -> None:
        conn.execute(text("DROP INDEX ix_audit_records_event"))
        copied.append(copy_record(conn, 3, event_id=True, leaf_index=N))
        rebuild_nodes(conn)
        cp = Checkpoint.sign(signer, N + 1, merkle.root_of(leaf_hashes(conn)),
                             datetime.now(UTC))
        conn.execute(text("INSERT INTO audit_checkpoints (tree_size, root_hash, signed_at, "
                          "key_id, signature) VALUES (:n, :r, :t, :k, :s)"),
                     {"n": cp.tree_size, "r": cp.root_hash, "t": cp.signed_at.replace(
                         tzinfo=None) if sealed.dialect == "sqlite" else cp.signed_at,
                      "k": cp.key_id, "s": cp.signature})

    copied: list[int] = []
    tamper(sealed, seal_a_copy)
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq, result.position, result.count) == (
        False, copied[0], N, N)
    assert result.reason == (f"record {copied[0]} is a copy of record 3 (the same AuditEvent, "
                             f"{body_event_id(sealed, 3)}, sealed at leaf 2): inserted into "
                             "the trail")
    with sealed.engine.connect() as conn:  # what `hub audit prove` refuses it with
        assert copies.problem_of(conn, copied[0], N, body_event_id(sealed, 3)) == result.reason
        assert copies.problem_of(conn, 3, 2, body_event_id(sealed, 3)) is None


def test_reordered_records(sealed: Database, signer: Signer) -> None:
    def swap(conn: Connection) -> None:
        conn.execute(text("UPDATE audit_records SET leaf_index = -1 WHERE leaf_index = 2"))
        conn.execute(text("UPDATE audit_records SET leaf_index = 2 WHERE leaf_index = 5"))
        conn.execute(text("UPDATE audit_records SET leaf_index = 5 WHERE leaf_index = -1"))

    tamper(sealed, swap)
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq, result.position) == (False, 6, 2)
    assert "reordered" in result.reason
    tamper(sealed, rebuild_nodes)  # the nodes made to fit: the signed checkpoint does not
    result = check(sealed, signer)
    assert (result.ok, result.position) == (False, 0)
    assert "do not give checkpoint 4's root" in result.reason


def move_leaves(conn: Connection, *moves: tuple[int, int]) -> None:
    """Give the record at each leaf `a` leaf `b` ((a, b) pairs, all at once)."""
    for a, _ in moves:
        conn.execute(text("UPDATE audit_records SET leaf_index = :t WHERE leaf_index = :a"),
                     {"t": -1 - a, "a": a})
    for a, b in moves:
        conn.execute(text("UPDATE audit_records SET leaf_index = :b WHERE leaf_index = :t"),
                     {"b": b, "t": -1 - a})


@pytest.mark.parametrize(("moves", "named", "at", "sealed_there", "now"), [
    # neighbours across two nodes swapped: the first of them in tree order is named
    (((3, 4), (4, 3)), 5, 3, 4, 4),
    # record 3 moved to leaf 8 and record 9 to leaf 2: record 9 is named at leaf 2
    (((2, 8), (8, 2)), 9, 2, 3, 8),
    # the two records under one node swapped: the first, record 2 now at leaf 0, is named
    (((1, 0), (0, 1)), 2, 0, 1, 1),
], ids=["adjacent", "far", "within a node"])
def test_a_reordered_trail_names_the_record_moved(
    sealed: Database, signer: Signer, moves: tuple[tuple[int, int], ...], named: int, at: int,
    sealed_there: int, now: int
) -> None:
    """A stored node over two leaves tells which of them holds a record that is not the
    one sealed there (the node is the hash of the other and the leaf of a record now
    elsewhere): that record is named, not an intact neighbour under the same node; the
    untouched trail verifies (the control)."""
    assert check(sealed, signer).ok
    tamper(sealed, lambda c: move_leaves(c, *moves))
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq, result.position) == (False, named, at)
    assert result.reason == (f"record {named} is at leaf {at}, where record {sealed_there} was "
                             f"sealed (now at leaf {now}): records were reordered or moved")


def test_an_edited_node_names_no_record(sealed: Database, signer: Signer) -> None:
    """A stored node edited while the records under it are as sealed: verify says so and
    names the leaves, not a record (none is broken)."""
    tamper(sealed, lambda c: c.execute(text(
        "UPDATE audit_tree_nodes SET hash = :h WHERE level = 1 AND idx = 3"), {"h": b"x" * 32}))
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq, result.position) == (False, None, 6)
    assert result.reason.startswith("the stored tree node over leaves 6 to 7 was edited: the "
                                    "records under it give the stored node")


def test_sealed_records_beyond_the_latest_checkpoint(sealed: Database, signer: Signer) -> None:
    tamper(sealed, lambda c: c.execute(text("DELETE FROM audit_checkpoints WHERE tree_size = 10")))
    result = check(sealed, signer)
    assert (result.ok, result.first_broken_seq, result.position) == (False, 8, 7)
    assert "no checkpoint covers it" in result.reason


def test_the_sealer_will_not_extend_a_tampered_tree(
    sealed: Database, signer: Signer, attacker: Signer
) -> None:
    fill(sealed, signer, 1, first=20)
    tamper(sealed, lambda c: c.execute(text(
        "UPDATE audit_tree_nodes SET hash = :h WHERE level = 3 AND idx = 0"), {"h": b"x" * 32}))
    with pytest.raises(SealError, match="does not give checkpoint 10's root"):
        seal_once(sealed, signer)
    tamper(sealed, rebuild_nodes)
    tamper(sealed, lambda c: resign_checkpoints(c, attacker))
    with pytest.raises(SealError, match="unknown key"):
        seal_once(sealed, signer)


def test_records_of_an_earlier_key_seal_and_verify_with_its_public_key(
    database: Database, signer: Signer, attacker: Signer
) -> None:
    old = Signer.from_key(Ed25519PrivateKey.generate())
    fill(database, old, 3)
    assert "unknown key" in check(database, signer).reason  # unsealed: its own signature
    assert check(database, signer, old).ok
    assert seal(database, signer).blocked is not None  # unknown to the sealer
    assert seal_all(database, signer, keys={old.key_id: old.public_key}).sealed == 3
    # sealed, the records still name the old key: verify needs it, as the disclosure log
    # does (until session 22 verify passed them without it, and the log called them changed)
    result = check(database, signer)
    assert (result.ok, result.first_broken_seq) == (False, 1)
    assert result.reason == f"record 1 is signed by an unknown key ({old.key_id})"
    assert check(database, signer, old).ok


# --- proofs ----------------------------------------------------------------------------------


def test_inclusion_proofs_of_every_record_against_the_latest_and_an_older_checkpoint(
    sealed: Database,
) -> None:
    with sealed.session(write=False) as s:
        latest, older = latest_checkpoint(s), checkpoint_at(s, 7)
        assert latest is not None
        assert older is not None
        for seq in range(1, N + 1):
            proof = inclusion_proof(s, seq)
            root = merkle.root_from_inclusion(proof.leaf_index, latest.tree_size,
                                              proof.leaf_hash, proof.path)
            assert root == bytes.fromhex(latest.root_hash)
        proof = inclusion_proof(s, 3, older)
        assert merkle.root_from_inclusion(2, 7, proof.leaf_hash, proof.path) == bytes.fromhex(
            older.root_hash)
        with pytest.raises(TreeError, match="not sealed yet"):
            inclusion_proof(s, 9, older)
        with pytest.raises(TreeError, match="no record 999"):
            inclusion_proof(s, 999)
    assert proof.to_json()["inclusion_path"] == [p.hex() for p in proof.path]


def test_consistency_between_checkpoints_and_a_rewrite_refused(sealed: Database) -> None:
    with sealed.session(write=False) as s:
        four, ten = checkpoint_at(s, 4), latest_checkpoint(s)
        assert four is not None
        assert ten is not None
        proof = consistency_proof(s, four, ten)
    assert merkle.consistent(4, 10, bytes.fromhex(four.root_hash),
                             bytes.fromhex(ten.root_hash), proof)
    tamper(sealed, lambda c: c.execute(text(
        "UPDATE audit_tree_nodes SET hash = :h WHERE level = 1 AND idx = 4"), {"h": b"y" * 32}))
    with sealed.session(write=False) as s, pytest.raises(TreeError, match="not consistent"):
        consistency_proof(s, four, ten)


def test_a_proof_from_a_damaged_stored_node_is_refused(sealed: Database) -> None:
    tamper(sealed, lambda c: c.execute(text(
        "UPDATE audit_tree_nodes SET hash = :h WHERE level = 2 AND idx = 1"), {"h": b"z" * 32}))
    with sealed.session(write=False) as s, pytest.raises(TreeError, match="does not prove"):
        inclusion_proof(s, 1)


# --- concurrency ---------------------------------------------------------------------------


def test_writers_and_sealers_in_threads_seal_every_record_once(
    database: Database, signer: Signer
) -> None:
    threads, transactions, per_tx = 4, 15, 3
    stop, errors = threading.Event(), []

    def writer(t: int) -> None:
        try:
            for x in range(transactions):
                with database.session(write=True) as s:
                    append_all(s, signer, [Entry(event(x), None, f"T{t}-{x}", "R", "read")
                                           for _ in range(per_tx)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def sealer() -> None:
        try:
            while not stop.is_set():
                seal_once(database, signer)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    sealers = [threading.Thread(target=sealer) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in [*sealers, *writers]:
        w.start()
    for w in writers:
        w.join(120)
    stop.set()
    for w in sealers:
        w.join(60)
    assert not errors, errors
    seal(database, signer)
    total = threads * transactions * per_tx
    with database.engine.connect() as conn:
        leaves = [i for (i,) in conn.execute(text(
            "SELECT leaf_index FROM audit_records ORDER BY leaf_index"))]
    assert leaves == list(range(total))
    result = check(database, signer)
    assert (result.ok, result.count, result.sealed) == (True, total, total)


@given(st.one_of(st.none(), st.text()), st.text(), st.text())
def test_verify_finds_the_index_extension_bytes_the_writer_made(
        patient: str | None, agent: str, subtype: str) -> None:
    """verify's fast column check looks for the exact bytes of the canonical audit-index
    extension; they are what canonical_json writes, whatever the text."""
    assert index_bytes(patient, agent, subtype) == canonical_json(
        _index_extension(patient, agent, subtype))


def test_verify_while_the_sealer_seals(database: Database, signer: Signer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Records sealed while verify runs come with their own checkpoint: no false alarm."""
    monkeypatch.setattr("hub.audit.verify.BATCH_SIZE", 7)
    fill(database, signer, 40)
    seal(database, signer)
    stop, errors = threading.Event(), []

    def busy() -> None:
        try:
            n = 1000
            while not stop.is_set():
                fill(database, signer, 3, first=n)
                seal_once(database, signer)
                n += 3
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        results = [check(database, signer) for _ in range(5)]
    finally:
        stop.set()
        worker.join(60)
    assert not errors, errors
    assert all(r.ok for r in results), [r.reason for r in results]


def _swap_leaves_2_and_5(conn: Connection) -> None:
    conn.execute(text("UPDATE audit_records SET leaf_index = -1 WHERE leaf_index = 2"))
    conn.execute(text("UPDATE audit_records SET leaf_index = 2 WHERE leaf_index = 5"))
    conn.execute(text("UPDATE audit_records SET leaf_index = 5 WHERE leaf_index = -1"))


def _rehash_and_rebuild(conn: Connection) -> None:
    set_body(conn, 9, body_of(conn, 9).replace(b'"outcome":"0"', b'"outcome":"4"'), rehash=True)
    rebuild_nodes(conn)


@pytest.mark.parametrize("edit", [
    lambda c: None,
    lambda c: set_body(c, 9, body_of(c, 9).replace(b"Patient/9", b"Patient/8")),
    lambda c: c.execute(text("DELETE FROM audit_records WHERE seq = 6")),
    lambda c: c.execute(text("UPDATE audit_tree_nodes SET hash = :h WHERE level = 2 AND idx = 1"),
                        {"h": b"x" * 32}),
    _swap_leaves_2_and_5,
    _rehash_and_rebuild,
], ids=["intact", "edited", "deleted", "node edited", "reordered", "rehashed"])
def test_verify_in_worker_processes_finds_what_one_process_finds(
        database: Database, signer: Signer, monkeypatch: pytest.MonkeyPatch,
        edit: Callable[[Connection], object]) -> None:
    """Chunks checked in two processes (each reading on its own connection) give the same
    answer, named record and position as the walk in one."""
    monkeypatch.setattr(verify_module, "CHUNK_LEVEL", 1)  # five chunks
    monkeypatch.setattr(verify_module, "PROCESSES_ABOVE", 0)
    pools: list[int] = []

    class Pool(ProcessPoolExecutor):
        def __init__(self, workers: int, **kwargs: Any) -> None:
            pools.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(verify_module, "ProcessPoolExecutor", Pool)
    sealed = seal_in_three_passes(database, signer)
    tamper(sealed, edit)
    alone = check(sealed, signer)
    assert pools == []
    assert check(sealed, signer, jobs=2) == alone
    assert pools == [2]


def test_canonical_json_writes_the_json_modules_bytes_for_the_hubs_events(
        signer: Signer) -> None:
    # records.canonical_json writes with orjson; the bytes must be those the json module
    # wrote for the same events (sorted keys, compact, UTF-8, the same escapes), which
    # index_bytes and columns_agree look for in every body
    from hub.audit import events
    from hub.auth.subject import Subject

    odd = 'Ærø "q" \\ \x00\x1f\x7f \u2028 😀'
    subject = Subject("client", f"client {odd}", "org-ø", frozenset({"system/*.*"}))
    made = [
        events.rest_event(subject, interaction="search-type", resource_type="Patient",
                          patient_refs=["Patient/ø"], query=f"name={odd}",
                          address="127.0.0.1", base_url="http://h/fhir"),
        events.sign_in_event(odd, "failed", role="coordinator", address="::1"),
        events.token_event(odd, organization_id=None, outcome="4", reason=odd,
                           verified=False),
        {"resourceType": "AuditEvent", "n": [0, -1, 2**62], "b": [True, False, None],
         "é": {"z": 1, "a": {"y": [], "x": {}}}, "E": odd},
    ]
    for event in made:
        reference = json.dumps(event, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False, allow_nan=False).encode("utf-8")
        assert canonical_json(event) == reference, event
    rows = signed_rows(signer, [Entry(made[0], "Patient/ø", odd, "E", odd)])
    # U+0000 and U+001F, which PostgreSQL's text (the first) and FHIR strings cannot hold,
    # are recorded as U+FFFD, in the body and the columns alike; the rest as it was
    kept = odd.replace("\x00", "\ufffd").replace("\x1f", "\ufffd")
    assert (rows[0]["agent"], rows[0]["subtype"]) == (kept, kept)
    assert "\\ \ufffd\ufffd\x7f \u2028" in kept
    assert columns_agree(rows[0]["body"], instant_text(rows[0]["recorded_at"]), "E",
                         "Patient/ø", kept, kept)
    body = rows[0]["body"].decode()  # the event's own strings too, as JSON writes them:
    assert json.dumps(f"client {kept}", ensure_ascii=False)[1:-1] in body
    assert "\\u0000" not in body
    assert "\\u001f" not in body


def test_a_lone_surrogate_in_what_is_recorded_becomes_u_fffd_and_verifies(
        database: Database, signer: Signer) -> None:
    """What a caller sent may reach a record holding a lone surrogate, which UTF-8 cannot
    hold: the record is written with U+FFFD in its place (it was lost, a 500)."""
    with database.session(write=True) as s:
        append(s, signer, {"resourceType": "AuditEvent", "outcomeDesc": "'x\ud800'"},
               patient_ref="Patient/a\udc00", agent="Client/t", action="E", subtype="read")
    with database.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM audit_records")).one()
    assert json.loads(row.body)["outcomeDesc"] == "'x\ufffd'"
    assert row.patient_ref == "Patient/a\ufffd"
    result = check(database, signer)
    assert result.ok, result.reason

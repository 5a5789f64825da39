"""Migration 0010 turns the hash-chained audit trail into records the sealer puts into the
Merkle tree: chain records written before it are checked link by link as they are sealed, in
chain order and before any new record; a chain whose head does not name its last record is
refused. Run on a database taken back to 0009 (the audit tables as 0003-0007 left them) and
filled the way the chain writer did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, text

from hub.audit import queries as audit_queries
from hub.audit.models import GENESIS_HASH
from hub.audit.records import canonical_json, link_hash
from hub.audit.seal import seal_all
from hub.audit.signing import Signer
from hub.audit.verify import verify
from hub.db.engine import Database
from hub.db.migrate import alembic_config, upgrade
from tests.audit.test_trail import event, fill


def _to(database: Database, revision: str) -> None:
    with database.engine.connect() as conn:
        cfg = alembic_config(database.engine.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()


def _legacy_chain(conn: Connection, signer: Signer, n: int) -> list[str]:
    """n records as 0007's chain.append wrote them (seq 1..n, linked, head at the last)."""
    prev, hashes = GENESIS_HASH, []
    for seq in range(1, n + 1):
        body = canonical_json({**event(seq), "id": f"legacy-{seq}", "action": "R",
                               "recorded": "2026-11-30T10:00:00.000000Z",
                               "extension": [{"url": "http://carehub.example/fhir/"
                                              "StructureDefinition/audit-index", "extension": [
                                                  {"url": "agent", "valueString": "Client/time"},
                                                  {"url": "subtype", "valueCode": "read"}]}]})
        digest = link_hash(prev, body)
        conn.execute(text(
            "INSERT INTO audit_records (seq, recorded_at, patient_ref, agent, action, subtype, "
            "body, prev_hash, hash, signature, key_id) VALUES (:s, :t, NULL, 'Client/time', "
            "'R', 'read', :b, :p, :h, :sig, :k)"),
            {"s": seq, "t": "2026-11-30 10:00:00", "b": body, "p": prev, "h": digest,
             "sig": signer.sign(bytes.fromhex(digest)), "k": signer.key_id})
        prev = digest
        hashes.append(digest)
    conn.execute(text("UPDATE audit_chain_head SET seq = :s, hash = :h"), {"s": n, "h": prev})
    return hashes


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.from_file(tmp_path / "audit-key.pem")


@pytest.fixture
def at_0007(database: Database) -> Database:
    _to(database, "0009")
    return database


def _keys(signer: Signer) -> dict[str, Any]:
    return {signer.key_id: signer.public_key}


def test_chain_records_are_sealed_first_in_chain_order_and_new_ids_follow(
    at_0007: Database, signer: Signer
) -> None:
    with at_0007.engine.begin() as conn:
        _legacy_chain(conn, signer, 6)
    upgrade(at_0007.engine)
    fill(at_0007, signer, 3, first=100)  # written after the upgrade: ids after the chain's
    result = verify(lambda: at_0007.session(write=False), _keys(signer))
    assert (result.ok, result.unsealed, result.sealed) == (True, 9, 0)
    report = seal_all(at_0007, signer)
    assert (report.sealed, report.tree_size, report.blocked) == (9, 9, None)
    with at_0007.engine.connect() as conn:
        rows = conn.execute(text("SELECT seq, leaf_index, prev_hash IS NOT NULL AS legacy "
                                 "FROM audit_records ORDER BY leaf_index")).all()
    assert [(r.seq, r.leaf_index) for r in rows[:6]] == [(i, i - 1) for i in range(1, 7)]
    assert [bool(r.legacy) for r in rows] == [True] * 6 + [False] * 3
    assert min(r.seq for r in rows[6:]) == 7
    result = verify(lambda: at_0007.session(write=False), _keys(signer))
    assert (result.ok, result.sealed) == (True, 9)


def test_a_broken_chain_record_is_not_sealed(at_0007: Database, signer: Signer) -> None:
    with at_0007.engine.begin() as conn:
        _legacy_chain(conn, signer, 5)
        conn.execute(text("DELETE FROM audit_records WHERE seq = 3"))  # a gap in the chain
        conn.execute(text("UPDATE audit_chain_head SET seq = 5"))
    upgrade(at_0007.engine)
    report = seal_all(at_0007, signer)
    assert (report.sealed, report.tree_size) == (2, 2)
    assert report.blocked is not None
    assert "record 4 breaks the legacy hash chain" in report.blocked


def test_a_chain_whose_head_does_not_name_its_last_record_is_refused(
    at_0007: Database, signer: Signer
) -> None:
    with at_0007.engine.begin() as conn:
        _legacy_chain(conn, signer, 4)
        conn.execute(text("DELETE FROM audit_records WHERE seq = 4"))  # the tail cut off
    with pytest.raises(RuntimeError, match="truncated or extended tail"):
        upgrade(at_0007.engine)


def test_downgrade_and_upgrade_on_an_empty_trail(at_0007: Database, signer: Signer) -> None:
    upgrade(at_0007.engine)
    fill(at_0007, signer, 2)
    assert seal_all(at_0007, signer).sealed == 2


def test_0014_gives_the_records_written_before_it_their_event_ids(
    database: Database, signer: Signer
) -> None:
    """Migration 0014 fills audit_records.event_id from each body: the trail verifies and
    each record reads by its id afterwards; a body edited in SQL into something that is no
    JSON keeps NULL instead of failing the migration (verify names it by its hash)."""
    fill(database, signer, 4)
    seal_all(database, signer)
    fill(database, signer, 2, first=10)  # and two not sealed yet
    _to(database, "0013")
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE audit_records SET body = :b WHERE seq = 2"),
                     {"b": b"not json"})
    upgrade(database.engine)
    with database.engine.connect() as conn:
        rows = conn.execute(text("SELECT seq, body, event_id FROM audit_records "
                                 "ORDER BY seq")).all()
    assert len(rows) == 6
    for row in rows:
        expected = None if row.seq == 2 else json.loads(bytes(row.body))["id"]
        assert row.event_id == expected
    with database.session(write=False) as s:
        for row in rows:
            if row.event_id is not None:
                line = audit_queries.read(s, row.event_id)
                assert line is not None
                assert line.seq == row.seq
    result = verify(lambda: database.session(write=False), _keys(signer))
    assert (result.ok, result.first_broken_seq) == (False, 2)
    assert "does not match its hash" in result.reason


def test_0015_makes_event_ids_unique_on_a_trail_that_holds_a_copy_already(
    database: Database, signer: Signer
) -> None:
    """Migration 0015 makes audit_records.event_id unique. A trail holding a copy inserted
    before it (possible then) still migrates: the original keeps its event_id and reads by
    it, the copy's column is emptied (nothing signed changes), and verify names the copy;
    the records of an untouched trail keep their ids (the control)."""
    fill(database, signer, 4)
    seal_all(database, signer)
    _to(database, "0014")
    with database.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO audit_records (seq, recorded_at, patient_ref, agent, action, subtype, "
            "body, signature, key_id, leaf_hash, event_id) SELECT 9, recorded_at, patient_ref, "
            "agent, action, subtype, body, signature, key_id, leaf_hash, event_id "
            "FROM audit_records WHERE seq = 2"))
    upgrade(database.engine)
    with database.engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT seq, event_id FROM audit_records")).all())
        original = str(json.loads(bytes(conn.execute(text(
            "SELECT body FROM audit_records WHERE seq = 2")).scalar_one()))["id"])
    assert rows[2] == original
    assert rows[9] is None
    assert all(rows[seq] is not None for seq in (1, 3, 4))
    with database.session(write=False) as s:
        line = audit_queries.read(s, original)
        assert line is not None
        assert line.seq == 2
    result = verify(lambda: database.session(write=False), _keys(signer))
    assert (result.ok, result.first_broken_seq, result.count) == (False, 9, 4)
    assert result.reason.startswith("record 9 is a copy of record 2 (the same AuditEvent")
    assert seal_all(database, signer).blocked is not None  # and it is never sealed

"""`hub audit verify | seal | prove | checkpoint export | consistency | public-key` against
a real database."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy import event as event_api
from typer.testing import CliRunner

from hub.audit import merkle
from hub.audit.checkpoint import Checkpoint
from hub.audit.cli import audit_app
from hub.audit.models import AuditRecordRow
from hub.audit.records import Entry
from hub.audit.seal import seal_all
from hub.audit.signing import Signer, key_id, load_public_key
from hub.audit.spool import ReadAudit
from hub.config import get_settings
from hub.db.engine import Database
from tests.audit.test_trail import fill


@pytest.fixture
def key_path(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """HUB_DATABASE_URL and HUB_AUDIT_KEY_FILE set for the CLI; the key file exists."""
    path = tmp_path / "audit-key.pem"
    Signer.from_file(path)
    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    monkeypatch.setenv("HUB_AUDIT_KEY_FILE", str(path))
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def test_verify_prints_the_number_of_intact_records(database: Database, key_path: Path) -> None:
    fill(database, Signer.from_file(key_path), 25)
    result = CliRunner().invoke(audit_app, ["verify"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "25 records intact"


def test_verify_names_the_first_broken_record(database: Database, key_path: Path) -> None:
    fill(database, Signer.from_file(key_path), 12)
    assert CliRunner().invoke(audit_app, ["seal", "--once"]).exit_code == 0
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE audit_records SET agent = 'Client/x' WHERE seq IN (7, 9)"))
    result = CliRunner().invoke(audit_app, ["verify"])
    assert result.exit_code == 1
    assert result.stdout.strip() == (
        "broken at record 7: record 7 was edited: its agent differs from its body")
    with database.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_records WHERE seq IN (7, 9)"))
    result = CliRunner().invoke(audit_app, ["verify"])
    assert result.stdout.strip() == (
        "broken at leaf 6: the record at leaf 6 is missing (deleted): the tree jumps from "
        "leaf 5 to record 8 at leaf 7")


def test_seal_prove_export_and_consistency(database: Database, key_path: Path,
                                           tmp_path: Path) -> None:
    signer = Signer.from_file(key_path)
    fill(database, signer, 5)
    assert CliRunner().invoke(audit_app, ["prove", "3"]).exit_code == 1  # not sealed yet
    sealed = CliRunner().invoke(audit_app, ["seal", "--once"])
    assert sealed.stdout.strip() == "sealed 5 records; tree size 5"
    exported = CliRunner().invoke(audit_app, ["checkpoint", "export"])
    assert exported.exit_code == 0, exported.output
    old = tmp_path / "witness-5.json"
    old.write_text(exported.stdout)
    assert Checkpoint.loads(exported.stdout).tree_size == 5
    fill(database, signer, 6, first=6)
    CliRunner().invoke(audit_app, ["seal", "--once"])

    proof = json.loads(CliRunner().invoke(audit_app, ["prove", "3"]).stdout)
    assert (proof["record"], proof["leaf_index"], proof["tree_size"]) == (3, 2, 11)
    root = merkle.root_from_inclusion(2, 11, bytes.fromhex(proof["leaf_hash"]),
                                      [bytes.fromhex(p) for p in proof["inclusion_path"]])
    assert root is not None
    assert root.hex() == proof["root_hash"]

    for args in ([str(old)], ["5", "11"]):
        result = CliRunner().invoke(audit_app, ["consistency", *args])
        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        assert merkle.consistent(5, 11, bytes.fromhex(shown["old"]["root_hash"]),
                                 bytes.fromhex(shown["new"]["root_hash"]),
                                 [bytes.fromhex(p) for p in shown["consistency_path"]])
    assert CliRunner().invoke(audit_app, ["verify", "--witness", str(old)]).exit_code == 0
    assert CliRunner().invoke(audit_app, ["consistency", "6"]).exit_code == 1  # no such one


def test_prove_refuses_a_record_whose_body_was_edited(database: Database,
                                                      key_path: Path) -> None:
    """A proof is of the stored leaf hash: for a record edited since (its body, or its
    writer's signature), prove says so and exits 1 instead of handing out a proof of what
    the record no longer says; a genuine record proves (the control)."""
    fill(database, Signer.from_file(key_path), 5)
    assert CliRunner().invoke(audit_app, ["seal", "--once"]).exit_code == 0
    genuine = CliRunner().invoke(audit_app, ["prove", "3"])
    assert genuine.exit_code == 0, genuine.output
    assert json.loads(genuine.stdout)["record"] == 3
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE audit_records SET body = :b WHERE seq = 3"), {"b": bytes(
            conn.execute(text("SELECT body FROM audit_records WHERE seq = 3")).scalar_one()
        ).replace(b"Patient/3", b"Patient/4")})
        conn.execute(text("UPDATE audit_records SET signature = (SELECT signature FROM "
                          "audit_records WHERE seq = 5) WHERE seq = 4"))
    edited = CliRunner().invoke(audit_app, ["prove", "3"])
    assert edited.exit_code == 1
    assert edited.stdout == ""
    assert "record 3 was edited: its content does not match its hash" in edited.stderr
    assert "no proof is given" in edited.stderr
    resigned = CliRunner().invoke(audit_app, ["prove", "4"])
    assert resigned.exit_code == 1
    assert "record 4 has a bad signature" in resigned.stderr
    assert CliRunner().invoke(audit_app, ["prove", "2"]).exit_code == 0


def test_verify_with_an_earlier_key_given_as_public_key(
    database: Database, key_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(database, Signer.from_file(key_path), 5)
    exported = CliRunner().invoke(audit_app, ["public-key"])
    assert exported.exit_code == 0
    old_pub = tmp_path / "old.pub.pem"
    old_pub.write_text(exported.stdout)
    assert key_id(load_public_key(old_pub.read_bytes())) == Signer.from_file(key_path).key_id

    new_key = tmp_path / "new-key.pem"  # the key changed: new records, new key
    monkeypatch.setenv("HUB_AUDIT_KEY_FILE", str(new_key))
    get_settings.cache_clear()
    fill(database, Signer.from_file(new_key), 3)
    assert CliRunner().invoke(audit_app, ["verify"]).stdout.startswith("broken at record 1: ")
    # the sealer, with the new key, seals the old records only when told the old key
    assert CliRunner().invoke(audit_app, ["seal", "--once"]).exit_code == 1
    monkeypatch.setenv("HUB_AUDIT_TRUSTED_KEYS", str(old_pub))
    get_settings.cache_clear()
    assert CliRunner().invoke(audit_app, ["seal", "--once"]).exit_code == 0
    monkeypatch.delenv("HUB_AUDIT_TRUSTED_KEYS")
    get_settings.cache_clear()
    result = CliRunner().invoke(audit_app, ["verify", "--public-key", str(old_pub)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "8 records intact"


def test_verify_draws_progress_for_big_trails(
    database: Database, key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hub.audit.cli.PROGRESS_ABOVE", 10)
    monkeypatch.setattr("hub.audit.verify.BATCH_SIZE", 4)
    fill(database, Signer.from_file(key_path), 11)
    CliRunner().invoke(audit_app, ["seal", "--once"])
    result = CliRunner().invoke(audit_app, ["verify"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "11 records intact"


def test_public_key_without_a_key_file(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_AUDIT_KEY_FILE", str(tmp_path / "none.pem"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(audit_app, ["public-key"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "no audit key" in result.stderr
    assert not (tmp_path / "none.pem").exists()


def test_seal_once_moves_the_reads_records_in_sealed(database: Database, key_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`hub audit seal --once` takes the sealer's path: the spools' records go in sealed,
    with no second write of each (no UPDATE of a moved row), over as many passes as the
    backlog needs; an edited spool record stops it, and what follows still goes in."""
    if database.dialect != "sqlite":
        pytest.skip("the spool is SQLite's")
    monkeypatch.setattr("hub.audit.cli.seal_all", partial(seal_all, limit=3))
    signer = Signer.from_file(key_path)
    fill(database, signer, 2)
    reads = ReadAudit(database)
    event = {"resourceType": "AuditEvent", "action": "R"}
    try:
        for r in range(7):
            reads.append(signer, [Entry(event, "Patient/p", f"Client/read-{r}", "R", "read")])
        updated: list[int] = []

        def seen(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, many: bool
                 ) -> None:
            if sql.startswith("UPDATE audit_records"):
                updated.append(len(params) if many else 1)

        event_api.listen(Engine, "before_cursor_execute", seen)
        try:
            result = CliRunner().invoke(audit_app, ["seal", "--once"])
        finally:
            event_api.remove(Engine, "before_cursor_execute", seen)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "sealed 9 records; tree size 9"
        assert sum(updated) == 2  # the two records written directly; the moved ones: none
        assert reads.check({signer.key_id: signer.public_key}).waiting == 0
        assert CliRunner().invoke(audit_app, ["verify"]).stdout.strip() == "9 records intact"

        for r in range(7, 11):
            reads.append(signer, [Entry(event, "Patient/p", f"Client/read-{r}", "R", "read")])
        assert reads.path is not None
        with sqlite3.connect(reads.path) as conn:
            conn.execute("UPDATE audit_spool SET body = replace(body, 'read-8', 'read-0') "
                         "WHERE agent = 'Client/read-8'")
        result = CliRunner().invoke(audit_app, ["seal", "--once"])
        assert result.exit_code == 1
        assert "stopped before a record that may not be sealed: spool record" in result.output
        assert reads.check({signer.key_id: signer.public_key}).waiting == 0  # all moved in
        with database.session(write=False) as s:
            leaves = dict(s.execute(select(AuditRecordRow.agent, AuditRecordRow.leaf_index)
                                    .where(AuditRecordRow.agent.like("Client/read-%"))).all())
        assert leaves["Client/read-7"] == 9
        assert [leaves[f"Client/read-{r}"] for r in (8, 9, 10)] == [None, None, None]
    finally:
        reads.close()

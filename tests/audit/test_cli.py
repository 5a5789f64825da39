"""`hub audit verify | seal | prove | checkpoint export | consistency | public-key` against
a real database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from hub.audit import merkle
from hub.audit.checkpoint import Checkpoint
from hub.audit.cli import audit_app
from hub.audit.signing import Signer, key_id, load_public_key
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

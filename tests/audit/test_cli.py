"""`hub audit verify` and `hub audit public-key` against a real database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from hub.audit.cli import audit_app
from hub.audit.signing import Signer, key_id, load_public_key
from hub.config import get_settings
from hub.db.engine import Database
from tests.audit.test_chain import fill


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
    with database.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_records WHERE seq IN (7, 9)"))
    result = CliRunner().invoke(audit_app, ["verify"])
    assert result.exit_code == 1
    assert result.stdout.strip() == (
        "broken at record 7: record 7 is missing (deleted): the chain jumps from record 6 to 8")


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
    result = CliRunner().invoke(audit_app, ["verify", "--public-key", str(old_pub)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "8 records intact"


def test_verify_draws_progress_for_big_trails(
    database: Database, key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hub.audit.cli.PROGRESS_ABOVE", 10)
    monkeypatch.setattr("hub.audit.chain.BATCH_SIZE", 4)
    fill(database, Signer.from_file(key_path), 11)
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

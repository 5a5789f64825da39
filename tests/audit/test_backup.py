"""deploy/backup.sh on SQLite, the embedded default (PostgreSQL's is run by deploy/up.sh in
CI): a backup taken while the hub serves, with reads' audit records still in its spool,
restores to a database whose trail verifies and holds every record once; a damaged backup
and a restore over a database in use are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.audit.models import AuditRecordRow
from hub.audit.spool import ReadAudit
from hub.config import Settings
from hub.db.engine import Database
from tests.factories import fnr, patient

ROOT = Path(__file__).resolve().parents[2]
HUB = Path(sys.executable).parent / "hub"


def _backup_sh(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "deploy" / "backup.sh"), *args],
                          env={**os.environ, "HUB": str(HUB), "PY": sys.executable,
                               "HUB_AUDIT_TRUSTED_KEYS": "", **env},
                          capture_output=True, text=True, timeout=300, check=False)


def _records(url: str) -> tuple[int, int]:
    """(records in the trail, records of reads waiting in the spool) of the database."""
    db = Database.connect(Settings(database_url=url))
    reads = ReadAudit(db)
    try:
        waiting = reads.check({}).waiting
        with db.session(write=False) as s:
            kept = int(s.scalar(select(func.count()).select_from(AuditRecordRow)) or 0)
        return kept, waiting
    finally:
        reads.close()
        db.dispose()


def test_a_backup_taken_while_the_hub_serves_restores_every_audit_record(
        client: TestClient, database: Database, settings: Settings, tmp_path: Path) -> None:
    if database.dialect != "sqlite":
        pytest.skip("PostgreSQL's backup and restore run in deploy/up.sh")
    pid = client.post("/fhir/Patient", json=patient(fnr(date(1970, 1, 5)))).json()["id"]
    for _ in range(3):
        assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    kept, waiting = _records(settings.database_url)
    assert waiting >= 3  # the reads' records: in the spool, not yet in the trail
    env = {"HUB_DATABASE_URL": settings.database_url,
           "HUB_AUDIT_KEY_FILE": settings.audit_key_file}
    made = _backup_sh("backup", str(tmp_path / "backups"), env=env)
    assert made.returncode == 0, made.stderr
    backup = Path(made.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in (backup / "spool").iterdir())  # the spool came along
    # restore into a new place, with the key file not there yet
    target = tmp_path / "restored"
    target.mkdir()
    there = {"HUB_DATABASE_URL": f"sqlite:///{target / 'hub.db'}",
             "HUB_AUDIT_KEY_FILE": str(target / "audit-key.pem")}
    done = _backup_sh("restore", str(backup), env=there)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "audit-key.pem").read_bytes() == Path(
        settings.audit_key_file).read_bytes()
    # every record is there once: the trail's, and the reads' still waiting to be moved
    assert _records(there["HUB_DATABASE_URL"]) == (kept, waiting)
    restored = Database.connect(Settings(database_url=there["HUB_DATABASE_URL"]))
    reads = ReadAudit(restored)
    try:
        assert reads.move_all() == waiting
        assert reads.move_all() == 0
    finally:
        reads.close()
        restored.dispose()
    assert _records(there["HUB_DATABASE_URL"]) == (kept + waiting, 0)
    # refused: restoring over the database now in use, and a damaged backup
    again = _backup_sh("restore", str(backup), env=there)
    assert again.returncode != 0
    assert "exists and is not empty" in again.stderr
    with (backup / "database.sqlite").open("r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01")
    fresh = {**there, "HUB_DATABASE_URL": f"sqlite:///{target / 'other.db'}"}
    damaged = _backup_sh("restore", str(backup), env=fresh)
    assert damaged.returncode != 0
    assert "damaged" in damaged.stderr
    assert not (target / "other.db").exists()

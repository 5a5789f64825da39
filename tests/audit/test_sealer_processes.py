"""Sealers as real processes on one database (`hub serve --roles sealer` and `hub audit seal`
side by side, while records are appended, reads' records among them): every record is moved
in and sealed exactly once, the tree has no gap, each checkpoint is larger than the one
before, and the trail verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import text

from hub.audit.records import Entry, append_all
from hub.audit.signing import Signer
from hub.audit.spool import ReadAudit
from hub.config import Settings
from hub.db.engine import Database
from tests.audit.test_trail import check, event


def _sealer(args: list[str], settings: Settings) -> subprocess.Popen[str]:
    env = {**os.environ, "HUB_DATABASE_URL": settings.database_url,
           "HUB_AUDIT_KEY_FILE": settings.audit_key_file, "HUB_SEAL_INTERVAL": "0.02"}
    return subprocess.Popen([sys.executable, "-m", "hub.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _unsealed(database: Database) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM audit_records WHERE leaf_index IS NULL")).scalar_one())


def _records(database: Database) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_records")).scalar_one())


def test_sealer_processes_seal_each_record_once(database: Database, settings: Settings) -> None:
    signer = Signer.from_file(settings.audit_key_file)
    procs = [_sealer(["serve", "--roles", "sealer"], settings),
             _sealer(["serve", "--roles", "sealer"], settings),
             _sealer(["audit", "seal"], settings)]
    for p in procs:  # each says so on stderr once its signal handler is in place
        assert p.stderr is not None
        assert p.stderr.readline(), "a sealer process did not start"
    writers, per_writer, errors = 4, 60, []
    # Reads' records too, as a hub process commits them (on SQLite into this process's
    # spool, which the sealers move in and seal in the same transaction; on PostgreSQL
    # straight into the trail), while the writers write.
    reads, readers = ReadAudit(database, settings), 2

    def writer(w: int) -> None:
        try:
            for x in range(per_writer):
                with database.session(write=True) as s:
                    append_all(s, signer, [Entry(event(x), None, f"W{w}", "R", "read")])
                time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reader(r: int) -> None:
        try:
            for x in range(per_writer):
                reads.append(signer, [Entry(event(x), None, f"R{r}", "R", "read")])
                time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        threads = ([threading.Thread(target=writer, args=(w,)) for w in range(writers)]
                   + [threading.Thread(target=reader, args=(r,)) for r in range(readers)])
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        deadline = time.monotonic() + 60
        while ((_unsealed(database) or _records(database) < (writers + readers) * per_writer)
               and time.monotonic() < deadline):
            time.sleep(0.1)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=60) for p in procs]
        reads.close()
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    total = (writers + readers) * per_writer
    assert reads.check({signer.key_id: signer.public_key}).waiting == 0  # all moved in
    assert _unsealed(database) == 0
    sealed_by = [int(out.split("sealed ")[1].split()[0]) for out, _err in outputs]
    assert sum(sealed_by) == total, outputs  # no record sealed twice, none left out
    with database.engine.connect() as conn:
        leaves = [i for (i,) in conn.execute(text(
            "SELECT leaf_index FROM audit_records ORDER BY leaf_index"))]
        sizes = [n for (n,) in conn.execute(text(
            "SELECT tree_size FROM audit_checkpoints ORDER BY signed_at, tree_size"))]
    assert leaves == list(range(total))
    assert sizes == sorted(sizes)
    assert sizes[-1] == total
    result = check(database, signer)
    assert (result.ok, result.sealed) == (True, total), result.reason


def test_serve_refuses_unknown_roles(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "hub.cli", "serve", "--roles", "api,mailer"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HUB_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert done.returncode == 1
    assert "not mailer" in done.stderr


def test_hub_serve_runs_the_sealer(database: Database, settings: Settings) -> None:
    """Inside the app (all roles, as `hub serve` runs by default) the sealer seals what
    requests recorded, within a few intervals."""
    from fastapi.testclient import TestClient

    from hub.app import create_app

    live = settings.model_copy(update={"sealer": True, "seal_interval": 0.05})
    with TestClient(create_app(live)) as client:
        assert client.get("/fhir/Patient").status_code == 401  # recorded as a failure
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (_unsealed(database) or not _checkpoints(database)):
            time.sleep(0.05)
    assert _unsealed(database) == 0
    assert _checkpoints(database) >= 1


def _checkpoints(database: Database) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_checkpoints")).scalar_one())

"""The audit records of reads (hub/audit/spool.py): committed before the answer without the
main database's write lock (on SQLite in a spool file), moved into the trail exactly once and
in order, sealed and verified like any record; a read whose record cannot be committed
fails without disclosing anything."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event as event_api
from sqlalchemy import select, text
from typer.testing import CliRunner

from hub.app import create_app
from hub.audit.cli import audit_app
from hub.audit.models import AuditRecordRow
from hub.audit.records import Entry, append_all
from hub.audit.seal import SealReport, seal_once
from hub.audit.signing import Signer
from hub.audit.spool import ReadAudit, spool_dir
from hub.config import Settings, get_settings
from hub.db.engine import Database
from tests.audit.test_trail import check
from tests.audit.trail import check_chain, mark, settle
from tests.factories import fnr, patient

ROOT = Path(__file__).resolve().parents[2]


def _read_records(database: Database) -> list[tuple[int, str, str]]:
    """(seq, recorded, AuditEvent id) of the trail's read records, by seq (nothing moved)."""
    with database.session(write=False) as s:
        rows = s.execute(select(AuditRecordRow.seq, AuditRecordRow.body)
                         .where(AuditRecordRow.subtype == "read")
                         .order_by(AuditRecordRow.seq)).all()
    return [(seq, (e := json.loads(bytes(body)))["recorded"], e["id"]) for seq, body in rows]


def test_reads_are_audited_apart_and_moved_into_the_trail_once_in_order(
        client: TestClient, database: Database, settings: Settings) -> None:
    pid = client.post("/fhir/Patient", json=patient(fnr(start=5))).json()["id"]
    before = len(_read_records(database))
    for _ in range(5):
        assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    reads = ReadAudit(database)
    try:
        waiting = reads.check({})  # no key given: the first record names its unknown key
        if database.dialect == "sqlite":  # in the spool, not yet in the trail
            assert waiting.waiting == 5
            assert "unknown key" in (waiting.problem or "")
            assert len(_read_records(database)) == before
            assert reads.move_all() == 5
        else:  # PostgreSQL: straight into audit_records, in a transaction of its own
            assert waiting.waiting == 0
        assert reads.move_all() == 0
        assert reads.check({}).waiting == 0
    finally:
        reads.close()
    moved = _read_records(database)[before:]
    assert len(moved) == 5
    assert len({m[2] for m in moved}) == 5
    assert [m[1] for m in moved] == sorted(m[1] for m in moved)  # seq order is read order
    result = check_chain(settings, database)
    assert result.ok, result.reason


BUSY = 10.0  # far above a read's time on a loaded machine; a write would wait all of it


def test_a_read_does_not_wait_for_the_main_write_lock(database: Database,
                                                      settings: Settings, bearer: str) -> None:
    if database.dialect != "sqlite":
        pytest.skip("SQLite's one write lock; PostgreSQL has none")
    quick = settings.model_copy(update={"sqlite_busy_timeout": BUSY})
    with TestClient(create_app(quick), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {bearer}"
        pid = c.post("/fhir/Patient", json=patient(fnr(start=7))).json()["id"]
        path = database.engine.url.database
        assert path is not None
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock throughout
        try:
            t0 = time.monotonic()
            answer = c.get(f"/fhir/Patient/{pid}")
            waited = time.monotonic() - t0
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert answer.status_code == 200, answer.text
        assert waited < BUSY  # a write transaction would have waited the busy timeout out
    settle(database)
    assert len(_read_records(database)) == 1  # and it was audited


def _refuse_read_records(client: TestClient, database: Database) -> None:
    """Make every insert of a read's audit record fail where the app appends them (a full
    disk, a broken spool file)."""
    if database.dialect == "sqlite":
        path = client.app.state.read_audit.path  # type: ignore[attr-defined]
        assert path is not None  # made by the first read
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit_spool "
                         "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    else:
        with database.engine.begin() as conn:
            conn.execute(text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$"))
            conn.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT ON audit_records FOR EACH ROW "
                "WHEN (NEW.subtype = 'read') EXECUTE FUNCTION refuse()"))


def test_a_read_whose_record_cannot_be_committed_discloses_nothing(
        client: TestClient, database: Database) -> None:
    pid = client.post("/fhir/Patient", json=patient(fnr(start=9), family="Utvikler")).json()["id"]
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    start = mark(database)
    _refuse_read_records(client, database)
    answer = client.get(f"/fhir/Patient/{pid}")
    assert answer.status_code == 503
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"
    assert "Utvikler" not in answer.text
    assert pid not in answer.text
    assert mark(database) == start  # nothing recorded as a successful read either
    assert client.post("/fhir/Patient", json=patient(fnr(start=11))).status_code == 201


_APPENDER = """
import sys
from hub.audit.records import Entry
from hub.audit.signing import Signer
from hub.audit.spool import ReadAudit
from hub.config import Settings
from hub.db.engine import Database
db = Database.connect(Settings(), sys.argv[1])
reads, signer = ReadAudit(db), Signer.from_file(sys.argv[2])
event = {"resourceType": "AuditEvent", "action": "R"}
n = 0
while True:
    reads.append(signer, [Entry(event, "Patient/p", "Client/c", "R", "read")])
    n += 1
    print(n, flush=True)
"""

_MOVER = """
import sys
from hub.audit.spool import ReadAudit
from hub.config import Settings
from hub.db.engine import Database
reads = ReadAudit(Database.connect(Settings(), sys.argv[1]))  # appends nothing: a mover
while True:
    reads.move(limit=7)
"""


def test_records_survive_sigkill_and_are_moved_exactly_once(db_url: str, database: Database,
                                                             tmp_path: Path) -> None:
    """An appending process and a moving process, both killed with SIGKILL mid-way: every
    record the appender was told is committed is in the trail once, none twice."""
    if not db_url.startswith("sqlite"):
        pytest.skip("the spool is SQLite's")
    key = tmp_path / "key.pem"
    signer = Signer.from_file(key)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    appender = subprocess.Popen([sys.executable, "-c", _APPENDER, db_url, str(key)], env=env,
                                stdout=subprocess.PIPE, text=True)
    movers = [subprocess.Popen([sys.executable, "-c", _MOVER, db_url], env=env)
              for _ in range(2)]
    acknowledged = [0]

    def count() -> None:
        assert appender.stdout is not None
        for line in appender.stdout:
            acknowledged[0] = int(line)

    reader = threading.Thread(target=count, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while acknowledged[0] < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in (appender, *movers):
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    reader.join(10)
    assert acknowledged[0] >= 150
    assert settle(database) >= 0
    records = _read_records(database)
    ids = [r[2] for r in records]
    assert len(ids) == len(set(ids))  # none twice
    # every acknowledged one is there; at most the one in flight when killed is there too
    assert acknowledged[0] <= len(ids) <= acknowledged[0] + 1
    assert [r[1] for r in records] == sorted(r[1] for r in records)
    reads = ReadAudit(database)
    try:
        assert reads.check({signer.key_id: signer.public_key}).waiting == 0
    finally:
        reads.close()
    spools = spool_dir(database)
    assert spools is not None
    assert [f for f in os.listdir(spools) if f.endswith(".db")] == []  # the dead one's, gone


def test_a_move_cut_off_before_its_delete_is_not_moved_again(database: Database,
                                                             tmp_path: Path) -> None:
    """The spool as a crash between the move's commit and its delete leaves it (restored
    from a copy taken before the move): the next move deletes those records, moving none."""
    if database.dialect != "sqlite":
        pytest.skip("the spool is SQLite's")
    signer = Signer.from_file(tmp_path / "key.pem")
    reads = ReadAudit(database)
    event = {"resourceType": "AuditEvent", "action": "R"}
    for _ in range(3):
        reads.append(signer, [Entry(event, "Patient/p", "Client/c", "R", "read")])
    assert reads.path is not None
    copy = tmp_path / "before-move.db"
    with sqlite3.connect(reads.path) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    assert reads.move_all() == 3
    reads.close()
    with sqlite3.connect(copy) as src, sqlite3.connect(reads.path) as dst:
        src.backup(dst)  # the delete never happened
    again = ReadAudit(database)
    try:
        assert again.check({}).waiting == 0  # the mark says they are in the trail
        again.append(signer, [Entry(event, "Patient/p", "Client/c", "R", "read")])
        assert again.move_all() == 1  # only the new one
        for name in os.listdir(spool_dir(database) or ""):
            if name.endswith(".db"):
                with sqlite3.connect(os.path.join(spool_dir(database) or "", name)) as conn:
                    assert conn.execute("SELECT count(*) FROM audit_spool").fetchone() == (0,)
    finally:
        again.close()
    assert len(_read_records(database)) == 4


def test_verify_counts_and_checks_records_waiting_in_the_spool(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if database.dialect != "sqlite":
        pytest.skip("the spool is SQLite's")
    key = tmp_path / "audit-key.pem"
    signer = Signer.from_file(key)
    monkeypatch.setenv("HUB_DATABASE_URL", str(database.engine.url))
    monkeypatch.setenv("HUB_AUDIT_KEY_FILE", str(key))
    get_settings.cache_clear()
    reads = ReadAudit(database)
    try:
        for _ in range(2):
            reads.append(signer, [Entry({"resourceType": "AuditEvent", "action": "R"},
                                        "Patient/p", "Client/c", "R", "read")])
        result = CliRunner().invoke(audit_app, ["verify"])
        assert result.exit_code == 0, result.output
        assert "2 records of reads in the spool" in result.stderr
        assert reads.path is not None
        with sqlite3.connect(reads.path) as conn:
            conn.execute("UPDATE audit_spool SET agent = 'Client/x' WHERE id = 2")
        result = CliRunner().invoke(audit_app, ["verify"])
        assert result.exit_code == 1
        assert result.stdout.strip() == ("broken in the read spool: spool record 2 was "
                                         "edited: its search columns differ from its body")
    finally:
        reads.close()
        get_settings.cache_clear()


def _leaves(database: Database) -> list[tuple[str, int | None]]:
    """(agent, leaf index) of every record, by seq."""
    with database.session(write=False) as s:
        return [(a, i) for a, i in s.execute(
            select(AuditRecordRow.agent, AuditRecordRow.leaf_index)
            .order_by(AuditRecordRow.seq))]


def test_a_sealer_pass_moves_the_reads_records_in_sealed_in_one_transaction(
        database: Database, tmp_path: Path) -> None:
    """The sealer's pass moves the spool's records and seals them as they go in: one write
    transaction on the main database, no UPDATE of a moved row, the records already in the
    trail first in the tree, then the moved ones in spool order; the trail verifies."""
    if database.dialect != "sqlite":
        pytest.skip("the spool is SQLite's")
    signer = Signer.from_file(tmp_path / "key.pem")
    owner, sealer = ReadAudit(database), ReadAudit(database)  # a hub process; the sealer's
    event = {"resourceType": "AuditEvent", "action": "R"}
    try:
        for r in range(5):
            owner.append(signer, [Entry(event, "Patient/p", f"Client/read-{r}", "R", "read")])
        with database.session(write=True) as s:
            append_all(s, signer, [Entry(event, "Patient/p", f"Client/write-{w}", "R", "read")
                                   for w in range(2)])
        statements: list[tuple[str, Any]] = []

        def seen(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, _many: bool
                 ) -> None:
            statements.append((sql, params))

        event_api.listen(database.engine, "before_cursor_execute", seen)
        try:
            report = seal_once(database, signer, reads=sealer)
        finally:
            event_api.remove(database.engine, "before_cursor_execute", seen)
        assert report == SealReport(7, 7, None, 5)
        writes = [sql for sql, _ in statements if sql == "BEGIN IMMEDIATE"]
        assert len(writes) == 1  # one write transaction on the main database (reads aside)
        updates = [params for sql, params in statements
                   if sql.startswith("UPDATE audit_records")]
        assert [len(p) for p in updates] == [2]  # the two written records only
        assert _leaves(database) == [("Client/write-0", 0), ("Client/write-1", 1),
                                     *((f"Client/read-{r}", 2 + r) for r in range(5))]
        assert sealer.check({signer.key_id: signer.public_key}).waiting == 0
        result = check(database, signer)
        assert (result.ok, result.sealed, result.tree_size) == (True, 7, 7), result.reason
        assert seal_once(database, signer, reads=sealer) == SealReport(0, 7)  # nothing again
    finally:
        owner.close()
        sealer.close()


@pytest.mark.parametrize("edit", [
    # SQL's replace() stores TEXT in the BLOB column, as a database user's edit would
    "replace(body, 'read-2', 'read-9')",
    # TEXT that is not UTF-8, which Python's driver cannot decode (read as BLOB instead)
    "CAST(X'FF' AS TEXT) || body",
], ids=["replace", "not utf-8"])
def test_a_spool_record_that_fails_its_checks_goes_in_unsealed_and_stops_the_seal(
        database: Database, tmp_path: Path, edit: str) -> None:
    """A record edited in the spool (its body no longer its hash): the pass moves all four,
    seals the two before it, and stops there, naming it; the next pass, and verify, name it
    in the trail. No record is lost and none goes in twice."""
    if database.dialect != "sqlite":
        pytest.skip("the spool is SQLite's")
    signer = Signer.from_file(tmp_path / "key.pem")
    owner, sealer = ReadAudit(database), ReadAudit(database)
    event = {"resourceType": "AuditEvent", "action": "R"}
    try:
        for r in range(4):
            owner.append(signer, [Entry(event, "Patient/p", f"Client/read-{r}", "R", "read")])
        assert owner.path is not None
        with sqlite3.connect(owner.path) as conn:
            third = conn.execute("SELECT id FROM audit_spool ORDER BY id LIMIT 1 OFFSET 2"
                                 ).fetchone()[0]
            conn.execute(f"UPDATE audit_spool SET body = {edit} WHERE id = ?", (third,))
        report = seal_once(database, signer, reads=sealer)
        assert report is not None
        assert (report.sealed, report.tree_size, report.moved) == (2, 2, 4)
        assert report.blocked == (f"spool record {third} was edited: its content does not "
                                  "match its hash")
        assert _leaves(database) == [("Client/read-0", 0), ("Client/read-1", 1),
                                     ("Client/read-2", None), ("Client/read-3", None)]
        assert sealer.check({signer.key_id: signer.public_key}).waiting == 0
        with database.session(write=False) as s:
            moved_seq = s.scalar(select(AuditRecordRow.seq)
                                 .where(AuditRecordRow.agent == "Client/read-2"))
        edited = f"record {moved_seq} was edited: its content does not match its hash"
        assert seal_once(database, signer, reads=sealer) == SealReport(0, 2, edited)
        result = check(database, signer)
        assert (result.ok, result.first_broken_seq) == (False, moved_seq)
        assert result.reason == f"{edited} (not sealed yet)"
    finally:
        owner.close()
        sealer.close()


def test_a_copy_put_into_the_spool_is_moved_in_unsealed_and_stops_the_seal(
        database: Database, tmp_path: Path) -> None:
    """A byte copy of a trail record put into a spool file passes the checks of its own (its
    signature covers its body only): the move takes it in without its event_id (unique)
    instead of failing on it, unsealed, and the sealer stops there, naming it, as verify
    does; the spool's own records before it are sealed (the control)."""
    if database.dialect != "sqlite":
        pytest.skip("the spool is SQLite's")
    signer = Signer.from_file(tmp_path / "key.pem")
    owner, sealer = ReadAudit(database), ReadAudit(database)
    event = {"resourceType": "AuditEvent", "action": "R"}
    try:
        with database.session(write=True) as s:
            append_all(s, signer, [Entry(event, "Patient/p", "Client/write", "R", "read")])
        assert seal_once(database, signer) == SealReport(1, 1)
        for r in range(2):
            owner.append(signer, [Entry(event, "Patient/p", f"Client/read-{r}", "R", "read")])
        assert owner.path is not None
        with database.engine.connect() as main:
            original = main.execute(text(
                "SELECT recorded_at, patient_ref, agent, action, subtype, body, leaf_hash, "
                "signature, key_id FROM audit_records WHERE seq = 1")).one()
        with sqlite3.connect(owner.path) as conn:
            conn.execute("INSERT INTO audit_spool (recorded_at, patient_ref, agent, action, "
                         "subtype, body, leaf_hash, signature, key_id) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", tuple(original))
            copied = conn.execute("SELECT max(id) FROM audit_spool").fetchone()[0]
        keys = {signer.key_id: signer.public_key}
        assert sealer.check(keys).problem == (
            f"spool record {copied} is a copy of record 1 (the same AuditEvent, "
            f"{_read_records(database)[0][2]}): inserted into the spool")
        report = seal_once(database, signer, reads=sealer)
        assert report is not None
        assert (report.sealed, report.tree_size, report.moved) == (2, 3, 3)
        assert report.blocked is not None
        assert report.blocked.startswith(f"spool record {copied} is a copy of record 1")
        with database.session(write=False) as s:
            moved = s.execute(select(AuditRecordRow.seq, AuditRecordRow.event_id)
                              .where(AuditRecordRow.leaf_index.is_(None))).one()
        assert moved.event_id is None
        result = check(database, signer)
        assert (result.ok, result.first_broken_seq) == (False, moved.seq)
        assert result.reason.startswith(f"record {moved.seq} is a copy of record 1")
    finally:
        owner.close()
        sealer.close()

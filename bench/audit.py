"""Benchmark of the audit trail: verify speed and append cost, on SQLite and PostgreSQL.

    python bench/audit.py [--records 100000] [--appends 2000] [--threads 4]
                          [--db sqlite,postgresql] [--pg-url URL]

On each database the trail is filled with `--records` BALP-like AuditEvents (1,000 appends per
transaction, timed as "fill"), then:

- verify: hub.audit.chain.verify over the whole trail (batches of 5,000 by keyset on seq, each
  in its own read transaction), records/s; next to it the read floor, the same batches fetched
  and nothing checked, so the rest is hashing, Ed25519 verification and the column checks;
- append: `--appends` appends single-threaded, one per transaction (the shape of one audited
  request), appends/s with p50/p95 latency; next to it the floor, the same body INSERTed into a
  bare table one per transaction on the same engine;
- append, N threads: `--threads` threads appending one per transaction at once, total appends/s
  (the head lock serialises them: this is the ceiling of audited requests per second).

PostgreSQL runs at --pg-url or $HUB_TEST_POSTGRES_URL in a database of its own
(carehub_bench_audit_<random>), dropped afterwards; without either it is skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cryptography
from benchdb import database_version, machine_info, postgres_url, print_machine, sqlite_url
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select, text

from hub.audit.chain import BATCH_SIZE, append, verify
from hub.audit.models import AuditRecordRow
from hub.audit.signing import Signer
from hub.config import Settings
from hub.db.engine import Database
from hub.db.migrate import upgrade
from hub.db.types import utcnow

PG_ENV = "HUB_TEST_POSTGRES_URL"
FILL_BATCH = 1000
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
COLUMNS = [AuditRecordRow.__table__.c[name] for name in (
    "seq", "recorded_at", "patient_ref", "agent", "action", "subtype", "body", "prev_hash",
    "hash", "signature", "key_id")]  # what verify reads


def audit_event(i: int) -> tuple[dict[str, Any], str, str]:
    """A BALP-like AuditEvent of a client reading one patient's Task; (event, patient, agent)."""
    patient = f"Patient/{i % 5000:05d}-{uuid.UUID(int=i).hex[:8]}"
    agent = f"Client/time-kommune-{i % 7}"
    event = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                 "code": "rest", "display": "Restful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
        "outcome": "0",
        "agent": [
            {"type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                  "code": "110153", "display": "Source Role ID"}]},
             "who": {"reference": agent}, "requestor": True,
             "network": {"address": f"10.20.{i % 250}.{i % 200}", "type": "2"}},
            {"who": {"identifier": {"system": HPR, "value": f"{9_000_000 + i % 90_000}"}},
             "requestor": False},
        ],
        "source": {"observer": {"display": "CareHub"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4"}]},
        "entity": [
            {"what": {"reference": patient},
             "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                      "code": "1"}},
            {"what": {"reference": f"Task/{uuid.UUID(int=i + 1).hex}/_history/1"},
             "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                      "code": "2"}},
        ],
    }
    return event, patient, agent


@dataclass(frozen=True)
class Result:
    """One measured line of the report."""

    db: str
    what: str
    n: int
    seconds: float
    latencies: Sequence[float] = ()

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0

    def quantile_ms(self, q: float) -> str:
        if not self.latencies:
            return ""
        ordered = sorted(self.latencies)
        return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.2f}"


class Bench:
    """The audit trail on one database."""

    def __init__(self, label: str, db: Database, signer: Signer) -> None:
        self.label, self.db, self.signer = label, db, signer
        self.count = 0

    def _append(self, session: Any, i: int) -> None:
        event, patient, agent = audit_event(i)
        append(session, self.signer, event, patient_ref=patient, agent=agent, action="R",
               subtype="read")

    def fill(self, n: int, progress: Progress) -> Result:
        task = progress.add_task(f"{self.label}: fill {n:,}", total=n)
        started = time.perf_counter()
        while self.count < n:
            k = min(FILL_BATCH, n - self.count)
            with self.db.session(write=True) as session:
                for i in range(self.count, self.count + k):
                    self._append(session, i)
            self.count += k
            progress.advance(task, k)
        seconds = time.perf_counter() - started
        progress.remove_task(task)
        self.analyze()
        return Result(self.label, f"fill ({FILL_BATCH:,} appends per transaction)", n, seconds)

    def analyze(self) -> None:
        if self.db.dialect == "postgresql":
            with self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("VACUUM ANALYZE"))
        else:
            with self.db.engine.begin() as conn:
                conn.execute(text("ANALYZE"))

    def verify(self, progress: Progress) -> Result:
        task = progress.add_task(f"{self.label}: verify", total=self.count)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        keys = {self.signer.key_id: self.signer.public_key}
        started = time.perf_counter()
        result = verify(lambda: self.db.session(write=False), keys, progress=advance)
        seconds = time.perf_counter() - started
        progress.remove_task(task)
        if not result.ok or result.count != self.count:
            raise SystemExit(f"{self.label}: verify failed: {result}")
        return Result(self.label, "verify", result.count, seconds)

    def read_floor(self) -> Result:
        """The same keyset batches verify reads, fetched and dropped."""
        started, last, n = time.perf_counter(), 0, 0
        while True:
            with self.db.session(write=False) as session:
                rows = session.execute(select(*COLUMNS).where(AuditRecordRow.seq > last)
                                       .order_by(AuditRecordRow.seq).limit(BATCH_SIZE)).all()
            if not rows:
                break
            last, n = rows[-1].seq, n + len(rows)
        return Result(self.label, "  floor: fetch the same batches only", n,
                      time.perf_counter() - started)

    def appends(self, n: int) -> Result:
        latencies: list[float] = []
        for i in range(self.count, self.count + n):
            t0 = time.perf_counter()
            with self.db.session(write=True) as session:
                self._append(session, i)
            latencies.append(time.perf_counter() - t0)
        self.count += n
        return Result(self.label, "append, one per transaction", n, sum(latencies), latencies)

    def insert_floor(self, n: int) -> Result:
        """A bare INSERT of a body of the same size, one per transaction, same engine."""
        with self.db.engine.begin() as conn:
            conn.execute(text("CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, body "
                              + ("BYTEA" if self.db.dialect == "postgresql" else "BLOB") + ")"))
        body = os.urandom(1200)
        latencies: list[float] = []
        for i in range(n):
            t0 = time.perf_counter()
            with self.db.session(write=True) as session:
                session.execute(text("INSERT INTO bench_floor (id, body) VALUES (:i, :b)"),
                                {"i": i, "b": body})
            latencies.append(time.perf_counter() - t0)
        return Result(self.label, "  floor: bare INSERT, one per transaction", n,
                      sum(latencies), latencies)

    def threaded_appends(self, threads: int, per_thread: int) -> Result:
        start = threading.Barrier(threads + 1)
        base, errors = self.count, []

        def writer(t: int) -> None:
            try:
                start.wait()
                for k in range(per_thread):
                    with self.db.session(write=True) as session:
                        self._append(session, base + t * per_thread + k)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        start.wait()
        started = time.perf_counter()
        for w in workers:
            w.join()
        seconds = time.perf_counter() - started
        if errors:
            raise SystemExit(f"{self.label}: threaded appends failed: {errors[0]!r}")
        self.count += threads * per_thread
        return Result(self.label, f"append, {threads} threads at once", threads * per_thread,
                      seconds)


# --- databases ---------------------------------------------------------------------------------


# --- report ------------------------------------------------------------------------------------


def report(console: Console, results: list[Result], versions: dict[str, str],
           info: dict[str, str], wall: float) -> None:
    """Print machine info and the results table."""
    print_machine(console, info, versions)
    table = Table(title="Audit trail")
    for name in ("db", "what", "n", "seconds", "per second", "p50 ms", "p95 ms"):
        table.add_column(name, justify="left" if name in ("db", "what") else "right")
    last: str | None = None
    for r in results:
        if last is not None and last != r.db:
            table.add_section()
        last = r.db
        table.add_row(r.db, r.what, f"{r.n:,}", f"{r.seconds:.2f}", f"{r.rate:,.0f}",
                      r.quantile_ms(0.5), r.quantile_ms(0.95))
    console.print(table)
    console.print(f"Total wall time: {wall:.1f} s")


# --- consent decisions -------------------------------------------------------------------------

def _consent(i: int, patient: str, recipient: str) -> dict[str, Any]:
    irc = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                       "code": "IRCP"}]}
    return {"resourceType": "Consent", "id": f"c{i}", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient}"},
            "dateTime": f"2026-01-{1 + i % 28:02d}T00:00:00Z",
            "provision": {"type": "permit", "period": {"start": "2026-01-01T00:00:00Z"},
                          "actor": [{"role": irc, "reference": {"reference": recipient}}],
                          "provision": [{"type": "deny", "class": [
                              {"system": "http://hl7.org/fhir/resource-types",
                               "code": "DocumentReference"}]}]}}


def consent_decisions(kind: str, db: Database, n: int) -> list[Result]:
    """Time of the routing decision for one message with two destinations: the pure policy
    alone, and with the patient's consents read from the store (what intake does)."""
    from hub.auth.subject import Subject
    from hub.consent.policy import DisclosureRequest, decide
    from hub.messaging.routing import decide_delivery
    from hub.store import service

    settings = Settings()
    types = frozenset({"MessageHeader", "Patient", "Encounter", "CarePlan", "Flag"})
    results = []
    for k in (1, 10, 50):
        consents = [_consent(i, "p1", "Organization/time-kommune") for i in range(k)]
        t0 = time.perf_counter()
        for _ in range(n):
            for org in ("time-kommune", "klepp-kommune"):
                decide(consents, DisclosureRequest(recipient=f"Organization/{org}",
                                                   resource_types=types,
                                                   event="discharge-notice", now=utcnow()))
        results.append(Result(kind, f"consent decision, pure, {k} consents/patient, 2 dest.",
                              n, time.perf_counter() - t0, []))
    with db.session(write=True) as s:
        for i in range(10):
            body = _consent(i, "bench-patient", "Organization/time-kommune")
            body.pop("id")
            service.create(s, Subject.hub_itself(), resource=body)
    samples = []
    t0 = time.perf_counter()
    for _ in range(n):
        t1 = time.perf_counter()
        with db.session(write=False) as s:
            for org in ("time-kommune", "klepp-kommune"):
                decide_delivery(s, settings, event="discharge-notice",
                                patient_id="bench-patient", content_types=types,
                                receiver_org=org)
        samples.append(time.perf_counter() - t1)
    results.append(Result(kind, "consent decision, consents read from the store (10), 2 dest.",
                          n, time.perf_counter() - t0, samples))
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="trail size for verify")
    parser.add_argument("--appends", type=int, default=2000, help="timed single appends")
    parser.add_argument("--threads", type=int, default=4, help="threads appending at once")
    parser.add_argument("--decisions", type=int, default=1000, help="timed consent decisions")
    parser.add_argument("--db", default="sqlite,postgresql",
                        type=lambda v: [p.strip() for p in v.split(",") if p.strip()])
    parser.add_argument("--pg-url", default=os.environ.get(PG_ENV),
                        help=f"PostgreSQL server URL (default ${PG_ENV})")
    return parser.parse_args(argv)


def run_one(kind: str, url: str, args: argparse.Namespace, key: Path,
            console: Console) -> tuple[list[Result], str]:
    db = Database.connect(Settings(), url)
    try:
        upgrade(db.engine)
        bench = Bench(kind, db, Signer.from_file(key))
        results: list[Result] = []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            results.append(bench.fill(args.records, progress))
            results.append(bench.verify(progress))
        results.append(bench.read_floor())
        results.append(bench.appends(args.appends))
        results.append(bench.insert_floor(args.appends))
        per_thread = max(1, args.appends // args.threads)
        results.append(bench.threaded_appends(args.threads, per_thread))
        results.extend(consent_decisions(kind, db, args.decisions))
        return results, database_version(db.engine)
    finally:
        db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    started = time.perf_counter()
    info = machine_info(cryptography=cryptography.__version__)
    results: list[Result] = []
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="carehub-bench-key-") as keydir:
        key = Path(keydir) / "audit-key.pem"
        for kind in args.db:
            if kind == "postgresql" and not args.pg_url:
                console.print(f"[yellow]PostgreSQL skipped: give --pg-url or set {PG_ENV}."
                              "[/yellow]")
                continue
            target = (sqlite_url("carehub-bench-audit-") if kind == "sqlite"
                      else postgres_url(args.pg_url, "carehub_bench_audit_"))
            with target as url:
                rows, versions[kind] = run_one(kind, url, args, key, console)
                results.extend(rows)
                console.print(f"{kind}: done ({rows[1].rate:,.0f} records/s verified)")
    report(console, results, versions, info, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

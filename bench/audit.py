"""Benchmark of the audit trail: append, seal, verify and proofs, on SQLite and PostgreSQL.

    python bench/audit.py [--records 1000000] [--appends 2000] [--threads 8] [--proofs 1000]
                          [--jobs 2] [--db sqlite,postgresql] [--pg-url URL]
    python bench/audit.py --verify-only [--records 1000000] [--runs 3] [--jobs 2] ...

On each database the trail is filled with `--records` BALP-like AuditEvents (appended as
hub processes do, `records.append_all`, 1,000 per transaction, timed as "fill"), then:

- seal: `seal_all` puts them into the Merkle tree (batches of SEAL_BATCH, each checked
  against its writer's signature and signed as a checkpoint), records/s;
- verify: hub.audit.verify.verify over the whole trail (chunks of complete subtrees, each in
  its own read transaction, in --jobs processes: hash, columns, tree, stored nodes,
  checkpoint signatures), records/s and records per CPU second (worker processes included);
  next to it two floors: the same chunks fetched at the driver and nothing checked, and the
  leaf hashes of the bodies alone;
- proofs: `--proofs` inclusion proofs of random records against the latest checkpoint (the
  stored nodes read in one query, the proof checked against the signed root), p50/p95 ms;
  and consistency proofs between random older checkpoints and the latest;
- append: `--appends` appends single-threaded, one per transaction (the shape of one audited
  request), appends/s with p50/p95 latency; next to it the floor, the same body INSERTed into a
  bare table one per transaction on the same engine;
- append, N threads: `--threads` threads appending one per transaction at once, total
  appends/s and its ratio to the single-threaded rate (no lock is shared by appenders, so on
  PostgreSQL it grows with threads until the CPU is spent; SQLite has one writer).

--verify-only builds the sealed trail in bulk instead (what fill and seal would leave, written
directly; verify then checks all of it, so a wrong build fails) and times only the floors and
verify, in one process and in --jobs, --runs times, each verify also as a ratio to its run's
fetch floor (wall and per CPU second).

PostgreSQL runs at --pg-url or $HUB_TEST_POSTGRES_URL in a database of its own
(carehub_bench_audit_<random>), dropped afterwards; without either it is skipped with a note.
The load average is printed at start and end: on a shared machine, compare ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cryptography
from benchdb import database_version, machine_info, postgres_url, print_machine, sqlite_url
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select, text

from hub.audit import verify as verify_module
from hub.audit.checkpoint import Checkpoint
from hub.audit.merkle import Frontier, consistent, root_from_inclusion
from hub.audit.models import AuditRecordRow
from hub.audit.records import INDEX_EXTENSION, Entry, append_all, canonical_json
from hub.audit.seal import SEAL_BATCH, seal_all
from hub.audit.signing import Signer
from hub.audit.tree import checkpoints, consistency_proof, inclusion_proof
from hub.audit.verify import verify
from hub.config import Settings
from hub.db.engine import Database
from hub.db.migrate import upgrade
from hub.db.types import utcnow

PG_ENV = "HUB_TEST_POSTGRES_URL"
FILL_BATCH = 1000
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
COLUMNS = [AuditRecordRow.__table__.c[name] for name in (
    "seq", "leaf_index", "body", "leaf_hash", "recorded_at", "action", "patient_ref", "agent",
    "subtype")]  # what verify reads


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


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (verify's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass(frozen=True)
class Result:
    """One measured line of the report."""

    db: str
    what: str
    n: int
    seconds: float
    latencies: Sequence[float] = ()
    load: float | None = None  # the 1-minute load average when it started
    cpu: float | None = None  # CPU seconds spent, this process and its children

    @property
    def cpu_rate(self) -> str:
        return f"{self.n / self.cpu:,.0f}" if self.cpu else ""

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

    @staticmethod
    def _entry(i: int) -> Entry:
        event, patient, agent = audit_event(i)
        return Entry(event, patient, agent, "R", "read")

    def _append(self, session: Any, i: int) -> None:
        append_all(session, self.signer, [self._entry(i)])

    def fill(self, n: int, progress: Progress) -> Result:
        task = progress.add_task(f"{self.label}: fill {n:,}", total=n)
        started = time.perf_counter()
        while self.count < n:
            k = min(FILL_BATCH, n - self.count)
            with self.db.session(write=True) as session:
                append_all(session, self.signer,
                           [self._entry(i) for i in range(self.count, self.count + k)])
            self.count += k
            progress.advance(task, k)
        seconds = time.perf_counter() - started
        progress.remove_task(task)
        return Result(self.label, f"fill ({FILL_BATCH:,} appends per transaction)", n, seconds)

    def seal(self) -> Result:
        started = time.perf_counter()
        report = seal_all(self.db, self.signer)
        seconds = time.perf_counter() - started
        if report.sealed != self.count or report.blocked:
            raise SystemExit(f"{self.label}: seal failed: {report}")
        self.analyze()
        return Result(self.label, "seal (check signature, tree nodes, checkpoint)",
                      report.sealed, seconds)

    def proofs(self, n: int) -> list[Result]:
        rng = random.Random(16)
        with self.db.session(write=False) as session:
            top = int(session.scalar(select(func.max(AuditRecordRow.seq))) or 0)
            cps = checkpoints(session)
        latencies: list[float] = []
        for _ in range(n):
            seq = rng.randint(1, top)
            t0 = time.perf_counter()
            with self.db.session(write=False) as session:
                proof = inclusion_proof(session, seq)
            latencies.append(time.perf_counter() - t0)
            cp = proof.checkpoint
            if root_from_inclusion(proof.leaf_index, cp.tree_size, proof.leaf_hash,
                                   proof.path) != bytes.fromhex(cp.root_hash):
                raise SystemExit(f"{self.label}: proof of {seq} does not hold")
        out = [Result(self.label, f"inclusion proof at {cps[-1].tree_size:,} records "
                      f"(path {len(proof.path)})", n, sum(latencies), latencies)]
        latencies = []
        for _ in range(max(1, n // 10)):
            old = cps[rng.randrange(len(cps))]
            t0 = time.perf_counter()
            with self.db.session(write=False) as session:
                path = consistency_proof(session, old, cps[-1])
            latencies.append(time.perf_counter() - t0)
            if not consistent(old.tree_size, cps[-1].tree_size, bytes.fromhex(old.root_hash),
                              bytes.fromhex(cps[-1].root_hash), path):
                raise SystemExit(f"{self.label}: consistency from {old.tree_size} fails")
        out.append(Result(self.label, "consistency proof, a random older checkpoint to the "
                          "latest", len(latencies), sum(latencies), latencies))
        return out

    def analyze(self) -> None:
        if self.db.dialect == "postgresql":
            with self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("VACUUM ANALYZE"))
        else:
            with self.db.engine.begin() as conn:
                conn.execute(text("ANALYZE"))

    def build(self, n: int, progress: Progress) -> Result:
        """The trail `fill` and `seal` make, written in bulk (not a hub path: for the verify
        runs at 1M records without an hour of filling): bodies as append_all makes them,
        signed, leaf indexes in id order, the complete nodes and a signed checkpoint every
        SEAL_BATCH records. verify checks all of it, so a wrong build fails the bench."""
        task = progress.add_task(f"{self.label}: build {n:,}", total=n)
        started = time.perf_counter()
        frontier = Frontier()
        raw = self.db.engine.raw_connection()
        try:
            cursor = raw.cursor()
            mark = "?" if self.db.dialect == "sqlite" else "%s"
            insert_record = ("INSERT INTO audit_records (seq, recorded_at, patient_ref, agent, "
                             "action, subtype, body, leaf_hash, signature, key_id, leaf_index, "
                             f"event_id) VALUES ({', '.join([mark] * 12)})")
            insert_node = f"INSERT INTO audit_tree_nodes (level, idx, hash) VALUES ({mark}, " \
                          f"{mark}, {mark})"
            insert_cp = ("INSERT INTO audit_checkpoints (tree_size, root_hash, signed_at, "
                         f"key_id, signature) VALUES ({mark}, {mark}, {mark}, {mark}, {mark})")
            while self.count < n:
                at = utcnow()
                stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                column_at: Any = (at.strftime("%Y-%m-%d %H:%M:%S.%f")
                                  if self.db.dialect == "sqlite" else at)
                rows, nodes = [], []
                if self.db.dialect == "sqlite":
                    cursor.execute("BEGIN")  # the hub's driver connection autocommits
                for i in range(self.count, min(n, self.count + SEAL_BATCH)):
                    event, patient, agent = audit_event(i)
                    record = {**event, "id": str(uuid.UUID(int=i + 7)), "recorded": stamp,
                              "action": "R", "extension": [{"url": INDEX_EXTENSION, "extension": [
                                  {"url": "patient", "valueString": patient},
                                  {"url": "agent", "valueString": agent},
                                  {"url": "subtype", "valueCode": "read"}]}]}
                    body = canonical_json(record)
                    digest = hashlib.sha256(b"\x00" + body).digest()
                    rows.append((i + 1, column_at, patient, agent, "R", "read", body,
                                 digest.hex(), self.signer.sign(digest), self.signer.key_id, i,
                                 record["id"]))
                    nodes.extend(frontier.push(digest))
                cursor.executemany(insert_record, rows)
                cursor.executemany(insert_node, nodes)
                cp = Checkpoint.sign(self.signer, frontier.size, frontier.root(), at)
                cursor.execute(insert_cp, (cp.tree_size, cp.root_hash, column_at, cp.key_id,
                                           cp.signature))
                raw.commit()
                self.count += len(rows)
                progress.advance(task, len(rows))
            if self.db.dialect == "postgresql":
                cursor.execute("SELECT setval('audit_records_seq_seq', %s)", (self.count,))
                raw.commit()
        finally:
            raw.close()
        progress.remove_task(task)
        self.analyze()
        return Result(self.label, "build the sealed trail in bulk (bench only)", n,
                      time.perf_counter() - started)

    def verify(self, progress: Progress, jobs: int = 1) -> Result:
        task = progress.add_task(f"{self.label}: verify", total=self.count)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        keys = {self.signer.key_id: self.signer.public_key}
        load, cpu = os.getloadavg()[0], cpu_seconds()
        started = time.perf_counter()
        result = verify(lambda: self.db.session(write=False), keys, progress=advance,
                        jobs=jobs, url=self.db.engine.url.render_as_string(hide_password=False))
        seconds = time.perf_counter() - started
        progress.remove_task(task)
        if not result.ok or result.sealed != self.count:
            raise SystemExit(f"{self.label}: verify failed: {result}")
        return Result(self.label, f"verify, {jobs} process{'es' if jobs > 1 else ''}",
                      result.count, seconds, load=load, cpu=cpu_seconds() - cpu)

    def read_floor(self) -> Result:
        """The chunks verify reads, the same SELECT at the driver, fetched and dropped."""
        load, cpu = os.getloadavg()[0], cpu_seconds()
        started, n, chunk = time.perf_counter(), 0, 1 << verify_module.CHUNK_LEVEL
        for start in range(0, self.count, chunk):
            with self.db.session(write=False) as session:
                cursor = session.connection().connection.cursor()
                cursor.execute("SELECT seq, leaf_index, body, leaf_hash, recorded_at, action, "
                               f"patient_ref, agent, subtype FROM audit_records WHERE "
                               f"leaf_index >= {start} AND leaf_index < {start + chunk} "
                               "ORDER BY leaf_index")
                n += len(cursor.fetchall())
                cursor.close()
        return Result(self.label, "  floor: fetch the same chunks only, 1 process", n,
                      time.perf_counter() - started, load=load, cpu=cpu_seconds() - cpu)

    def hash_floor(self) -> Result:
        """SHA-256(0x00 || body) of every body, nothing else (bodies read beforehand, a
        chunk at a time, untimed)."""
        load, seconds, cpu, n = os.getloadavg()[0], 0.0, 0.0, 0
        chunk = 1 << verify_module.CHUNK_LEVEL
        sha = hashlib.sha256
        for start in range(0, self.count, chunk):
            with self.db.session(write=False) as session:
                cursor = session.connection().connection.cursor()
                cursor.execute(f"SELECT body FROM audit_records WHERE leaf_index >= {start} "
                               f"AND leaf_index < {start + chunk}")
                bodies = [bytes(b) for (b,) in cursor.fetchall()]
                cursor.close()
            t0, c0 = time.perf_counter(), cpu_seconds()
            for body in bodies:
                sha(b"\x00" + body).digest()
            seconds += time.perf_counter() - t0
            cpu += cpu_seconds() - c0
            n += len(bodies)
        return Result(self.label, "  floor: the leaf hashes only, 1 process", n, seconds,
                      load=load, cpu=cpu)

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

    def threaded_appends(self, threads: int, per_thread: int, single: Result | None = None
                         ) -> Result:
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
        ratio = (f" ({threads * per_thread / seconds / single.rate:.2f} x one thread)"
                 if single is not None and single.rate else "")
        return Result(self.label, f"append, {threads} threads at once{ratio}",
                      threads * per_thread, seconds)


# --- databases ---------------------------------------------------------------------------------


# --- report ------------------------------------------------------------------------------------


def report(console: Console, results: list[Result], versions: dict[str, str],
           info: dict[str, str], wall: float) -> None:
    """Print machine info and the results table."""
    print_machine(console, info, versions)
    table = Table(title="Audit trail")
    for name in ("db", "what", "n", "seconds", "per second", "per CPU s", "p50 ms", "p95 ms",
                 "load"):
        table.add_column(name, justify="left" if name in ("db", "what") else "right")
    last: str | None = None
    for r in results:
        if last is not None and last != r.db:
            table.add_section()
        last = r.db
        table.add_row(r.db, r.what, f"{r.n:,}", f"{r.seconds:.2f}", f"{r.rate:,.0f}", r.cpu_rate,
                      r.quantile_ms(0.5), r.quantile_ms(0.95),
                      "" if r.load is None else f"{r.load:.2f}")
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
    from hub.consent.gate import MessageQuestion
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
            body["organization"] = [{"reference": "Organization/jaeren-dps"}]  # the custodian
            service.create(s, Subject.working_for("jaeren-dps", "bench"), resource=body)
    samples = []
    t0 = time.perf_counter()
    for _ in range(n):
        t1 = time.perf_counter()
        with db.session(write=False) as s:
            for org in ("time-kommune", "klepp-kommune"):
                decide_delivery(s, settings, MessageQuestion(
                    event="discharge-notice", sender_org="jaeren-dps",
                    patient_id="bench-patient", content_types=types, receiver_org=org))
        samples.append(time.perf_counter() - t1)
    results.append(Result(kind, "consent decision, consents read from the store (10), 2 dest.",
                          n, time.perf_counter() - t0, samples))
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="trail size")
    parser.add_argument("--proofs", type=int, default=1000, help="timed inclusion proofs")
    parser.add_argument("--appends", type=int, default=2000, help="timed single appends")
    parser.add_argument("--threads", type=int, default=8, help="threads appending at once")
    parser.add_argument("--decisions", type=int, default=1000, help="timed consent decisions")
    parser.add_argument("--verify-only", action="store_true",
                        help="build the sealed trail in bulk and time only verify (--runs "
                             "times, against its floors), not fill, seal, proofs or appends")
    parser.add_argument("--runs", type=int, default=3, help="verify runs with --verify-only")
    parser.add_argument("--jobs", type=int, default=2, help="verify's worker processes")
    parser.add_argument("--db", default="sqlite,postgresql",
                        type=lambda v: [p.strip() for p in v.split(",") if p.strip()])
    parser.add_argument("--pg-url", default=os.environ.get(PG_ENV),
                        help=f"PostgreSQL server URL (default ${PG_ENV})")
    return parser.parse_args(argv)


def verify_runs(bench: Bench, args: argparse.Namespace, console: Console) -> list[Result]:
    """Build the trail in bulk, then `--runs` times: the two floors and verify in one process
    and in `--jobs`; each verify's rate also as a ratio to the fetch floor of its run."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        results = [bench.build(args.records, progress)]
        for run in range(1, args.runs + 1):
            fetch, hashing = bench.read_floor(), bench.hash_floor()
            results += [replace(fetch, what=f"run {run}{fetch.what}"),
                        replace(hashing, what=f"run {run}{hashing.what}")]
            for jobs in sorted({1, args.jobs}):
                done = bench.verify(progress, jobs=jobs)
                per_cpu = (f", {done.n / done.cpu / (fetch.n / fetch.cpu):.2f} per CPU s"
                            if done.cpu and fetch.cpu else "")
                results.append(replace(done, what=f"run {run}: {done.what} "
                                       f"({done.rate / fetch.rate:.2f} x fetch floor{per_cpu})"))
                console.print(f"{bench.label} run {run}: {results[-1].what}: "
                              f"{done.rate:,.0f} records/s, {done.cpu_rate} per CPU s, "
                              f"load {done.load:.2f}")
    return results


def run_one(kind: str, url: str, args: argparse.Namespace, key: Path,
            console: Console) -> tuple[list[Result], str]:
    db = Database.connect(Settings(), url)
    try:
        upgrade(db.engine)
        bench = Bench(kind, db, Signer.from_file(key))
        results: list[Result] = []
        if args.verify_only:
            return verify_runs(bench, args, console), database_version(db.engine)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            results.append(bench.fill(args.records, progress))
            results.append(bench.seal())
            results.append(bench.verify(progress, jobs=args.jobs))
        results.append(bench.read_floor())
        results.append(bench.hash_floor())
        results.extend(bench.proofs(args.proofs))
        single = bench.appends(args.appends)
        results.append(single)
        results.append(bench.insert_floor(args.appends))
        per_thread = max(1, args.appends // args.threads)
        results.append(bench.threaded_appends(args.threads, per_thread, single))
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
                console.print(f"{kind}: done", f"load {os.getloadavg()[0]:.2f}")
    report(console, results, versions, info, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

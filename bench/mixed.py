"""Mixed benchmark (issue #16): do reads queue behind writes?

    python bench/mixed.py [--seconds 8] [--readers 8] [--writers 8] [--workers 2]
                          [--layout pools|apart|workers] [--sealer apart|inside]
                          [--write-nice 10] [--runs 3]
                          [--db sqlite,postgresql] [--pg-url URL] [--hub-root DIR]

A real hub on a fresh database with a few hundred patients, laid out as deploy/ runs it
(`--layout pools`, the default): two pools of `--workers` `hub serve` processes each, on
ports of their own, the readers spread over the read pool and the writers over the write
pool, which runs at nice `--write-nice` (10, as deploy/systemd/carehub-api-writes@.service
and deploy/up.sh; nginx routes FHIR writes there, deploy/nginx/carehub.conf). `--layout
apart` is one pool that serves both, each client on one of its processes in turn, as
bench/ingest.py starts it; dispatcher off. The sealer (which also moves the reads' audit
records from their spools into the trail) is a process of its own, as in deploy/ (`--sealer
inside`: every hub process seals, and the sealing competes with the process's requests for
its interpreter lock, which kept the database's write lock held longer, README). Reader
clients GET Patient/{id} (every fifth request a search, Patient?identifier=...), writer
clients post admission notices to $process-message; each client has its own token and
keep-alive connection. Phases of --seconds each (after a 1 s warm-up): reads alone, writes
alone, both together, reads alone again. The floor of the reads is the mean of two
reads-alone phases of the same run, one before and one after the others (the machine's load
drifts); the target is that reads lose at most 25 % alongside the writes.

For each lock that all transactions share it prints the share of the phase's wall time it
was held: on SQLite the database's write lock and the read spool's (timed in the hub
processes around each holding of the writers' file lock, which encloses BEGIN IMMEDIATE ..
COMMIT; HUB_LOCK_STATS_DIR, hub/db/lockstats.py). PostgreSQL has no such lock; pg_locks is
sampled every 20 ms for the sealer's advisory lock and for any backend waiting on a lock.
Also the load average (1 min) at the end of each phase, and the hub's CPU per request.
`--hub-root` serves another checkout's hub (e.g. a copy of main) for a before/after.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import (  # noqa: E402
    machine_info,
    postgres_url,
    print_machine,
    sqlite_url,
    stamp_as,
)
from ingest import (  # noqa: E402
    LAYOUT_HELP,
    LAYOUTS,
    SEALER_HELP,
    SEALERS,
    _messages,
    _prepare,
    _procs_cpu,
    _tokens,
    serving,
)

from hub.audit.seal import SEAL_LOCK  # noqa: E402

console = Console(width=200)
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
SEARCH_EVERY = 5


class Phase:
    """What the clients of one kind did in one phase."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def add(self, seconds: float, status: int, body: bytes) -> None:
        with self.lock:
            self.latencies.append(seconds)
            if status not in (200, 201):
                self.errors.append(f"{status} {body[:200]!r}")


def _request(conn: http.client.HTTPConnection, method: str, path: str, token: str,
             body: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/fhir+json"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def _lock_totals(stats_dir: str) -> dict[str, float]:
    """Seconds each lock was held so far, by database file, summed over the hub's
    processes (the database's lock is one across processes; each spool file has its own)."""
    totals: Counter[str] = Counter()
    for name in os.listdir(stats_dir):
        if not name.endswith(".json"):
            continue
        try:
            data = json.loads(Path(stats_dir, name).read_text())
        except (OSError, ValueError):
            continue
        for lock, (held, _times) in data["locks"].items():
            totals[lock] += held
    return dict(totals)


def _lock_shares(before: dict[str, float], after: dict[str, float],
                 wall: float) -> dict[str, float]:
    """Share of `wall` each lock was held: the database's write lock, and of the spools'
    (one per hub process) the one held longest."""
    shares = {k: (v - before.get(k, 0.0)) / wall for k, v in after.items()}
    if not shares:  # PostgreSQL, or a hub without the counters (a baseline)
        return {}
    spools = [v for k, v in shares.items() if "-audit-spool" in k]
    out = {DB_LOCK: sum(v for k, v in shares.items() if "-audit-spool" not in k)}
    if spools:
        out[SPOOL_LOCK] = max(spools)
    return out


DB_LOCK = "SQLite database write lock"
SPOOL_LOCK = "SQLite read spool write lock (busiest of the per-process spools)"
_WAITING = "PG: some backend waiting for any lock"
_SEALER = "PG: the sealer's advisory lock held"
_NAMES = "PG: some per-name advisory lock held"
_TAKEN_BY = {
    DB_LOCK: "every write (creates, messages, moves, seals); no read",
    SPOOL_LOCK: "reads of one hub process (their audit records), its mover",
    _WAITING: "sampled (a wait would show here)",
    _SEALER: "sampled: sealers only",
    _NAMES: "sampled: writers of the same identity only",
}


class PgLockSampler:
    """Samples pg_locks every 20 ms: how often the sealer's advisory lock is held, how often
    some per-name advisory lock (message intake's identity locks, hub/db/locks.py) is held,
    and how often some backend waits for a lock (any, and by lock type)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT")
        self.samples = 0
        self.held: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        key = SEAL_LOCK & 0xFFFFFFFFFFFFFFFF
        self._sealer = (key >> 32, key & 0xFFFFFFFF)

    def _run(self) -> None:
        query = text("SELECT locktype, granted, classid::bigint AS hi, objid::bigint AS lo "
                     "FROM pg_locks WHERE pid <> pg_backend_pid() "
                     "AND (locktype = 'advisory' OR NOT granted)")
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                rows = conn.execute(query).all()
                self.samples += 1
                seen = {_WAITING} if any(not r.granted for r in rows) else set()
                for r in rows:
                    if not r.granted:
                        seen.add(f"a backend waiting for a {r.locktype} lock")
                    elif r.locktype == "advisory":
                        seen.add(_SEALER if (r.hi, r.lo) == self._sealer else _NAMES)
                self.held.update(seen)
                self._stop.wait(0.02)

    def start(self) -> PgLockSampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(5)
        self.engine.dispose()
        n = max(self.samples, 1)
        return {_WAITING: 0.0, _SEALER: 0.0, _NAMES: 0.0,
                **{k: v / n for k, v in self.held.items()}}


def _phase(ports: tuple[list[int], list[int]], seconds: float, *, readers: list[str],
           writers: list[str], ids: list[tuple[str, str]],
           messages: list[bytes]) -> tuple[Phase, Phase, float]:
    """`seconds` of the readers on ports[0] and the writers on ports[1] (client i on port
    i % len)."""
    rports, wports = ports
    reads, writes = Phase(), Phase()
    stop = threading.Event()
    barrier = threading.Barrier(len(readers) + len(writers) + 1)
    cursor = [0]
    cursor_lock = threading.Lock()

    def reader(i: int) -> None:
        rng = random.Random(i)
        conn = http.client.HTTPConnection("127.0.0.1", rports[i % len(rports)], timeout=60)
        conn.connect()
        barrier.wait()
        n = 0
        while not stop.is_set():
            pid, number = ids[rng.randrange(len(ids))]
            n += 1
            path = (f"/fhir/Patient?identifier={FNR}|{number}" if n % SEARCH_EVERY == 0
                    else f"/fhir/Patient/{pid}")
            t0 = time.perf_counter()
            status, body = _request(conn, "GET", path, readers[i])
            reads.add(time.perf_counter() - t0, status, body)
        conn.close()

    def writer(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", wports[i % len(wports)], timeout=60)
        conn.connect()
        barrier.wait()
        while not stop.is_set():
            with cursor_lock:
                if cursor[0] >= len(messages):
                    raise RuntimeError("out of prepared messages: raise --messages")
                body = messages[cursor[0]]
                cursor[0] += 1
            t0 = time.perf_counter()
            status, answer = _request(conn, "POST", "/fhir/$process-message", writers[i], body)
            writes.add(time.perf_counter() - t0, status, answer)
        conn.close()

    threads = ([threading.Thread(target=reader, args=(i,)) for i in range(len(readers))]
               + [threading.Thread(target=writer, args=(i,)) for i in range(len(writers))])
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    return reads, writes, time.perf_counter() - t0


def _summary(p: Phase, wall: float) -> dict[str, float]:
    if p.errors:
        raise RuntimeError(f"{len(p.errors)} errors, first: {p.errors[0]}")
    if len(p.latencies) < 2:
        return {"rate": 0.0, "p50": 0.0, "p99": 0.0, "n": 0}
    q = statistics.quantiles(p.latencies, n=100)
    return {"rate": len(p.latencies) / wall, "p50": q[49] * 1000, "p99": q[98] * 1000,
            "n": len(p.latencies)}


def _patients(base: str, token: str, count: int) -> list[tuple[str, str]]:
    r = httpx.get(f"{base}/fhir/Patient", params={"_count": str(count)},
                  headers={"Authorization": f"Bearer {token}"}, timeout=60)
    r.raise_for_status()
    out = []
    for e in r.json().get("entry", []):
        res = e["resource"]
        number = next(i["value"] for i in res.get("identifier", []) if i["system"] == FNR)
        out.append((res["id"], number))
    return out


def _run(url: str, args: argparse.Namespace, stats_dir: str) -> dict[str, Any]:
    n_readers, n_writers = args.readers, args.writers
    with tempfile.TemporaryDirectory() as tmp:
        key_file = str(Path(tmp) / "audit.pem")
        keys = _prepare(url, n_readers + n_writers, key_file)
        if Path(args.hub_root).resolve() != ROOT:
            stamp_as(url, Path(args.hub_root))
        for f in os.listdir(stats_dir):
            os.unlink(os.path.join(stats_dir, f))
        # reader i on rports[i % len(rports)], writer i on wports[i % len(wports)]
        write_pool: AbstractContextManager[tuple[list[int], list[subprocess.Popen[bytes]]]] = (
            serving(url, key_file, args.workers, apart=True, root=Path(args.hub_root),
                    nice=args.write_nice, sealer="inside" if args.sealer == "inside" else None)
            if args.layout == "pools" else nullcontext(([], [])))
        with serving(url, key_file, args.workers, apart=args.layout != "workers",
                     root=Path(args.hub_root), sealer=args.sealer) as (rports, procs), \
                write_pool as (wports, wprocs):
            procs = procs + wprocs
            ports = (rports, wports or rports)
            base = f"http://127.0.0.1:{ports[0][0]}"  # tokens and reads: the read pool
            tokens = _tokens(base, keys)
            readers, writers = tokens[:n_readers], tokens[n_readers:]
            pool = _messages(args.patients + args.messages)
            for i, body in enumerate(pool[:args.patients]):  # the patients to read
                conn = http.client.HTTPConnection("127.0.0.1", ports[1][0], timeout=60)
                status, answer = _request(conn, "POST", "/fhir/$process-message",
                                          writers[i % n_writers], body)
                conn.close()
                if status != 200:
                    raise RuntimeError(f"seeding: {status} {answer[:200]!r}")
            ids = _patients(base, readers[0], args.patients)
            messages = pool[args.patients:]
            _phase(ports, 1.0, readers=readers, writers=[], ids=ids, messages=[])  # warm-up
            out: dict[str, Any] = {}
            for name, r_tok, w_tok in (("reads alone", readers, []),
                                       ("writes alone", [], writers),
                                       ("both", readers, writers),
                                       ("reads alone again", readers, [])):
                time.sleep(1.5)  # the sealer catches up between phases
                locks0, cpu0 = _lock_totals(stats_dir), _procs_cpu(procs)
                sampler = PgLockSampler(url).start() if url.startswith("postgresql") else None
                reads, writes, wall = _phase(ports, args.seconds, readers=r_tok, writers=w_tok,
                                             ids=ids, messages=messages)
                pg_locks = sampler.stop() if sampler is not None else {}
                time.sleep(0.3)  # the hub's lock counters are written every 0.2 s
                cpu = _procs_cpu(procs) - cpu0
                locks1 = _lock_totals(stats_dir)
                shares = _lock_shares(locks0, locks1, wall)
                r, w = _summary(reads, wall), _summary(writes, wall)
                out[name] = {"reads": r, "writes": w, "locks": {**shares, **pg_locks},
                             "load": os.getloadavg()[0],
                             "cpu_ms": cpu / max(r["n"] + w["n"], 1) * 1000}
                messages = messages[len(writes.latencies):]
    return out


def _db_facts(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                return "SQLite WAL, synchronous=FULL"
            fsync = conn.execute(text("SHOW fsync")).scalar_one()
            sync = conn.execute(text("SHOW synchronous_commit")).scalar_one()
            return f"PostgreSQL fsync={fsync} synchronous_commit={sync}"
    finally:
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="hub processes (of each pool)")
    ap.add_argument("--layout", choices=("pools", *LAYOUTS), default="pools",
                    help="pools: a read pool and a write pool of --workers processes each, "
                         "as deploy/ runs them; " + LAYOUT_HELP)
    ap.add_argument("--sealer", choices=SEALERS, default="apart", help=SEALER_HELP)
    ap.add_argument("--write-nice", type=int, default=10,
                    help="the write pool's nice (pools only; deploy/ runs it at 10)")
    ap.add_argument("--patients", type=int, default=200, help="patients seeded to read")
    ap.add_argument("--messages", type=int, default=5000, help="messages prepared for writers")
    ap.add_argument("--runs", type=int, default=1, help="runs per database (fresh each)")
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default=os.environ.get("HUB_TEST_POSTGRES_URL"))
    ap.add_argument("--hub-root", default=str(ROOT), help="checkout whose hub is served")
    args = ap.parse_args()
    info = machine_info(hub=args.hub_root, phases=f"{args.seconds:g} s each",
                        clients=f"{args.readers} readers, {args.writers} writers, "
                                + (f"a read pool of {args.workers} hub processes, a write pool "
                                   f"of {args.workers} at nice {args.write_nice}"
                                   if args.layout == "pools" else
                                   f"{args.workers} hub processes on ports of their own"
                                   if args.layout == "apart" else
                                   f"{args.workers} workers of one hub serve"),
                        sealer=("a process of its own (hub serve --roles sealer)"
                                if args.sealer == "apart" else "in every hub process"))
    stats_dir = tempfile.mkdtemp(prefix="carehub-lockstats-")
    os.environ["HUB_LOCK_STATS_DIR"] = stats_dir  # the hub processes inherit it
    rates = Table("db", "run", "reads/s alone (before, after)", "reads/s with writes",
                  "read loss",
                  "read p50/p99 ms alone", "read p50/p99 ms with writes", "writes/s alone",
                  "writes/s with reads", "write p50/p99 ms with reads", "hub CPU ms/req (both)",
                  "load 1 min (alone, writes, both)", "target")
    locks = Table("db", "run", "phase", "lock", "taken by", "share of wall time held",
                  "target (< 10 %)")
    facts: dict[str, str] = {}
    try:
        _all_runs(args, stats_dir, rates, locks, facts)
    finally:
        shutil.rmtree(stats_dir, ignore_errors=True)
    print_machine(console, info, facts)
    console.print(rates)
    console.print(locks)
    console.print("target: reads lose at most 25 % alongside the writes; each lock all "
                  "transactions share held under 10 % of the time. PostgreSQL rows are "
                  "pg_locks samples (share of 20 ms samples), not locks all transactions "
                  "share.")


def _all_runs(args: argparse.Namespace, stats_dir: str, rates: Table, locks: Table,
              facts: dict[str, str]) -> None:
    for kind in args.db.split(","):
        for run in range(1, args.runs + 1):
            if kind == "sqlite":
                with sqlite_url("carehub-mixed-") as url:
                    facts[kind] = _db_facts(url)
                    out = _run(url, args, stats_dir)
            elif kind == "postgresql":
                if not args.pg_url:
                    console.print("PostgreSQL skipped: give --pg-url or HUB_TEST_POSTGRES_URL")
                    break
                with postgres_url(args.pg_url, "carehub_mixed_") as url:
                    facts[kind] = _db_facts(url)
                    out = _run(url, args, stats_dir)
            else:
                raise SystemExit(f"unknown --db {kind}")
            first, wr, both = out["reads alone"], out["writes alone"], out["both"]
            again = out["reads alone again"]
            # the floor: reads alone before and after, against drift in the machine's load
            alone = {"reads": {k: (first["reads"][k] + again["reads"][k]) / 2
                               for k in ("rate", "p50", "p99")},
                     "load": (first["load"] + again["load"]) / 2}
            loss = 1 - both["reads"]["rate"] / alone["reads"]["rate"]
            rates.add_row(
                kind, str(run),
                f"{alone['reads']['rate']:.0f} ({first['reads']['rate']:.0f}, "
                f"{again['reads']['rate']:.0f})", f"{both['reads']['rate']:.0f}",
                f"{loss:.0%}",
                f"{alone['reads']['p50']:.1f}/{alone['reads']['p99']:.1f}",
                f"{both['reads']['p50']:.1f}/{both['reads']['p99']:.1f}",
                f"{wr['writes']['rate']:.0f}", f"{both['writes']['rate']:.0f}",
                f"{both['writes']['p50']:.1f}/{both['writes']['p99']:.1f}",
                f"{both['cpu_ms']:.1f}",
                f"{alone['load']:.1f}, {wr['load']:.1f}, {both['load']:.1f}",
                "met" if loss <= 0.25 else "NOT met")
            for phase in ("reads alone", "writes alone", "both", "reads alone again"):
                for lock, share in sorted(out[phase]["locks"].items()):
                    by = _TAKEN_BY.get(lock, "sampled")
                    locks.add_row(kind, str(run), phase, lock, by, f"{share:.1%}",
                                  ("met" if share < 0.10 else "NOT met")
                                  if by.startswith("every") else "")
            console.print(f"{kind} run {run}: reads {alone['reads']['rate']:.0f}/s alone, "
                          f"{both['reads']['rate']:.0f}/s with writes ({loss:.0%} less); "
                          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

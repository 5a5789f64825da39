"""MLLP benchmark: ADT^A01 messages end to end over MLLP from 8 connections, beside the FHIR
ingest rate of bench/ingest.py measured in the same run.

    python bench/mllp.py [--n 2000] [--connections 8] [--clients 8] [--processes 2]
                         [--runs 1] [--db sqlite,postgresql] [--pg-url URL]

For each database, on a fresh database each:
1. FHIR ingest: bench/ingest.py's run (`hub serve` with --processes worker processes,
   --clients HTTP clients with real tokens posting admission notices).
2. MLLP: --processes `hub mllp` processes (one port each; a PAS connects to one of them, as
   it would to its interface engine's address), --connections PAS connections spread over
   them, each sending its share of A01 messages one after another and waiting for each ACK
   (MLLP original mode: a PAS has one message in flight per connection). Every ACK is an AA
   answered only after the message's transaction committed (the same `process_message` as
   the FHIR route: validation, identity, consent gate, routing, audit), so the two rates
   count the same work. Messages are built before the clock starts; distinct patients and
   stays.

Prints messages/s, p50/p99 latency and the hub processes' CPU per message for both, and the
ratio MLLP / FHIR against the target of 0.8; the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchdb import fodselsnummers, postgres_url, sqlite_url  # noqa: E402
from ingest import _free_port, _run_hub, _tree_cpu  # noqa: E402

from adapters.mllp.simulator import Pas, Stay, ack_code, adt  # noqa: E402
from hub.auth.subject import Subject  # noqa: E402
from hub.config import Settings  # noqa: E402
from hub.db.engine import Database  # noqa: E402
from hub.db.migrate import upgrade  # noqa: E402
from hub.fhir.identifiers import KOMMUNENUMMER_SYSTEM, ORGNR_SYSTEM  # noqa: E402
from hub.orgs.service import add_organization  # noqa: E402

console = Console(width=200)
CENTRE = "983974791"


def _prepare(url: str, key_file: str) -> None:
    db = Database.connect(Settings(database_url=url, audit_key_file=key_file))
    upgrade(db.engine)
    with db.session(write=True) as s:
        add_organization(s, Subject.hub_itself(), name="Jæren DPS", kind="mental-health-centre",
                         identifier=f"{ORGNR_SYSTEM}|{CENTRE}", org_id="jaeren-dps")
        add_organization(s, Subject.hub_itself(), name="Time kommune", kind="municipality",
                         identifier=f"{ORGNR_SYSTEM}|964969590", org_id="time-kommune",
                         more_identifiers=[f"{KOMMUNENUMMER_SYSTEM}|1121"])
    db.dispose()


def _messages(n: int, tag: str) -> list[bytes]:
    admitted = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    return [adt(Stay(facility=CENTRE, fnr=number, visit=f"{tag}-{i}", kommunenummer="1121",
                     admitted=admitted), "A01", f"{tag}-{i}")
            for i, number in enumerate(fodselsnummers(n))]


def _mllp(url: str, port: int, key_file: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HUB_DATABASE_URL": url, "HUB_AUDIT_KEY_FILE": key_file}
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "mllp", "--port", str(port)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=log.open("ab"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("hub mllp exited: " + log.read_text()) from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("hub mllp did not listen: " + log.read_text())


def _run_mllp(url: str, n: int, connections: int, processes: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        key_file = str(Path(tmp) / "audit.pem")
        _prepare(url, key_file)
        ports = [_free_port() for _ in range(processes)]
        procs = [_mllp(url, p, key_file, Path(tmp) / "mllp.log") for p in ports]
        try:
            for i, message in enumerate(_messages(10 * connections, "WARM")):
                with Pas("127.0.0.1", ports[i % processes], timeout=60) as pas:
                    code = ack_code(pas.send(message))
                    if code != "AA":
                        raise RuntimeError(f"warm-up: {code}")
            messages = _messages(n, "RUN")
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()
            barrier = threading.Barrier(connections + 1)

            def work(i: int) -> None:
                mine = messages[i::connections]
                with Pas("127.0.0.1", ports[i % processes], timeout=60, attempts=1) as pas:
                    pas.send(_messages(1, f"HELLO{i}")[0])  # connect before the clock
                    barrier.wait()
                    for message in mine:
                        t0 = time.perf_counter()
                        code = ack_code(pas.send(message))
                        dt = time.perf_counter() - t0
                        with lock:
                            latencies.append(dt)
                            if code != "AA":
                                errors.append(code)

            threads = [threading.Thread(target=work, args=(i,)) for i in range(connections)]
            for t in threads:
                t.start()
            cpu0 = sum(_tree_cpu(p.pid) for p in procs)
            barrier.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            cpu = sum(_tree_cpu(p.pid) for p in procs) - cpu0
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
    if errors:
        raise RuntimeError(f"{len(errors)} messages not accepted, first: {errors[0]}")
    q = statistics.quantiles(latencies, n=100)
    return {"rate": n / wall, "p50": q[49] * 1000, "p99": q[98] * 1000,
            "hub_cpu": cpu / n * 1000}


def _one(kind: str, args: argparse.Namespace) -> tuple[dict[str, float], dict[str, float]] | None:
    if kind == "sqlite":
        with sqlite_url("carehub-ingest-") as url:
            fhir = _run_hub(url, args.n, args.clients, args.processes)
        with sqlite_url("carehub-mllp-") as url:
            mllp = _run_mllp(url, args.n, args.connections, args.processes)
    elif kind == "postgresql":
        if not args.pg_url:
            console.print("PostgreSQL skipped: give --pg-url or HUB_TEST_POSTGRES_URL")
            return None
        with postgres_url(args.pg_url, "carehub_ingest_") as url:
            fhir = _run_hub(url, args.n, args.clients, args.processes)
        with postgres_url(args.pg_url, "carehub_mllp_") as url:
            mllp = _run_mllp(url, args.n, args.connections, args.processes)
    else:
        raise SystemExit(f"unknown --db {kind}")
    return fhir, mllp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--clients", type=int, default=8, help="HTTP clients of the FHIR run")
    ap.add_argument("--processes", type=int, default=2,
                    help="hub processes of each kind (serve workers; hub mllp listeners)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default=os.environ.get("HUB_TEST_POSTGRES_URL"))
    args = ap.parse_args()
    console.print(f"{platform.python_implementation()} {platform.python_version()}, "
                  f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; N={args.n}, "
                  f"{args.connections} MLLP connections / {args.clients} HTTP clients, "
                  f"{args.processes} hub process(es) each")
    table = Table("db", "FHIR msg/s", "FHIR p50 ms", "FHIR p99 ms", "FHIR CPU ms/msg",
                  "MLLP msg/s", "MLLP p50 ms", "MLLP p99 ms", "MLLP CPU ms/msg",
                  "MLLP / FHIR", "target 0.8")
    for kind in args.db.split(","):
        for _ in range(args.runs):
            r = _one(kind, args)
            if r is None:
                break
            fhir, mllp = r
            ratio = mllp["rate"] / fhir["rate"]
            table.add_row(kind, f"{fhir['rate']:.0f}", f"{fhir['p50']:.1f}",
                          f"{fhir['p99']:.1f}", f"{fhir['hub_cpu']:.1f}",
                          f"{mllp['rate']:.0f}", f"{mllp['p50']:.1f}", f"{mllp['p99']:.1f}",
                          f"{mllp['hub_cpu']:.1f}", f"{ratio:.2f}",
                          "met" if ratio >= 0.8 else "NOT met")
    console.print(table)
    console.print(f"Load at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

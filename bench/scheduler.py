"""Scheduler benchmark: a sweep costs with what is due, not with what is pending.

    python bench/scheduler.py [--pending 1000000] [--due 10000] [--db sqlite,postgresql]
                              [--pg-url URL] [--batch 200]

On a fresh, migrated database, bulk-inserts `--pending` open due rows falling due over the
next 60 days (COPY on PostgreSQL, executemany on SQLite) and `--due` rows due an hour ago,
then times hub.scheduler.sweep.sweep: once finding the `--due` rows (acted on with a trivial
action registered for the benchmark, so this measures claiming, locking and closing in
batches of `--batch`, not the notices a real check sends).

Then the real mode (`--real`, default 10,000; 0 skips it): ceil(real / 3) discharge-notices
from Jæren DPS to Time kommune, each a distinct synthetic patient discharged 31-40 days ago,
go through hub.messaging.intake.process_message in-process (one committed transaction each,
as the route does, without HTTP), so each leaves its Patient, Encounter, CarePlan and three
follow-up check Tasks whose due rows are all past due, beside the 1,000,000 pending rows in
the same table. A sweep then escalates them with the real action of
hub/workflows/followup.py: a Task version with businessStatus overdue, a Flag, the
follow-up-overdue notice stored and routed (hub/messaging/outbound.py: Bundle, messages row,
a delivery per receiver after the consent gate) and the audit records. Before it, one batch
of the same kind (the discharges of a separate, older fixture) is swept under cProfile; the
profile's shares, applied to the unprofiled time a row, give a rough per-row breakdown.

Last, many times, a sweep that finds none. Prints everything, the plan of the due probe,
and machine facts.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import (  # noqa: E402
    database_version,
    fodselsnummers,
    machine_info,
    postgres_url,
    sqlite_url,
)

from hub.audit.recorder import Touched, take_disclosures  # noqa: E402
from hub.auth.subject import Subject  # noqa: E402
from hub.config import Settings  # noqa: E402
from hub.db.engine import Database  # noqa: E402
from hub.db.migrate import upgrade  # noqa: E402
from hub.messaging.intake import check_message, process_message  # noqa: E402
from hub.orgs.service import add_organization  # noqa: E402
from hub.scheduler.actions import ACTIONS, Act  # noqa: E402
from hub.scheduler.journal import auditor_for  # noqa: E402
from hub.scheduler.models import ScheduledCheckRow  # noqa: E402
from hub.scheduler.sweep import SweepReport, sweep  # noqa: E402
from tests.scheduler.story import discharge  # noqa: E402

console = Console(width=200)
KIND = "bench"
COLUMNS = ("kind", "target", "patient_ref", "recipients", "due_at", "created_at", "attempts")
ORGNR = "urn:oid:2.16.578.1.12.4.1.4.101"
CENTRE = Subject("system", "bench-dps-system", "jaeren-dps", frozenset({"system/*.*"}))
PROFILED_AGO = timedelta(days=100)  # the profiled batch's discharges: due long before the rest


def _noop(_act: Act, _row: ScheduledCheckRow) -> str:
    return "benched"


ACTIONS[KIND] = _noop


def _rows(n: int, first: int, now: datetime, due_from: timedelta,
          spread: timedelta) -> list[tuple[object, ...]]:
    step = spread / max(n, 1)
    return [(KIND, f"Bench/{first + i}", f"Patient/p{(first + i) % 50000}", "org-a,org-b",
             now + due_from + step * i, now, 0) for i in range(n)]


def _naive(moment: object) -> str:
    """A UTC datetime as SQLite's DateTime columns store it."""
    assert isinstance(moment, datetime)
    return moment.replace(tzinfo=None).isoformat(sep=" ")


def _load_sqlite(db: Database, rows: list[tuple[object, ...]]) -> None:
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("BEGIN")
        cur.executemany(
            f"INSERT INTO scheduled_checks ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(*r[:4], _naive(r[4]), _naive(r[5]), r[6]) for r in rows])
        cur.execute("COMMIT")
    finally:
        raw.close()


def _load_postgres(db: Database, rows: list[tuple[object, ...]]) -> None:
    raw = db.engine.raw_connection()
    try:
        buf = io.StringIO()
        for r in rows:
            buf.write("\t".join(str(v) for v in r) + "\n")
        pg: Any = raw.driver_connection  # psycopg's own connection: COPY
        with pg.cursor() as cur, cur.copy(
                f"COPY scheduled_checks ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            copy.write(buf.getvalue())
        pg.commit()
        with pg.cursor() as cur:
            cur.execute("ANALYZE scheduled_checks")
        pg.commit()
    finally:
        raw.close()


def _plan(db: Database, now: datetime) -> str:
    with db.engine.connect() as conn:
        if db.dialect == "sqlite":
            rows = conn.execute(text(
                "EXPLAIN QUERY PLAN SELECT id FROM scheduled_checks WHERE closed_at IS NULL "
                "AND due_at <= :at ORDER BY due_at, id LIMIT 200"),
                {"at": now.replace(tzinfo=None).isoformat(sep=" ")}).all()
            return "; ".join(str(r[-1]) for r in rows)
        rows = conn.execute(text(
            "EXPLAIN SELECT id FROM scheduled_checks WHERE closed_at IS NULL "
            "AND due_at <= :at ORDER BY due_at, id LIMIT 200 FOR UPDATE SKIP LOCKED"),
            {"at": now}).all()
        return "; ".join(r[0].strip() for r in rows)


def _organisations(db: Database) -> None:
    with db.session(write=True) as s:
        add_organization(s, Subject.hub_itself(), name="Jæren DPS", kind="mental-health-centre",
                         identifier=f"{ORGNR}|983974791", org_id="jaeren-dps")
        add_organization(s, Subject.hub_itself(), name="Time kommune", kind="municipality",
                         identifier=f"{ORGNR}|964969590", org_id="time-kommune")


def _discharges(db: Database, settings: Settings, people: list[str],
                when: list[datetime]) -> float:
    """Accept one discharge-notice per person, as the $process-message route does (validated
    first, then one audited write transaction each); seconds taken."""
    auditor = auditor_for(settings)
    messages = [discharge(at, fnr=fnr) for fnr, at in zip(people, when, strict=True)]
    t0 = time.perf_counter()
    for message in messages:
        checked = check_message(message)
        with db.session(write=True) as s:
            out = process_message(s, CENTRE, settings, bundle=message, checked=checked)
            auditor.disclosures(s, take_disclosures(s), subject=CENTRE)
            auditor.rest(s, CENTRE, interaction="operation", resource_type="Bundle",
                         touched=Touched(out.resources, out.patients),
                         operation="$process-message")
    return time.perf_counter() - t0


BREAKDOWN = (  # (label, function, called from; None: from anywhere)
    ("read the Task and the Patient", ("hub/scheduler/actions.py", "read"), None),
    ("Task version, overdue (store update)", ("hub/store/service.py", "update"),
     ("hub/workflows/followup.py", "escalate")),
    ("Flag (conditional create)", ("hub/store/service.py", "create"),
     ("hub/workflows/followup.py", "escalate")),
    ("notice: build and validate the Bundle", ("hub/messaging/outbound.py", "build"), None),
    ("notice: store the Bundle", ("hub/store/service.py", "create"),
     ("hub/messaging/outbound.py", "send_notice")),
    ("notice: receivers registered?", ("hub/messaging/outbound.py", "_registered"), None),
    ("notice: consent gate per receiver", ("hub/messaging/routing.py", "decide_delivery"),
     None),
    ("audit: Task and Flag records", ("hub/scheduler/journal.py", "wrote"), None),
    ("audit: disclosures and $send-message", ("hub/scheduler/journal.py", "sent"), None),
    ("claim the batch (locked select)", ("hub/scheduler/due.py", "claim"), None),
    ("commit", ("sqlalchemy/orm/session.py", "commit"), None),
)


def _find(stats: dict[Any, Any], where: tuple[str, str]) -> list[Any]:
    return [k for k in stats if k[0].endswith(where[0]) and k[2] == where[1]]


def _cumulative(raw: dict[Any, Any], fn: tuple[str, str],
                caller: tuple[str, str] | None) -> float:
    total = 0.0
    for key in _find(raw, fn):
        if caller is None:
            total += raw[key][3]
        else:
            for ckey in _find(raw[key][4], caller):
                total += raw[key][4][ckey][3]
    return total


def _profile(db: Database, settings: Settings, at: datetime,
             rows: int) -> tuple[SweepReport, float, list[tuple[str, float]], str]:
    """Sweep the profiled fixture (one batch of `rows`) under cProfile: its report, profiled
    seconds, each BREAKDOWN item's share of them, and the top functions by cumulative time."""
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    report = sweep(db, settings, now=at, batch=rows)
    profiler.disable()
    took = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    whole = _cumulative(raw, ("hub/scheduler/sweep.py", "sweep"), None) or took
    shares = [(label, _cumulative(raw, fn, caller) / whole) for label, fn, caller in BREAKDOWN]
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(r"/hub/", 25)
    top = "\n".join(line for line in out.getvalue().splitlines()
                    if "/" in line or "ncalls" in line)
    return report, took, shares, top


def _real(db: Database, settings: Settings, args: argparse.Namespace,
          now: datetime) -> dict[str, str]:
    """The real-mode figures (see the module's docstring)."""
    _organisations(db)
    n = math.ceil(args.real / 3)
    profiled_n = math.ceil(args.batch / 3)
    people = fodselsnummers(n + profiled_n)
    old = now - PROFILED_AGO
    _discharges(db, settings, people[n:], [old] * profiled_n)
    spread = [now - timedelta(days=31) - timedelta(days=9) * i / max(n, 1) for i in range(n)]
    prepared = _discharges(db, settings, people[:n], spread)
    # every check of the profiled fixture is due by `old` + 30 d, none of the others before
    # `now` - 37 d: sweeping at `old` + 35 d acts on the profiled batch alone
    profiled, profiled_s, shares, top = _profile(db, settings, old + timedelta(days=35),
                                                  3 * profiled_n)
    assert profiled.outcomes == {"escalated": 3 * profiled_n}, profiled.outcomes
    t0 = time.perf_counter()
    report = sweep(db, settings, now=now)
    took = time.perf_counter() - t0
    assert report.outcomes == {"escalated": 3 * n}, report.outcomes
    assert not report.failed, report.errors[:3]
    with db.engine.connect() as conn:
        notices = conn.execute(text("SELECT count(*) FROM messages "
                                    "WHERE event = 'follow-up-overdue'")).scalar_one()
        flags = conn.execute(text("SELECT count(*) FROM resources "
                                  "WHERE resource_type = 'Flag'")).scalar_one()
    assert notices == flags == 3 * (n + profiled_n), (notices, flags)  # each exactly once
    per_row = took / (3 * n) * 1000
    out = {
        f"real: {n:,} discharge-notices (in-process)": (
            f"{prepared:.1f} s, {prepared / n * 1000:.1f} ms each, {3 * n:,} due checks"),
        f"real sweep finding {3 * n:,} due": (
            f"{took:.1f} s ({3 * n / took:,.0f} rows/s, {per_row:.2f} ms a row, "
            f"{report.batches} batches)"),
        f"profiled batch ({3 * profiled_n} rows, cProfile on)": (
            f"{profiled_s:.2f} s, {profiled_s / (3 * profiled_n) * 1000:.1f} ms a row"),
    }
    rest = 1.0 - sum(share for _, share in shares)
    for label, share in [*shares, ("the rest (savepoints, closing, glue)", rest)]:
        out[f"  ~ {label}"] = f"{share * 100:4.1f} % ~ {share * per_row:.2f} ms a row"
    out["_top"] = top
    return out


def run(url: str, args: argparse.Namespace) -> dict[str, str]:
    """Load, then time the two sweeps on the database at `url`."""
    settings = Settings(database_url=url, scheduler_batch=args.batch,
                        audit_key_file=os.path.join(args.tmp, "bench-audit-key.pem"))
    db = Database.connect(settings)
    try:
        upgrade(db.engine)
        now = datetime.now(UTC)
        load = _load_sqlite if db.dialect == "sqlite" else _load_postgres
        t0 = time.perf_counter()
        chunk = 100_000
        for first in range(0, args.pending, chunk):
            n = min(chunk, args.pending - first)
            load(db, _rows(n, first, now, timedelta(hours=1) + timedelta(days=60) * first
                           / args.pending, timedelta(days=60) * n / args.pending))
        load(db, _rows(args.due, args.pending, now, -timedelta(hours=2), timedelta(hours=1)))
        loaded = time.perf_counter() - t0
        if db.dialect == "sqlite":
            with db.engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        t0 = time.perf_counter()
        busy = sweep(db, settings, now=now)
        busy_s = time.perf_counter() - t0
        assert busy.outcomes == {"benched": args.due}, busy.outcomes
        real = _real(db, settings, args, now) if args.real else {}
        idle = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            report = sweep(db, settings, now=now)
            idle.append(time.perf_counter() - t0)
            assert report.acted == 0
        with db.engine.connect() as conn:
            still = conn.execute(text("SELECT count(*) FROM scheduled_checks "
                                      "WHERE closed_at IS NULL")).scalar_one()
        return {
            "database": database_version(db.engine),
            "rows loaded": f"{args.pending + args.due:,} in {loaded:.1f} s",
            "open (pending) after": f"{still:,}",
            f"no-op sweep finding {args.due:,} due": (
                f"{busy_s:.2f} s ({args.due / busy_s:,.0f} rows/s, {busy.batches} batches)"),
            "sweep finding none (median)": f"{statistics.median(idle) * 1000:.2f} ms",
            "sweep finding none (max)": f"{max(idle) * 1000:.2f} ms",
            **real,
            "due probe plan": _plan(db, now),
        }
    finally:
        db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pending", type=int, default=1_000_000)
    ap.add_argument("--due", type=int, default=10_000)
    ap.add_argument("--real", type=int, default=10_000,
                    help="real follow-up checks to escalate (3 per discharge; 0: skip)")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default=os.environ.get("HUB_TEST_POSTGRES_URL"))
    args = ap.parse_args()
    facts = machine_info(pending=f"{args.pending:,}", due=f"{args.due:,}",
                         batch=str(args.batch))
    results: dict[str, dict[str, str]] = {}
    for kind in args.db.split(","):
        if kind == "sqlite":
            with sqlite_url() as url:
                args.tmp = url.removeprefix("sqlite:///").rsplit("/", 1)[0]
                results["SQLite"] = run(url, args)
        elif kind == "postgresql":
            if not args.pg_url:
                console.print("[yellow]PostgreSQL skipped: no --pg-url / HUB_TEST_POSTGRES_URL")
                continue
            with sqlite_url() as scratch, postgres_url(args.pg_url) as url:
                args.tmp = scratch.removeprefix("sqlite:///").rsplit("/", 1)[0]
                results["PostgreSQL"] = run(url, args)
    table = Table("", *results)
    for key in next(iter(results.values()), {}):
        if key != "_top":
            table.add_row(key, *(r.get(key, "") for r in results.values()))
    console.print(table)
    for name, result in results.items():
        if result.get("_top"):
            console.print(f"[bold]{name}: the profiled batch, top hub functions by cumulative "
                          "time[/bold]", highlight=False)
            console.print(result["_top"], highlight=False, markup=False)
    for key, value in facts.items():
        console.print(f"{key}: {value}")


if __name__ == "__main__":
    main()

"""Scheduler benchmark: a sweep costs with what is due, not with what is pending.

    python bench/scheduler.py [--pending 1000000] [--due 10000] [--db sqlite,postgresql]
                              [--pg-url URL] [--batch 200]

On a fresh, migrated database, bulk-inserts `--pending` open due rows falling due over the
next 60 days (COPY on PostgreSQL, executemany on SQLite) and `--due` rows due an hour ago,
then times hub.scheduler.sweep.sweep: once finding the `--due` rows (acted on with a trivial
action registered for the benchmark, so this measures claiming, locking and closing in
batches of `--batch`, not the notices a real check sends), and then, many times, a sweep
that finds none. Prints both, the plan of the due probe, and machine facts.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import database_version, machine_info, postgres_url, sqlite_url  # noqa: E402

from hub.config import Settings  # noqa: E402
from hub.db.engine import Database  # noqa: E402
from hub.db.migrate import upgrade  # noqa: E402
from hub.scheduler.actions import ACTIONS, Act  # noqa: E402
from hub.scheduler.models import ScheduledCheckRow  # noqa: E402
from hub.scheduler.sweep import sweep  # noqa: E402

console = Console(width=200)
KIND = "bench"
COLUMNS = ("kind", "target", "patient_ref", "recipients", "due_at", "created_at", "attempts")


def _noop(_act: Act, _row: ScheduledCheckRow) -> str:
    return "benched"


ACTIONS[KIND] = _noop


def _rows(n: int, first: int, now: datetime, due_from: timedelta,
          spread: timedelta) -> list[tuple[object, ...]]:
    step = spread / max(n, 1)
    return [(KIND, f"Bench/{first + i}", f"Patient/p{(first + i) % 50000}", "org-a,org-b",
             now + due_from + step * i, now, 0) for i in range(n)]


def _load_sqlite(db: Database, rows: list[tuple[object, ...]]) -> None:
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("BEGIN")
        cur.executemany(
            f"INSERT INTO scheduled_checks ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(*r[:4], r[4].replace(tzinfo=None).isoformat(sep=" "),  # type: ignore[union-attr]
              r[5].replace(tzinfo=None).isoformat(sep=" "), r[6])  # type: ignore[union-attr]
             for r in rows])
        cur.execute("COMMIT")
    finally:
        raw.close()


def _load_postgres(db: Database, rows: list[tuple[object, ...]]) -> None:
    raw = db.engine.raw_connection()
    try:
        buf = io.StringIO()
        for r in rows:
            buf.write("\t".join(str(v) for v in r) + "\n")
        with raw.cursor() as cur, cur.copy(  # type: ignore[attr-defined]
                f"COPY scheduled_checks ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            copy.write(buf.getvalue())
        raw.commit()
        with raw.cursor() as cur:
            cur.execute("ANALYZE scheduled_checks")
        raw.commit()
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
            f"sweep finding {args.due:,} due": (
                f"{busy_s:.2f} s ({args.due / busy_s:,.0f} rows/s, {busy.batches} batches)"),
            "sweep finding none (median)": f"{statistics.median(idle) * 1000:.2f} ms",
            "sweep finding none (max)": f"{max(idle) * 1000:.2f} ms",
            "due probe plan": _plan(db, now),
        }
    finally:
        db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pending", type=int, default=1_000_000)
    ap.add_argument("--due", type=int, default=10_000)
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
        table.add_row(key, *(r.get(key, "") for r in results.values()))
    console.print(table)
    for key, value in facts.items():
        console.print(f"{key}: {value}")


if __name__ == "__main__":
    main()

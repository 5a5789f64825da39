"""Throwaway databases and machine facts for the benchmarks (run as `python bench/<name>.py`,
so this module is importable as `benchdb`)."""

from __future__ import annotations

import os
import platform
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def sqlite_url(prefix: str = "carehub-bench-") -> Iterator[str]:
    """A file in a fresh temporary directory."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield f"sqlite:///{tmp}/bench.db"


@contextmanager
def postgres_url(base: str, prefix: str = "carehub_bench_") -> Iterator[str]:
    """A database <prefix><random> on the server at `base`, dropped afterwards."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(base).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def fodselsnummers(n: int) -> list[str]:
    """`n` distinct valid fødselsnummer of synthetic people born from 1950 on."""
    from hub.fhir.identifiers import make_fodselsnummer  # the caller has put the hub on the path

    out: list[str] = []
    day, individual = date(1950, 1, 1), 100
    while len(out) < n:
        with suppress(ValueError):
            out.append(make_fodselsnummer(day, individual))
        individual += 1
        if individual > 499:
            individual, day = 100, day + timedelta(days=1)
    return out


def database_version(engine: Engine) -> str:
    """The server's (or SQLite library's) version."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return f"SQLite {conn.execute(text('select sqlite_version()')).scalar_one()}"
        return f"PostgreSQL {conn.execute(text('show server_version')).scalar_one()}"


def machine_info(**extra: str) -> dict[str, str]:
    """nproc, CPU, Python and library versions, load at start; `extra` adds lines."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh
                        if line.startswith("model name")), "?")
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "nproc": f"{usable} (of {os.cpu_count()})",
        "cpu": cpu,
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite library": sqlite3.sqlite_version,
        **extra,
        "load average at start": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def print_machine(console: Console, info: dict[str, str], versions: dict[str, str]) -> None:
    """The machine facts (from machine_info), each database's version and the load at the
    end, as the first table of a benchmark's report."""
    facts = Table(title="Machine", show_header=False)
    for key, value in {**info, **{f"{db} version": v for db, v in versions.items()}}.items():
        facts.add_row(key, value)
    facts.add_row("load average at end", ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    console.print(facts)


def stamp_as(url: str, root: Path) -> None:
    """Label the database (migrated by this tree) with the newest migration of the checkout
    at `root`, which may be older (a baseline served by `--hub-root`): tables and columns it
    does not know are left alone."""
    versions = sorted(p.name.split("_", 1)[0]
                      for p in (root / "hub/db/migrations/versions").glob("[0-9]*_*.py"))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": versions[-1]})
    engine.dispose()

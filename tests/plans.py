"""Reading SQLite's query plans of the statements the hub really runs, for tests that pin a
hot path to index searches (a full read of a table only shows at scale, never in a test's
timing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event


def statements_of(engine: Engine, action: Callable[[], object]) -> list[tuple[str, Any]]:
    """The (statement, parameters) `engine` ran during `action()`."""
    seen: list[tuple[str, Any]] = []

    def keep(_conn: object, _cursor: object, statement: str, params: Any, *_a: object) -> None:
        seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    return seen


def sqlite_plan(engine: Engine, statement: str, params: Any) -> str:
    """SQLite's EXPLAIN QUERY PLAN of one statement, its steps joined by ' | '."""
    with engine.connect() as conn:
        return " | ".join(str(row[-1]) for row in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + statement, params))

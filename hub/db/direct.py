"""Statements of the hot paths (a message's writes, the token look-up, a resource's current
row, a patient's Consents) run straight on the driver's cursor.

SQLAlchemy's Core `Connection.execute` spends Python on work a fixed statement does not
need: a cache lookup for its compiled form, an execution context, parameter processing
through generic machinery, a result object (a 4-column SQLite insert: 16 us against 3.5 us
on the cursor; more for the message path's wider rows, RETURNING and multi-row inserts).
A message runs about twenty statements, most of them inside SQLite's one write lock, and
that overhead was the largest single cost of a message (bench/ingest.py, py-spy: 40 % of
the worker thread's own time in sqlalchemy frames against under 5 % in the driver).

A `Direct` statement is a Core statement compiled once per dialect and shape (the keys of
the parameters it is given); running it binds the parameters through the columns' own
bind processors (so a value is written exactly as SQLAlchemy writes it) and calls the
DBAPI cursor of the session's connection, in the session's transaction. The engine's
`before_cursor_execute` listeners still see every driver call (tests count statements), and
the driver's errors come out as SQLAlchemy's (IntegrityError, OperationalError, ...), with a
connection the database dropped invalidated, as `Connection.execute` does: the callers'
handlers (a taken id, a database away: 503) work alike on both paths.

Rows come back as tuples, each value through its column's result processing (a UTC
datetime, a bool), as SQLAlchemy gives it. Only statements that need no more than that may
be Direct: no Python-side column defaults (every column is given), no expanding IN, no
number columns in the result (their processing depends on the driver's type); `Direct`
refuses others when it compiles them.

On PostgreSQL a Direct statement is a server-side prepared statement of its connection
(psycopg's `prepare=True`): parsed and planned once per connection instead of at every run.
That took the server's CPU for a message's write transaction from 2.6 to 1.9 ms (an
in-process loop of 1,000 messages, fsync on). Only these fixed statements are prepared: a
search, whose plan must look at its values, is not (hub/db/engine.py). A few rows go as one
prepared statement, not as psycopg's pipelined executemany, whose pipeline costs more
Python than it saves below `PIPELINE_FROM` rows (a loop of 2-row inserts: 0.09 ms of the
client's CPU a batch against 0.14 ms; 16 rows: 0.68 against 0.24 ms). An INSERT of such a
few rows is one statement of that many VALUES rows (prepared once per row count), not a
statement per row: each statement saved is about 50 us of the client's CPU and 40-60 us of
the server's (a message's two audit records and two fullUrls); RETURNING gives its rows in
the order of the VALUES, as PostgreSQL inserts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Connection, Numeric, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Row = tuple[Any, ...]
Bind = Callable[[Mapping[str, Any]], Any]

PIPELINE_FROM = 4
"""On PostgreSQL, `run_many` and `rows_many` pipeline this many rows or more (see above)."""


class _Compiled:
    """One compiled form: its SQL and how to turn a mapping of values into its parameters."""

    def __init__(self, statement: ClauseElement, dialect: Dialect,
                 keys: tuple[str, ...] | None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys) if keys else None)
        assert isinstance(compiled, SQLCompiler)
        refused = _refusal(compiled, dialect)
        if refused:
            raise TypeError(f"{refused}; run it through Connection.execute: {compiled.string}")
        self.sql = compiled.string
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        names = list(compiled.positiontup or []) if compiled.positional else list(by_name)
        steps = [(name, by_name[name].type.dialect_impl(dialect).bind_processor(dialect))
                 for name in names]
        # values the statement holds itself (a literal in a condition), unless given
        fixed = {name: bind.effective_value for name, bind in by_name.items()
                 if not bind.required}

        if compiled.positional:
            def bind(values: Mapping[str, Any]) -> Any:
                if fixed:
                    values = {**fixed, **values}
                return tuple(values[n] if p is None or values[n] is None else p(values[n])
                             for n, p in steps)
        else:
            def bind(values: Mapping[str, Any]) -> Any:
                if fixed:
                    values = {**fixed, **values}
                return {n: values[n] if p is None or values[n] is None else p(values[n])
                        for n, p in steps}
        self.bind: Bind = bind
        results = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                   for column in getattr(compiled.statement, "exported_columns", ())]
        self.convert: Callable[[Row], Row] | None = None
        if any(results):
            def convert(row: Row) -> Row:
                return tuple(v if p is None else p(v) for v, p in zip(row, results, strict=True))
            self.convert = convert

    def rows(self, cursor: Any) -> list[Row]:
        """The rows `cursor` has, each value as SQLAlchemy would give it (result processing of
        the column's type: a UTC datetime, a bool)."""
        fetched = cursor.fetchall()
        if self.convert is None:
            return [tuple(r) for r in fetched]
        return [self.convert(r) for r in fetched]


def _refusal(compiled: SQLCompiler, dialect: Dialect) -> str:
    """Why `compiled` cannot run Direct ('' when it can)."""
    if compiled.insert_prefetch or compiled.update_prefetch:
        return "it has columns whose values SQLAlchemy computes (Python-side defaults)"
    if any(b.expanding for b in compiled.binds.values()):
        return "it has an expanding IN parameter"
    for column in getattr(compiled.statement, "exported_columns", ()):
        if isinstance(column.type, Numeric):  # its processing depends on the driver's type
            return f"its result column {getattr(column, 'name', column)} is a number column"
    return ""


class Direct:
    """A Core statement run on the driver's cursor of a session's connection (see the
    module's docstring). Build at import time; compiled on first use per dialect and shape."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._forms: dict[tuple[str, tuple[str, ...] | None], _Compiled] = {}
        self._together_forms: dict[tuple[str, tuple[str, ...], int], _Compiled] = {}
        # An INSERT without values of its own takes its columns from the parameters' keys:
        # one compiled form per set of keys.
        self._shaped = bool(getattr(statement, "is_insert", False) and not getattr(
            statement, "_values", None) and not getattr(statement, "_multi_values", None))

    def _form(self, dialect: Dialect, values: Mapping[str, Any]) -> _Compiled:
        keys = tuple(values) if self._shaped else None
        key = (dialect.name, keys)
        form = self._forms.get(key)
        if form is None:
            form = self._forms[key] = _Compiled(self.statement, dialect, keys)
        return form

    def _together(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[Row] | None:
        """On PostgreSQL, an INSERT of 2 to PIPELINE_FROM - 1 rows runs as one statement of
        that many VALUES rows (row i's value of k bound as `k__i`): what it returned, in the
        order of `rows`. None, having run nothing, where the rows go otherwise."""
        if not (self._shaped and conn.dialect.name == "postgresql"
                and 1 < len(rows) < PIPELINE_FROM):
            return None
        keys = tuple(rows[0])
        key = (conn.dialect.name, keys, len(rows))
        form = self._together_forms.get(key)
        if form is None:
            statement = self.statement.values(  # type: ignore[attr-defined]
                [{k: bindparam(f"{k}__{i}") for k in keys} for i in range(len(rows))])
            form = self._together_forms[key] = _Compiled(statement, conn.dialect, None)
        return _rows_of(conn, form, form.bind(
            {f"{k}__{i}": row[k] for i, row in enumerate(rows) for k in keys}))

    def rows(self, conn: Connection, values: Mapping[str, Any]) -> list[Row]:
        """Run once with `values`; the rows it returns ([] for a statement returning none)."""
        form = self._form(conn.dialect, values)
        return _rows_of(conn, form, form.bind(values))

    def run(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """Run once with `values` (a statement that returns no rows); its row count."""
        form = self._form(conn.dialect, values)
        params = form.bind(values)
        with _cursor(conn, form.sql, params) as cursor:
            _tell(conn, cursor, form.sql, params, many=False)
            _execute(conn, cursor, form.sql, params)
            count: int = cursor.rowcount
            return count

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run once per row of `rows` (all of one shape), as one executemany; no rows back. On
        PostgreSQL below `PIPELINE_FROM` rows: an INSERT as one statement of that many rows,
        another statement a prepared statement each."""
        if not rows:
            return
        if self._together(conn, rows) is not None:
            return
        form = self._form(conn.dialect, rows[0])
        params = [form.bind(r) for r in rows]
        with _cursor(conn, form.sql, params) as cursor:
            if conn.dialect.name == "postgresql" and not _pipelined(params):
                for p in params:
                    _tell(conn, cursor, form.sql, p, many=False)
                    _execute(conn, cursor, form.sql, p)
                return
            _tell(conn, cursor, form.sql, params, many=True)
            cursor.executemany(form.sql, params)

    def rows_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[Row]:
        """Run once per row of `rows` (all of one shape); what each returned, in the order of
        `rows` (one statement each on SQLite, whose driver cannot return rows from an
        executemany; on PostgreSQL below `PIPELINE_FROM` rows, an INSERT as one statement of
        that many rows, another statement one each; one pipelined executemany on PostgreSQL
        from there)."""
        if not rows:
            return []
        together = self._together(conn, rows)
        if together is not None:
            return together
        form = self._form(conn.dialect, rows[0])
        params = [form.bind(r) for r in rows]
        out: list[Row] = []
        with _cursor(conn, form.sql, params) as cursor:
            if conn.dialect.name == "postgresql" and _pipelined(params):
                _tell(conn, cursor, form.sql, params, many=True)
                cursor.executemany(form.sql, params, returning=True)
                while True:
                    out.extend(form.rows(cursor))
                    if not cursor.nextset():
                        break
            else:
                for p in params:
                    _tell(conn, cursor, form.sql, p, many=False)
                    _execute(conn, cursor, form.sql, p)
                    out.extend(form.rows(cursor))
        return out


def _rows_of(conn: Connection, form: _Compiled, params: Any) -> list[Row]:
    """One run of `form` with bound `params`; the rows it returns ([] for none)."""
    with _cursor(conn, form.sql, params) as cursor:
        _tell(conn, cursor, form.sql, params, many=False)
        _execute(conn, cursor, form.sql, params)
        return form.rows(cursor) if cursor.description else []


@contextmanager
def _cursor(conn: Connection, sql: str, params: Any) -> Iterator[Any]:
    """A cursor of `conn`'s driver connection, in its transaction (begun if not yet), closed
    after; a driver error in the block is raised as SQLAlchemy's, as `Connection.execute`
    raises it: the matching DBAPIError subclass, and a connection the database dropped
    invalidated (the pool then opens a new one)."""
    if not conn.in_transaction():
        conn.begin()
    driver = conn.connection.dbapi_connection
    assert driver is not None
    cursor = driver.cursor()
    dialect = conn.dialect
    try:
        yield cursor
    except dialect.loaded_dbapi.Error as exc:
        gone = dialect.is_disconnect(exc, driver, cursor)
        if gone:
            conn.invalidate(exc)
        raise DBAPIError.instance(sql, params, exc, dialect.loaded_dbapi.Error,
                                  connection_invalidated=gone, dialect=dialect) from exc
    finally:
        with suppress(dialect.loaded_dbapi.Error):  # its connection is gone: nothing to close
            cursor.close()


def _pipelined(params: Sequence[Any]) -> bool:
    """Whether a batch of `params` goes as one pipelined executemany on PostgreSQL."""
    return len(params) >= PIPELINE_FROM


def _execute(conn: Connection, cursor: Any, sql: str, params: Any) -> None:
    """One run of `sql` on `cursor`: with psycopg as the connection's prepared statement."""
    if conn.dialect.driver == "psycopg":
        cursor.execute(sql, params, prepare=True)
    else:
        cursor.execute(sql, params)


def _tell(conn: Connection, cursor: Any, sql: str, params: Any, *, many: bool) -> None:
    """Tell the engine's before_cursor_execute listeners of one driver call, as SQLAlchemy
    does (tests count and explain statements that way)."""
    listeners = conn.dispatch.before_cursor_execute
    if listeners:
        listeners(conn, cursor, sql, params, None, many)


def plain_savepoints(dialect: Dialect) -> None:
    """Make `dialect` (one engine's) run SAVEPOINT, RELEASE SAVEPOINT and ROLLBACK TO SAVEPOINT
    as plain SQL on the driver's cursor, errors translated as above. SQLAlchemy compiles a new
    statement for each savepoint (their names differ: sa_savepoint_1, _2, ...), and on SQLite's
    group commit every member runs in a savepoint inside the write lock: a SAVEPOINT and its
    RELEASE took 59-79 us that way and take 13-19 us here (a loop of 2,000 pairs, best of
    7). The name is quoted as SQLAlchemy's compiler quotes it (the preparer keeps each name's
    quoted form)."""
    quote = dialect.identifier_preparer.quote

    def plain(verb: str) -> Callable[[Connection, str], None]:
        def run(conn: Connection, name: str) -> None:
            sql = f"{verb} {quote(name)}"
            with _cursor(conn, sql, ()) as cursor:
                _tell(conn, cursor, sql, (), many=False)
                cursor.execute(sql)
        return run

    # Instance attributes of this dialect, the Dialect interface's own hooks for savepoints.
    hooks = {"do_savepoint": "SAVEPOINT", "do_release_savepoint": "RELEASE SAVEPOINT",
             "do_rollback_to_savepoint": "ROLLBACK TO SAVEPOINT"}
    for hook, verb in hooks.items():
        setattr(dialect, hook, plain(verb))

"""SQL of the resource store. Services call these inside their session's transaction; no commits.

The statements of the write path are built once and run on the session's connection: building
a statement and its cache key costs more than SQLite takes to run it (bench/ingest.py).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import Dialect, Table, bindparam, delete, insert, select, text, update
from sqlalchemy.orm import Session

from hub.db.direct import Direct
from hub.db.models import (
    DateIndexRow,
    ReferenceIndexRow,
    ResourceRow,
    ResourceVersionRow,
    StringIndexRow,
    TokenIndexRow,
)
from hub.db.types import UTCDateTime
from hub.fhir.validation import ID_RE
from hub.store.search_params import IndexValues

R = cast(Table, ResourceRow.__table__)
V = cast(Table, ResourceVersionRow.__table__)
INDEX_TABLES: tuple[Table, Table, Table, Table] = (
    cast(Table, TokenIndexRow.__table__),
    cast(Table, ReferenceIndexRow.__table__),
    cast(Table, DateIndexRow.__table__),
    cast(Table, StringIndexRow.__table__),
)


@dataclass(frozen=True)
class Current:
    """The current row of a logical resource."""

    pk: int
    resource_type: str
    logical_id: str
    version_id: int
    last_updated_at: datetime
    deleted: bool
    body: bytes | None
    owner_org: str | None


def _current(row: Any) -> Current | None:
    return Current(*row) if row is not None else None


def current_rows(session: Session, query: Any, params: dict[str, Any]) -> list[Current]:
    """The rows of `query`, a select of CURRENT_COLUMNS (with whatever conditions)."""
    return [Current(*row) for row in session.connection().execute(query, params)]


_CURRENT_COLS = CURRENT_COLUMNS = (R.c.pk, R.c.resource_type, R.c.logical_id, R.c.version_id,
                 R.c.last_updated_at, R.c.deleted, R.c.body, R.c.owner_org)


_GET_CURRENT = Direct(select(*_CURRENT_COLS).where(R.c.resource_type == bindparam("rtype"),
                                                  R.c.logical_id == bindparam("rid")))


def get_current(session: Session, resource_type: str, logical_id: str) -> Current | None:
    """The current row of Type/id, deleted or not, or None if it never existed (as for an id
    no FHIR id can be: a URL's, unchecked, could hold what PostgreSQL refuses, U+0000)."""
    if not ID_RE.match(logical_id):
        return None
    rows = _GET_CURRENT.rows(session.connection(), {"rtype": resource_type, "rid": logical_id})
    return Current(*rows[0]) if rows else None


_CURRENT_BY_PK = select(*_CURRENT_COLS).where(R.c.pk.in_(bindparam("pks", expanding=True)))


def get_current_by_pk(session: Session, pks: list[int]) -> list[Current]:
    """Current rows for these primary keys, in the order given."""
    if not pks:
        return []
    rows = {r.pk: r for r in session.connection().execute(_CURRENT_BY_PK, {"pks": pks})}
    return [c for pk in pks if (c := _current(rows.get(pk))) is not None]


def get_version(session: Session, pk: int, version_id: int) -> Any:
    """(version_id, last_updated_at, method, body) of one version, or None."""
    return session.execute(
        select(V.c.version_id, V.c.last_updated_at, V.c.method, V.c.body)
        .where(V.c.resource_pk == pk, V.c.version_id == version_id)
    ).first()


def list_versions(
    session: Session, pk: int, *, limit: int, offset: int
) -> list[Any]:
    """Versions newest first: (version_id, last_updated_at, method, body)."""
    return list(session.execute(
        select(V.c.version_id, V.c.last_updated_at, V.c.method, V.c.body)
        .where(V.c.resource_pk == pk)
        .order_by(V.c.version_id.desc())
        .limit(limit).offset(offset)
    ))


_INSERT_VERSION = Direct(insert(V))
_WRITE_VERSION = Direct(update(R).where(R.c.pk == bindparam("at_pk"),
                                        R.c.version_id == bindparam("at_version"))
                        .values(version_id=bindparam("new_version"),
                                last_updated_at=bindparam("at"), deleted=bindparam("is_deleted"),
                                body=bindparam("new_body")))
_INSERT_INDEX = tuple(Direct(insert(table)) for table in INDEX_TABLES)


def _json_insert(table: Table, types: dict[str, str]) -> str:
    columns = ", ".join(types)
    typed = ", ".join(f"{c} {t}" for c, t in types.items())
    return (f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM "
            f"json_to_recordset(CAST(:{table.name} AS json)) AS n({typed})")


_KEYS = {"resource_pk": "bigint", "resource_type": "text", "param": "text"}
_INDEX_COLUMNS = (
    {**_KEYS, "system": "text", "code": "text"},
    {**_KEYS, "target_type": "text", "target_id": "text"},
    {**_KEYS, "low_at": "timestamptz", "high_at": "timestamptz"},
    {**_KEYS, "value": "text", "exact": "text"},
)
# PostgreSQL: the rows of all four index tables in one statement (a round trip each cost
# more than the inserts); data-modifying CTEs all run to completion. Each table's rows go as
# one JSON array of objects (orjson, in C), not as one array parameter per column: psycopg
# dumps an array element by element in Python, which cost 4 % of an API process's CPU in
# bench/ingest.py (py-spy); a statement of 12 token and 4 date rows took 327 us of the
# client's CPU that way against 137-176 us as JSON (and less of the server's).
_INSERT_INDEX_PG = Direct(text(
    "WITH " + ", ".join(f"i{n} AS ({_json_insert(table, columns)})"
                        for n, (table, columns) in enumerate(
                            zip(INDEX_TABLES[:3], _INDEX_COLUMNS[:3], strict=True)))
    + " " + _json_insert(INDEX_TABLES[3], _INDEX_COLUMNS[3])))
_DELETE_INDEX = tuple(delete(table).where(table.c.resource_pk == bindparam("pk"))
                      for table in INDEX_TABLES)


@dataclass(frozen=True)
class NewResource:
    """Version 1 of a logical resource, to insert."""

    resource_type: str
    logical_id: str
    body: bytes
    at: datetime
    owner_org: str | None
    method: str = "POST"
    """How version 1 came about, as its history entry says it: POST, or PUT (update-as-create)."""


_INSERT_RESOURCES = Direct(insert(R).returning(R.c.pk))
# PostgreSQL: the rows and their first versions in one statement, the body sent once. The
# rows go as one JSON array (orjson), as the index rows do, not as an array parameter per
# column, which psycopg dumps element by element in Python (2.7 % of an API process's CPU in
# bench/ingest.py, py-spy). A body travels in base64 and is stored as the same bytes: the
# repository does not assume what hub/store/codec.py makes of a resource (encryption at rest
# would not be UTF-8).
_INSERT_RESOURCES_PG = Direct(text(
    "WITH r AS (INSERT INTO resources (resource_type, logical_id, version_id, last_updated_at, "
    "deleted, body, owner_org) SELECT t, i, 1, a, false, decode(b, 'base64'), o "
    "FROM json_to_recordset(CAST(:rows AS json)) AS n(t text, i text, a timestamptz, b text, "
    "o text) RETURNING pk, resource_type, logical_id, last_updated_at, body), "
    "v AS (INSERT INTO resource_versions (resource_pk, version_id, last_updated_at, method, "
    "body) SELECT r.pk, 1, r.last_updated_at, m.m, r.body FROM r JOIN "
    "json_to_recordset(CAST(:methods AS json)) AS m(t text, i text, m text) "
    "ON m.t = r.resource_type AND m.i = r.logical_id) "
    "SELECT pk, resource_type, logical_id FROM r"))


def insert_resources(session: Session, new: Sequence[NewResource]) -> list[int]:
    """Insert version 1 of new logical resources and their versions; their pks, in order.
    IntegrityError if a Type/id is taken.

    PostgreSQL: one statement for both (the pks come back by Type/id). SQLite: one INSERT
    per row on the driver's cursor (each a few microseconds; its driver cannot return rows
    from an executemany), then one executemany for the versions."""
    if not new:
        return []
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        returned = _INSERT_RESOURCES_PG.rows(conn, {"rows": orjson.dumps([
            {"t": n.resource_type, "i": n.logical_id, "a": _utc(n.at, conn.dialect),
             "b": base64.b64encode(n.body).decode("ascii"), "o": n.owner_org}
            for n in new]).decode(), "methods": orjson.dumps([
                {"t": n.resource_type, "i": n.logical_id, "m": n.method} for n in new]).decode()})
        pk_of = {(rtype, rid): pk for pk, rtype, rid in returned}
        return [pk_of[(n.resource_type, n.logical_id)] for n in new]
    rows = [{"resource_type": n.resource_type, "logical_id": n.logical_id, "version_id": 1,
             "last_updated_at": n.at, "deleted": False, "body": n.body,
             "owner_org": n.owner_org} for n in new]
    pks = [pk for (pk,) in _INSERT_RESOURCES.rows_many(conn, rows)]
    _INSERT_VERSION.run_many(conn, [
        {"resource_pk": pk, "version_id": 1, "last_updated_at": n.at, "method": n.method,
         "body": n.body} for pk, n in zip(pks, new, strict=True)])
    return pks


def write_version(
    session: Session, current: Current, body: bytes | None, at: datetime, method: str
) -> bool:
    """Make version current+1 if nobody else did first; False when the version moved on."""
    new_version = current.version_id + 1
    conn = session.connection()
    moved = _WRITE_VERSION.run(conn, {
        "at_pk": current.pk, "at_version": current.version_id, "new_version": new_version,
        "at": at, "is_deleted": body is None, "new_body": body})
    if moved != 1:
        return False
    _INSERT_VERSION.run(conn, {"resource_pk": current.pk, "version_id": new_version,
                               "last_updated_at": at, "method": method, "body": body})
    return True


def replace_index(
    session: Session, pk: int, resource_type: str, values: IndexValues | None
) -> None:
    """Make the index rows of `pk` exactly `values` (None: no rows, for deleted resources);
    a new resource's go in with `insert_index`."""
    conn = session.connection()
    for statement in _DELETE_INDEX:
        conn.execute(statement, {"pk": pk})
    if values is not None:
        insert_index(session, [(pk, resource_type, values)])


def insert_index(session: Session, items: Sequence[tuple[int, str, IndexValues]]) -> None:
    """Add the index rows of resources that have none yet (pk, type, values): one statement
    per index table, whatever the number of resources."""
    rows: tuple[list[dict[str, Any]], ...] = ([], [], [], [])
    tokens, references, dates, strings = rows
    for pk, resource_type, values in items:
        tokens += [{"resource_pk": pk, "resource_type": resource_type, "param": p, "system": s,
                    "code": c} for p, s, c in values.tokens]
        references += [{"resource_pk": pk, "resource_type": resource_type, "param": p,
                        "target_type": t, "target_id": i} for p, t, i in values.references]
        dates += [{"resource_pk": pk, "resource_type": resource_type, "param": p,
                   "low_at": lo, "high_at": hi} for p, lo, hi in values.dates]
        strings += [{"resource_pk": pk, "resource_type": resource_type, "param": p, "value": v,
                     "exact": e} for p, v, e in values.strings]
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        if any(rows):
            # Dates are timezone-aware UTC (search_params), which orjson writes with their
            # offset and microseconds: "2026-12-05T05:29:37.036957+00:00".
            _INSERT_INDEX_PG.run(conn, {table.name: orjson.dumps(batch).decode()
                                        for table, batch in zip(INDEX_TABLES, rows, strict=True)})
        return
    for insert_rows, batch in zip(_INSERT_INDEX, rows, strict=True):
        insert_rows.run_many(conn, batch)


_UTC = UTCDateTime()


def _utc(value: Any, dialect: Dialect) -> Any:
    """`value` as UTCDateTime binds it (values sent inside JSON bypass the column type)."""
    return _UTC.process_bind_param(value, dialect) if isinstance(value, datetime) else value

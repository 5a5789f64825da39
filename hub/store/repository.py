"""SQL of the resource store. Services call these inside their session's transaction; no commits.

The statements of the write path are built once and run on the session's connection: building
a statement and its cache key costs more than SQLite takes to run it (bench/ingest.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from hub.db.models import (
    DateIndexRow,
    ReferenceIndexRow,
    ResourceRow,
    ResourceVersionRow,
    StringIndexRow,
    TokenIndexRow,
)
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


_CURRENT_COLS = (R.c.pk, R.c.resource_type, R.c.logical_id, R.c.version_id,
                 R.c.last_updated_at, R.c.deleted, R.c.body, R.c.owner_org)


_GET_CURRENT = select(*_CURRENT_COLS).where(R.c.resource_type == bindparam("rtype"),
                                           R.c.logical_id == bindparam("rid"))


def get_current(session: Session, resource_type: str, logical_id: str) -> Current | None:
    """The current row of Type/id, deleted or not, or None if it never existed."""
    row = session.connection().execute(
        _GET_CURRENT, {"rtype": resource_type, "rid": logical_id}).first()
    return _current(row)


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


_INSERT_RESOURCE = insert(R).returning(R.c.pk)
_INSERT_VERSION = insert(V)
_WRITE_VERSION = (update(R).where(R.c.pk == bindparam("at_pk"),
                                  R.c.version_id == bindparam("at_version"))
                  .values(version_id=bindparam("new_version"), last_updated_at=bindparam("at"),
                          deleted=bindparam("is_deleted"), body=bindparam("new_body")))
_INSERT_INDEX = tuple(insert(table) for table in INDEX_TABLES)
_DELETE_INDEX = tuple(delete(table).where(table.c.resource_pk == bindparam("pk"))
                      for table in INDEX_TABLES)


def insert_resource(
    session: Session, resource_type: str, logical_id: str, body: bytes, at: datetime,
    owner_org: str | None,
) -> int:
    """Insert version 1 of a new logical resource; IntegrityError if Type/id is taken."""
    conn = session.connection()
    pk: int = conn.execute(_INSERT_RESOURCE, {
        "resource_type": resource_type, "logical_id": logical_id, "version_id": 1,
        "last_updated_at": at, "deleted": False, "body": body, "owner_org": owner_org,
    }).scalar_one()
    conn.execute(_INSERT_VERSION, {"resource_pk": pk, "version_id": 1, "last_updated_at": at,
                                   "method": "POST", "body": body})
    return pk


def write_version(
    session: Session, current: Current, body: bytes | None, at: datetime, method: str
) -> bool:
    """Make version current+1 if nobody else did first; False when the version moved on."""
    new_version = current.version_id + 1
    conn = session.connection()
    result = conn.execute(_WRITE_VERSION, {
        "at_pk": current.pk, "at_version": current.version_id, "new_version": new_version,
        "at": at, "is_deleted": body is None, "new_body": body})
    if result.rowcount != 1:
        return False
    conn.execute(_INSERT_VERSION, {"resource_pk": current.pk, "version_id": new_version,
                                   "last_updated_at": at, "method": method, "body": body})
    return True


def replace_index(
    session: Session, pk: int, resource_type: str, values: IndexValues | None, *, fresh: bool
) -> None:
    """Make the index rows of `pk` exactly `values` (None: no rows, for deleted resources)."""
    conn = session.connection()
    if not fresh:
        for statement in _DELETE_INDEX:
            conn.execute(statement, {"pk": pk})
    if values is None:
        return
    rows: tuple[list[dict[str, Any]], ...] = (
        [{"resource_pk": pk, "resource_type": resource_type, "param": p, "system": s,
          "code": c} for p, s, c in values.tokens],
        [{"resource_pk": pk, "resource_type": resource_type, "param": p, "target_type": t,
          "target_id": i} for p, t, i in values.references],
        [{"resource_pk": pk, "resource_type": resource_type, "param": p, "low_at": lo,
          "high_at": hi} for p, lo, hi in values.dates],
        [{"resource_pk": pk, "resource_type": resource_type, "param": p, "value": v,
          "exact": e} for p, v, e in values.strings],
    )
    for insert_rows, batch in zip(_INSERT_INDEX, rows, strict=True):
        if batch:
            conn.execute(insert_rows, batch)

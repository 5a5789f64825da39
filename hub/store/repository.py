"""SQL of the resource store. Services call these inside their session's transaction; no commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
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


def get_current(session: Session, resource_type: str, logical_id: str) -> Current | None:
    """The current row of Type/id, deleted or not, or None if it never existed."""
    row = session.execute(
        select(*_CURRENT_COLS).where(R.c.resource_type == resource_type,
                                     R.c.logical_id == logical_id)
    ).first()
    return _current(row)


def get_current_by_pk(session: Session, pks: list[int]) -> list[Current]:
    """Current rows for these primary keys, in the order given."""
    if not pks:
        return []
    rows = {r.pk: r for r in session.execute(select(*_CURRENT_COLS).where(R.c.pk.in_(pks)))}
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


def insert_resource(
    session: Session, resource_type: str, logical_id: str, body: bytes, at: datetime,
    owner_org: str | None,
) -> int:
    """Insert version 1 of a new logical resource; IntegrityError if Type/id is taken."""
    pk: int = session.execute(
        insert(R).values(resource_type=resource_type, logical_id=logical_id, version_id=1,
                         last_updated_at=at, deleted=False, body=body,
                         owner_org=owner_org).returning(R.c.pk)
    ).scalar_one()
    session.execute(insert(V).values(resource_pk=pk, version_id=1, last_updated_at=at,
                                     method="POST", body=body))
    return pk


def write_version(
    session: Session, current: Current, body: bytes | None, at: datetime, method: str
) -> bool:
    """Make version current+1 if nobody else did first; False when the version moved on."""
    new_version = current.version_id + 1
    result = session.execute(
        update(R)
        .where(R.c.pk == current.pk, R.c.version_id == current.version_id)
        .values(version_id=new_version, last_updated_at=at, deleted=body is None, body=body)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.execute(insert(V).values(resource_pk=current.pk, version_id=new_version,
                                     last_updated_at=at, method=method, body=body))
    return True


def replace_index(
    session: Session, pk: int, resource_type: str, values: IndexValues | None, *, fresh: bool
) -> None:
    """Make the index rows of `pk` exactly `values` (None: no rows, for deleted resources)."""
    if not fresh:
        for table in INDEX_TABLES:
            session.execute(delete(table).where(table.c.resource_pk == pk))
    if values is None:
        return
    base = {"resource_pk": pk, "resource_type": resource_type}
    tokens, refs, dates, strings = INDEX_TABLES
    batches = (
        (tokens, [{**base, "param": p, "system": s, "code": c} for p, s, c in values.tokens]),
        (refs, [{**base, "param": p, "target_type": t, "target_id": i}
                for p, t, i in values.references]),
        (dates, [{**base, "param": p, "low_at": lo, "high_at": hi} for p, lo, hi in values.dates]),
        (strings, [{**base, "param": p, "value": v, "exact": e} for p, v, e in values.strings]),
    )
    for table, rows in batches:
        if rows:
            session.execute(insert(table), rows)

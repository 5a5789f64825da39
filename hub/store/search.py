"""Search: a parsed SearchRequest -> SQL over the index tables -> a page of what the caller may
see. Only the store service runs searches (it passes the consent gate as `visibility`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session

from hub.errors import BadRequestError, Issue, operation_outcome
from hub.store import chains
from hub.store.query import SearchRequest, split_escaped, unescape
from hub.store.repository import INDEX_TABLES, Current, R, get_current_by_pk
from hub.store.search_params import params_for
from hub.store.values import TABLE, date_clause, split_prefix, value_clause
from hub.store.visibility import Visibility

T_REF = INDEX_TABLES[1]


@dataclass
class SearchPage:
    """One page of results; `next_offset` is where the next page starts (None: last page)."""

    matches: list[Current]
    included: list[Current]
    next_offset: int | None
    total: int | None
    ignored: list[str]

    @property
    def has_next(self) -> bool:
        """Whether another page follows."""
        return self.next_offset is not None

    def ignored_entry(self, resource_type: str) -> dict[str, Any] | None:
        """The searchset entry (search mode outcome) that says which parameters were
        ignored; None when none was. REST and a batch's search both carry it."""
        if not self.ignored:
            return None
        return {"resource": operation_outcome([Issue(
            f"Ignored search parameters this hub does not support on {resource_type}: "
            f"{', '.join(self.ignored)}.", "not-supported", "warning")]),
            "search": {"mode": "outcome"}}


MODIFIERS = {"token": ("not",), "string": ("exact", "contains")}
"""The modifiers each parameter type takes besides `:missing` (a reference also takes a
resource type, `subject:Patient`); any other is a 400, never dropped. The hub indexes only
token, reference, date and string parameters (search_params.SUPPORTED_TYPES)."""


def _criterion(resource_type: str, name: str, value: str,
               links: chains.Links) -> ColumnElement[bool] | None:
    values = split_escaped(value, ",")
    if name.startswith("_has:"):
        return chains.reverse(links, resource_type, name, values)
    if "." in name:
        return chains.chained(links, resource_type, name, values)
    code, _, modifier = name.partition(":")
    if code in ("_id", "_lastUpdated"):
        return _resource_column(code, modifier, name, value, values)
    sp = params_for(resource_type).get(code)
    if sp is None:
        return None
    table = TABLE[sp.type]
    any_row = select(table.c.resource_pk).where(table.c.resource_type == resource_type,
                                                table.c.param == code)
    if modifier == "missing":
        has = R.c.pk.in_(any_row)
        return not_(has) if _missing(name, value) else has
    if modifier and modifier not in MODIFIERS.get(sp.type, ()) and not (
        sp.type == "reference" and modifier[:1].isupper()
    ):
        raise _unsupported(modifier, code, sp.type)
    if modifier == "not":
        matching = any_row.where(or_(*[value_clause(sp, "", v, name) for v in values]))
        return R.c.pk.not_in(matching)
    return R.c.pk.in_(any_row.where(or_(*[value_clause(sp, modifier, v, name) for v in values])))


def _resource_column(code: str, modifier: str, name: str, value: str,
                     values: list[str]) -> ColumnElement[bool]:
    """`_id` (a token: `:not`, `:missing`) or `_lastUpdated` (a date: `:missing`), conditions
    on `resources` itself. Every resource has both, so `:missing=true` matches none."""
    if modifier == "missing":
        return false() if _missing(name, value) else true()
    if code == "_id":
        if modifier not in ("", "not"):
            raise _unsupported(modifier, code, "token")
        ids = [unescape(v) for v in values]
        return R.c.logical_id.not_in(ids) if modifier == "not" else R.c.logical_id.in_(ids)
    if modifier:
        raise _unsupported(modifier, code, "date")
    clauses = []
    for v in values:
        prefix, rest = split_prefix(unescape(v))
        clauses.append(date_clause(prefix, R.c.last_updated_at, R.c.last_updated_at, rest, name))
    return or_(*clauses)


def _missing(name: str, value: str) -> bool:
    """The value of a `:missing` criterion; BadRequestError unless true or false."""
    if value not in ("true", "false"):
        raise BadRequestError(f"{name} takes true or false, not '{value}'.", expression=name)
    return value == "true"


def _unsupported(modifier: str, code: str, kind: str) -> BadRequestError:
    return BadRequestError(f"Search modifier :{modifier} is not supported on {code} "
                           f"(a {kind} parameter).", expression=f"{code}:{modifier}")


def _order_by(req: SearchRequest) -> list[ColumnElement[object]]:
    order: list[ColumnElement[object]] = []
    for key in req.sort:
        desc = key.startswith("-")
        code = key.lstrip("-")
        col: ColumnElement[object]
        if code == "_id":
            col = R.c.logical_id
        elif code == "_lastUpdated":
            col = R.c.last_updated_at
        else:
            sp = params_for(req.resource_type).get(code)
            if sp is None or sp.type not in ("date", "string"):
                raise BadRequestError(f"Cannot sort {req.resource_type} by '{code}'; "
                                      "sortable are _id, _lastUpdated and date or string "
                                      "parameters.")
            table = TABLE[sp.type]
            value = table.c.low_at if sp.type == "date" else table.c.value
            col = (select(func.min(value)).where(table.c.resource_pk == R.c.pk,
                                                  table.c.param == code)
                   .correlate(R).scalar_subquery())
        order.append(col.desc() if desc else col.asc())
    order.append(R.c.pk.asc())
    return order


def build_query(req: SearchRequest, visible: ColumnElement[bool] | None,
                links: chains.Links) -> tuple[Select[Any], list[str]]:
    """SELECT pk of matching current resources the caller may see (`visible`), and the
    parameters that were ignored (BadRequestError instead when `req.strict`). Chained and
    `_has` criteria follow only what `links` lets the caller see at each link.

    When a criterion is `pk IN (index rows of this type)`, the resource type is not asked of
    `resources` again: it is implied, and asking it let SQLite walk every resource of the type
    (its type index) and test each against the matches, a search costing with the store's
    size instead of with what it finds (bench: 474 -> 113 searches/s from 20k to 100k)."""
    where: list[ColumnElement[bool]] = [R.c.deleted == false()]
    if visible is not None:
        where.append(visible)
    ignored: list[str] = []
    narrowed = False
    for name, value in req.criteria:
        clause = _criterion(req.resource_type, name, value, links)
        if clause is None and req.strict:
            raise BadRequestError(
                f"The search parameter {name} is not supported on {req.resource_type}; "
                "it is refused because the request asked Prefer: handling=strict.",
                expression=name)
        if clause is None:
            ignored.append(name)
        else:
            where.append(clause)
            narrowed = narrowed or _keeps_to_type(name)
    if not narrowed:
        where.insert(0, R.c.resource_type == req.resource_type)
    return select(R.c.pk).where(*where), ignored


def _keeps_to_type(name: str) -> bool:
    """Whether `_criterion` makes `name` a `pk IN (index rows of the searched type)`: every
    search parameter but _id, _lastUpdated (columns of `resources`) and `_has` (the
    references to it), and the :missing and :not modifiers (which may also match what has no
    index rows)."""
    code, _, modifier = name.partition(":")
    return code not in ("_id", "_lastUpdated", "_has") and modifier not in ("missing", "not")


def run(session: Session, req: SearchRequest, visibility: Visibility) -> SearchPage:
    """Execute a search and fetch one page (plus `_include`d resources) of what
    `visibility` lets the caller see. Offsets, totals and `next` count only what the caller
    may see (CONTRACT section 5: no trace of the hidden), so a page walks the pre-filtered
    rows from the start; `_count=0` asks no page at all."""
    query, ignored = build_query(req, visibility.clause(), chains.Links(session, visibility))
    # what the rows were found by: a match must not tell what the caller may not see of them
    searched = {name.partition(":")[0] for name, _ in req.criteria} | {
        key.lstrip("-") for key in req.sort} | {
        f"_include:{inc.split(':')[1] if ':' in inc else inc}" for inc in req.include}
    ordered = query.order_by(*_order_by(req))
    wanted = req.offset + req.count + 1  # visible rows up to one past this page
    seen: list[Current] = []
    position, exhausted = 0, req.count == 0
    while len(seen) < wanted and not exhausted:
        batch = max(wanted - len(seen), 50)
        pks: list[int] = list(session.execute(ordered.limit(batch).offset(position)).scalars())
        exhausted = len(pks) < batch
        position += len(pks)
        rows = get_current_by_pk(session, pks)
        seen.extend(row for row, ok in zip(rows, visibility.allows(rows, searched), strict=True)
                    if ok)
    page = seen[req.offset:req.offset + req.count]
    next_offset = req.offset + req.count if len(seen) > req.offset + req.count else None
    total = _count(session, query, visibility, searched) if req.total else None
    return SearchPage(page, _includes(session, req, [r.pk for r in page], visibility),
                      next_offset, total, ignored)


def _count(session: Session, query: Select[Any], visibility: Visibility,
           searched: set[str]) -> int:
    total = 0
    for chunk in _chunks(list(session.execute(query.order_by(R.c.pk)).scalars()), 500):
        total += sum(visibility.allows(get_current_by_pk(session, chunk), searched))
    return total


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _includes(session: Session, req: SearchRequest, pks: list[int],
              visibility: Visibility) -> list[Current]:
    if not req.include or not pks:
        return []
    params: list[ColumnElement[bool]] = []
    for inc in req.include:
        parts = inc.split(":")
        if len(parts) < 2 or parts[0] != req.resource_type:
            raise BadRequestError(
                f"_include={inc} must name {req.resource_type}:<reference parameter>.")
        sp = params_for(req.resource_type).get(parts[1])
        if parts[1] != "*" and (sp is None or sp.type != "reference"):
            raise BadRequestError(f"_include={inc}: {parts[1]} is not a reference parameter "
                                  f"of {req.resource_type}.")
        clause = true() if parts[1] == "*" else T_REF.c.param == parts[1]
        if len(parts) > 2:
            clause = and_(clause, T_REF.c.target_type == parts[2])
        params.append(clause)
    targets = session.execute(
        select(T_REF.c.target_type, T_REF.c.target_id).distinct()
        .where(T_REF.c.resource_pk.in_(pks), or_(*params))
    ).all()
    if not targets:
        return []
    visible = visibility.clause()
    found = session.execute(
        select(R.c.pk).where(R.c.deleted == false(),
                             true() if visible is None else visible,
                             or_(*[and_(R.c.resource_type == t, R.c.logical_id == i)
                                   for t, i in targets]))
    ).scalars()
    seen = set(pks)
    rows = get_current_by_pk(session, [pk for pk in found if pk not in seen])
    return [row for row, ok in zip(rows, visibility.allows(rows), strict=True) if ok]

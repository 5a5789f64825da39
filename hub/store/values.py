"""Conditions on the index tables for one search value: token, reference, date, string."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_

from hub.errors import BadRequestError
from hub.store.dates import parse_range
from hub.store.query import split_escaped, unescape
from hub.store.repository import INDEX_TABLES
from hub.store.search_params import SearchParam, fold, parse_reference

T_TOKEN, T_REF, T_DATE, T_STRING = INDEX_TABLES
TABLE = {"token": T_TOKEN, "reference": T_REF, "date": T_DATE, "string": T_STRING}
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def date_clause(prefix: str, low: ColumnElement[datetime], high: ColumnElement[datetime],
                value: str, name: str) -> ColumnElement[bool]:
    """The date comparison `prefix` of [low, high] with `value`'s range; BadRequestError
    naming `name` for what is not a FHIR date."""
    rng = parse_range(value)
    if rng is None:
        raise BadRequestError(
            f"Search parameter {name}: '{value}' is not a FHIR date, dateTime or instant.")
    lo, hi = rng
    clauses: dict[str, ColumnElement[bool]] = {
        "eq": and_(low >= lo, high <= hi),
        "ne": or_(low < lo, high > hi),
        "gt": high > hi,
        "lt": low < lo,
        "ge": high >= lo,
        "le": low <= hi,
        "sa": low > hi,
        "eb": high < lo,
        "ap": and_(low <= hi, high >= lo),
    }
    return clauses[prefix]


def split_prefix(value: str) -> tuple[str, str]:
    """(prefix, rest) of a date search value; `eq` when it has none."""
    if len(value) > 2 and value[:2] in PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


def value_clause(sp: SearchParam, modifier: str, value: str, name: str) -> ColumnElement[bool]:
    """A condition on `sp`'s index table for one search value (with `modifier`), the value
    still escaped as the query carried it (a token splits on its first unescaped `|`)."""
    table = TABLE[sp.type]
    if sp.type == "token":
        system_and_code = split_escaped(value, "|", 1)
        if len(system_and_code) == 2:
            system, code = (unescape(part) for part in system_and_code)
            parts = []
            if code:
                parts.append(table.c.code == code)
            parts.append(table.c.system.is_(None) if system == "" else table.c.system == system)
            return and_(*parts)
        return table.c.code == unescape(value)
    value = unescape(value)
    if sp.type == "reference":
        parsed = parse_reference(value) if "/" in value else None
        if parsed:
            return and_(table.c.target_type == parsed[0], table.c.target_id == parsed[1])
        if modifier and modifier[:1].isupper():
            return and_(table.c.target_type == modifier, table.c.target_id == value)
        return table.c.target_id == value
    if sp.type == "date":
        prefix, rest = split_prefix(value)
        return date_clause(prefix, table.c.low_at, table.c.high_at, rest, name)
    # string
    if modifier == "exact":
        return table.c.exact == value
    folded = fold(value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{folded}%" if modifier == "contains" else f"{folded}%"
    return table.c.value.like(pattern, escape="\\")

"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Dialect, LargeBinary, cast
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime; stored naive-UTC on SQLite so text order is time order."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(DateTime(timezone=False))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class ExactBytes(TypeDecorator[bytes]):
    """Bytes read back exactly as stored, whatever their storage class: SQLite keeps what a
    statement stores, so a value edited in SQL (replace(), a cast) is TEXT in a BLOB column,
    and Python's driver then decodes it as UTF-8, failing on bytes that are not. Read as
    CAST(column AS BLOB) (BYTEA on PostgreSQL: the same value), it comes back as the bytes
    SQLite holds, for a hash to judge. For columns whose bytes are checked: audit bodies."""

    impl = LargeBinary
    cache_ok = True

    def column_expression(self, colexpr: ColumnElement[Any]) -> ColumnElement[Any]:
        return cast(colexpr, LargeBinary)


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)

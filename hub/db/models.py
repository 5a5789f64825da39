"""Tables of the resource store: current versions, history, search indexes, conditional keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hub.db.types import UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
PK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ResourceRow(Base):
    """The current version of one logical resource (body None once deleted)."""

    __tablename__ = "resources"
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    logical_id: Mapped[str] = mapped_column(String(64))
    # The organisation whose client created it (None: the hub itself or the open API).
    owner_org: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)

    __table_args__ = (
        UniqueConstraint("resource_type", "logical_id", name="uq_resources_type_id"),
        Index("ix_resources_type_updated", "resource_type", "last_updated_at"),
        Index("ix_resources_owner", "owner_org", "resource_type"),
    )


class ResourceVersionRow(Base):
    """Every version ever written, the current one included; never changed after insert."""

    __tablename__ = "resource_versions"
    resource_pk: Mapped[int] = mapped_column(
        PK, ForeignKey("resources.pk", ondelete="CASCADE"), primary_key=True
    )
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    method: Mapped[str] = mapped_column(String(8))  # POST, PUT or DELETE
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


def _index_table_args(name: str, *value_cols: str) -> tuple[Index, ...]:
    return (
        Index(f"ix_{name}_lookup", "resource_type", "param", *value_cols),
        Index(f"ix_{name}_resource", "resource_pk"),
    )


class TokenIndexRow(Base):
    """A token search value (system|code) of a current resource."""

    __tablename__ = "search_tokens"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = mapped_column(PK, ForeignKey("resources.pk", ondelete="CASCADE"))
    resource_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    system: Mapped[str | None] = mapped_column(String(255), nullable=True)
    code: Mapped[str] = mapped_column(String(255))
    __table_args__ = _index_table_args("search_tokens", "code", "system")


class ReferenceIndexRow(Base):
    """A reference search value (target type and id) of a current resource."""

    __tablename__ = "search_references"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = mapped_column(PK, ForeignKey("resources.pk", ondelete="CASCADE"))
    resource_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str] = mapped_column(String(255))
    __table_args__ = _index_table_args("search_references", "target_id", "target_type")


class DateIndexRow(Base):
    """A date search value as the closed UTC range [low, high] it stands for."""

    __tablename__ = "search_dates"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = mapped_column(PK, ForeignKey("resources.pk", ondelete="CASCADE"))
    resource_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    low_at: Mapped[datetime] = mapped_column(UTCDateTime())
    high_at: Mapped[datetime] = mapped_column(UTCDateTime())
    __table_args__ = (
        *_index_table_args("search_dates", "low_at"),
        Index("ix_search_dates_high", "resource_type", "param", "high_at"),
    )


class StringIndexRow(Base):
    """A string search value, folded to lower case without accents."""

    __tablename__ = "search_strings"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = mapped_column(PK, ForeignKey("resources.pk", ondelete="CASCADE"))
    resource_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(255))
    exact: Mapped[str] = mapped_column(String(255))
    __table_args__ = _index_table_args("search_strings", "value")


class ConditionalKeyRow(Base):
    """Claims If-None-Exist criteria for one resource; the unique key makes the claim race-free."""

    __tablename__ = "conditional_keys"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    criteria_hash: Mapped[str] = mapped_column(String(64))
    criteria: Mapped[str] = mapped_column(String(2000))
    resource_pk: Mapped[int] = mapped_column(PK, ForeignKey("resources.pk", ondelete="CASCADE"))
    __table_args__ = (
        UniqueConstraint("resource_type", "criteria_hash", name="uq_conditional_keys_criteria"),
    )

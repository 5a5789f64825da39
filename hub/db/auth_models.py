"""Tables of access control: clients and their keys, used assertion ids, access tokens,
people and their web sessions. Organisations themselves are Organization resources."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import Base
from hub.db.types import UTCDateTime

CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._~-]{1,64}\Z")
"""What a client_id may be (every client is registered under one; hub.auth.clients)."""


class ClientRow(Base):
    """A system (SMART Backend Services client) acting for one organisation."""

    __tablename__ = "clients"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the client_id
    organization_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    jwks: Mapped[str] = mapped_column(Text)  # JSON Web Key Set with the public key(s)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class UsedAssertionRow(Base):
    """A client assertion's jti, kept until the assertion would have expired anyway."""

    __tablename__ = "used_assertions"
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class AccessTokenRow(Base):
    """An issued bearer token, stored as its SHA-256 so a database leak yields no tokens."""

    __tablename__ = "access_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(2000))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class UserRow(Base):
    """A person who signs in to /ui: coordinator, auditor or admin."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    organization_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # e-mail notices without health information (adapters/email); migration 0009
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    notified_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)


class WebSessionRow(Base):
    """A signed-in browser session; the cookie holds a random id, stored here as its SHA-256."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    __table_args__ = (Index("ix_web_sessions_user", "user_id"),)


class EndpointCredentialRow(Base):
    """The HTTP credentials (userinfo, `user:password`) the push sends to one Endpoint's
    address. Kept apart from the Endpoint resource, which every client reads as the
    directory; only the dispatcher puts them back into the address it posts to."""

    __tablename__ = "endpoint_credentials"
    endpoint_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    userinfo: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

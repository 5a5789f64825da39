"""Web sessions and CSRF for /ui.

The `carehub_session` cookie holds a random id; `web_sessions` keeps only its SHA-256, with the
session's CSRF token and expiry. Every request looks the session and its user up again, so
signing out or disabling a user ends the session at once. Forms carry the session's CSRF
token; the sign-in form, before any session exists, uses a double-submit `carehub_csrf` cookie.
The session cookie's path is `/`, so that it also reaches /fhir, where an auditor reads the
audit trail (GET /fhir/AuditEvent) with it; the CSRF cookie stays under /ui.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.responses import Response

from hub.api.deps import DatabaseDep, in_transaction
from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.auth_models import UserRow, WebSessionRow
from hub.db.types import utcnow
from hub.errors import ForbiddenError, UnauthorizedError

SESSION_COOKIE = "carehub_session"
CSRF_COOKIE = "carehub_csrf"
COOKIE_PATH = "/ui"  # the pre-session CSRF cookie
SESSION_COOKIE_PATH = "/"  # the session: /ui and the auditors' /fhir/AuditEvent
CSRF_FIELD = "csrf_token"
_TOKEN_BYTES = 32  # token_urlsafe(32): 43 characters


class SignInRequiredError(UnauthorizedError):
    """401: no valid session; /ui answers with a redirect to the sign-in page."""

    def __init__(self) -> None:
        super().__init__("Sign in to continue.")


class CsrfError(ForbiddenError):
    """403: a form without the right CSRF token."""

    def __init__(self) -> None:
        super().__init__("This form is out of date or did not come from this site. "
                         "Go back, reload the page and try again.")


@dataclass(frozen=True)
class SignedIn:
    """A live web session and the person it belongs to."""

    id_hash: str
    user_id: int
    username: str
    role: str
    organization_id: str | None
    csrf_token: str
    expires_at: datetime

    @property
    def subject(self) -> Subject:
        """The acting subject of this person's requests."""
        return Subject(kind="user", id=self.username, organization_id=self.organization_id,
                       scopes=frozenset(), role=self.role)


def new_token() -> str:
    """A fresh random token (session id or CSRF token)."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def hash_session_id(raw: str) -> str:
    """The stored form of a session id: its SHA-256, hex."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def start_session(session: Session, user: UserRow, *, now: datetime, lifetime: int,
                  replacing: str | None = None) -> tuple[str, str]:
    """Open a session for `user`; returns (session id for the cookie, CSRF token). A session
    id the browser already had (`replacing`) is ended, so an id is never reused."""
    if replacing:
        end_session(session, replacing)
    session.execute(delete(WebSessionRow).where(WebSessionRow.user_id == user.id,
                                                WebSessionRow.expires_at <= now))
    raw, csrf = new_token(), new_token()
    session.add(WebSessionRow(id_hash=hash_session_id(raw), user_id=user.id, csrf_token=csrf,
                              created_at=now, expires_at=now + timedelta(seconds=lifetime)))
    session.flush()
    return raw, csrf


def end_session(session: Session, raw: str) -> None:
    """Delete the session with this id (nothing when there is none)."""
    session.execute(delete(WebSessionRow).where(WebSessionRow.id_hash == hash_session_id(raw)))


def find_session(session: Session, raw: str, now: datetime) -> SignedIn | None:
    """The live session with this id, or None when unknown, expired or its user disabled."""
    row = session.execute(
        select(WebSessionRow, UserRow)
        .join(UserRow, UserRow.id == WebSessionRow.user_id)
        .where(WebSessionRow.id_hash == hash_session_id(raw))
    ).first()
    if row is None:
        return None
    web, user = row[0], row[1]
    if web.expires_at <= now or not user.active:
        return None
    return SignedIn(web.id_hash, user.id, user.username, user.role, user.organization_id,
                    web.csrf_token, web.expires_at)


def check_csrf(expected: str | None, given: str | None) -> None:
    """Raise CsrfError unless `given` is present and equals `expected`."""
    if not expected or not given or not hmac.compare_digest(
            expected.encode("utf-8"), given.encode("utf-8")):
        raise CsrfError


def is_https(request: Request, settings: Settings) -> bool:
    """True when the browser reached us over TLS (X-Forwarded-Proto only when trusted)."""
    if request.url.scheme == "https":
        return True
    if settings.trust_forwarded_proto:
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        return proto == "https"
    return False


def _path(name: str) -> str:
    return SESSION_COOKIE_PATH if name == SESSION_COOKIE else COOKIE_PATH


def set_cookie(response: Response, name: str, value: str, *, secure: bool) -> None:
    """Set one of our cookies: HttpOnly, SameSite=strict, Secure over TLS; Path=/ for the
    session, /ui for the CSRF cookie."""
    response.set_cookie(name, value, path=_path(name), httponly=True, samesite="strict",
                        secure=secure)


def clear_cookie(response: Response, name: str, *, secure: bool) -> None:
    """Tell the browser to drop one of our cookies."""
    response.delete_cookie(name, path=_path(name), httponly=True, samesite="strict",
                           secure=secure)


def pre_session_csrf(request: Request) -> str:
    """The sign-in form's CSRF token: the browser's `carehub_csrf` cookie, or a new one."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if len(current) == 43 and all(c.isalnum() or c in "-_" for c in current):
        return current
    return new_token()


async def optional_session(request: Request, db: DatabaseDep) -> SignedIn | None:
    """The request's live session, or None."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    now = utcnow()
    return await in_transaction(db, lambda s: find_session(s, raw, now), write=False)


async def require_session(
        signed_in: Annotated[SignedIn | None, Depends(optional_session)]) -> SignedIn:
    """The request's live session. Raises SignInRequiredError."""
    if signed_in is None:
        raise SignInRequiredError
    return signed_in


async def user_subject(signed_in: Annotated[SignedIn, Depends(require_session)]) -> Subject:
    """The signed-in person as the acting Subject. Raises SignInRequiredError."""
    return signed_in.subject


OptionalSessionDep = Annotated[SignedIn | None, Depends(optional_session)]
SignedInDep = Annotated[SignedIn, Depends(require_session)]
UserSubjectDep = Annotated[Subject, Depends(user_subject)]

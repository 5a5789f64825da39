"""People who sign in to /ui: adding them, switching them off, checking their password.

Passwords are argon2id hashes (argon2-cffi's defaults). Repeated wrong passwords pause the
account; a paused account, an unknown name and a wrong password all look the same from outside,
in words and in time. Services flush, never commit.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.audit.events import LOGIN, sign_in_event
from hub.auth.subject import Subject
from hub.db.auth_models import UserRow, WebSessionRow
from hub.db.types import utcnow
from hub.errors import BadRequestError, ConflictError, GoneError, HubError, NotFoundError
from hub.fhir.strings import forbidden_character, without_control
from hub.store import service

if TYPE_CHECKING:
    from hub.audit.recorder import Auditor

ROLES = ("coordinator", "auditor", "admin")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
MAX_USERNAME_LENGTH = 100
SIGN_IN_FAILED = "Wrong username or password, or the account is paused."

SignInOutcome = Literal["success", "wrong-password", "locked", "unknown-user", "disabled"]

_hasher = PasswordHasher()


class SignInError(HubError):
    """401: the sign-in failed; the message never says why (unknown, wrong, paused)."""

    status, code = 401, "login"

    def __init__(self) -> None:
        super().__init__(SIGN_IN_FAILED)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash with the current parameters, verified for unknown names so they take as long."""
    return _hasher.hash("not a password anyone has: carehub dummy")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_password(password: str) -> str:
    """An argon2id hash of `password`. Raises BadRequestError when it is too short or long."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadRequestError(
            f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise BadRequestError(
            f"The password may have at most {MAX_PASSWORD_LENGTH} characters.")
    return _hasher.hash(password)


def _check_organization(session: Session, organization_id: str) -> None:
    try:
        stored = service.read(session, Subject.hub_itself(), resource_type="Organization",
                              resource_id=organization_id)
    except (NotFoundError, GoneError):
        raise BadRequestError(
            f"There is no Organization/{organization_id} here; register the organisation "
            "first (hub org add).") from None
    if stored.body is not None and stored.body.get("active") is False:
        raise BadRequestError(f"Organization/{organization_id} is not active.")


_EMAIL = re.compile(r"[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")

def add_user(session: Session, *, username: str, password: str, role: str,
             organization_id: str | None, email: str | None = None) -> int:
    """Add a person and return the new user id; with `email`, they get the hub's notices
    (counts and a link, never health information). Raises BadRequestError (role, password,
    organisation: coordinators must name an active one; a malformed e-mail address) and
    ConflictError (name taken)."""
    username = username.strip()
    if not username or len(username) > MAX_USERNAME_LENGTH:
        raise BadRequestError(
            f"The username must have between 1 and {MAX_USERNAME_LENGTH} characters.")
    if (found := forbidden_character(username)) is not None:
        raise BadRequestError(f"The username holds the control character {found}.")
    if role not in ROLES:
        raise BadRequestError(f"The role must be one of {', '.join(ROLES)}, not '{role}'.")
    if role == "coordinator" and not organization_id:
        raise BadRequestError("A coordinator works for an organisation: name it (--org).")
    if organization_id:
        _check_organization(session, organization_id)
    if email is not None:
        email = email.strip()
        if not _EMAIL.fullmatch(email):
            raise BadRequestError(f"'{email[:100]}' is not an e-mail address (name@domain).")
    password_hash = hash_password(password)
    if session.scalar(select(UserRow.id).where(UserRow.username == username)) is not None:
        raise ConflictError(f"There is already a user named '{username}'.")
    user = UserRow(username=username, password_hash=password_hash, role=role,
                   organization_id=organization_id or None, active=True, failed_sign_ins=0,
                   locked_until_at=None, created_at=utcnow(), email=email or None)
    try:
        with session.begin_nested():  # a concurrent twin loses here, not at commit
            session.add(user)
            session.flush()
    except IntegrityError:
        raise ConflictError(f"There is already a user named '{username}'.") from None
    return user.id


def list_users(session: Session) -> list[UserRow]:
    """Every user, by username."""
    return list(session.scalars(select(UserRow).order_by(UserRow.username)))


def set_user_active(session: Session, username: str, active: bool) -> UserRow:
    """Enable or disable a user; disabling ends all their web sessions at once.
    Raises NotFoundError for an unknown username."""
    user = session.scalar(select(UserRow).where(UserRow.username == username))
    if user is None:
        raise NotFoundError(f"There is no user named '{username}'.")
    user.active = active
    if not active:
        session.execute(delete(WebSessionRow).where(WebSessionRow.user_id == user.id))
    session.flush()
    return user


def record_sign_in(session: Session, username: str, outcome: SignInOutcome, *,
                   auditor: Auditor | None, role: str | None = None,
                   address: str | None = None) -> None:
    """Record a sign-in attempt in the audit trail (DCM User Authentication / Login), in the
    caller's transaction, which commits also when the sign-in fails. Without an auditor
    (service-level use outside the web app) nothing is recorded."""
    if auditor is None:
        return
    name = username[:MAX_USERNAME_LENGTH] or "(empty)"
    auditor.event(session, sign_in_event(name, outcome, role=role, address=address),
                  agent=f"User/{name}", subtype=LOGIN)


def authenticate(session: Session, username: str, password: str, now: datetime, *,
                 max_failures: int = 5, lockout: int = 300, auditor: Auditor | None = None,
                 address: str | None = None) -> UserRow:
    """The user whose name and password these are. After `max_failures` wrong passwords in a
    row the account is paused for `lockout` seconds, when even the right one fails. Every
    attempt is recorded by `auditor` (record_sign_in).

    Raises SignInError, always with the same message. It records failures in `session`: the
    caller commits also when SignInError is raised.
    """
    username = without_control(username)  # no user has one; U+0000 was a 500 on PostgreSQL
    user = session.scalar(
        select(UserRow).where(UserRow.username == username).with_for_update())
    if user is None:
        _verify(_dummy_hash(), password)  # as slow as a known name
        record_sign_in(session, username, "unknown-user", auditor=auditor, address=address)
        raise SignInError
    # Verify even when the answer is already no, so time tells nothing about the account.
    right = _verify(user.password_hash, password)
    if not user.active:
        record_sign_in(session, username, "disabled", auditor=auditor, role=user.role,
                       address=address)
        raise SignInError
    if user.locked_until_at is not None and user.locked_until_at > now:
        record_sign_in(session, username, "locked", auditor=auditor, role=user.role,
                       address=address)
        raise SignInError
    if not right:
        user.failed_sign_ins += 1
        if user.failed_sign_ins >= max_failures:
            user.locked_until_at = now + timedelta(seconds=lockout)
            user.failed_sign_ins = 0
        session.flush()
        record_sign_in(session, username, "wrong-password", auditor=auditor, role=user.role,
                       address=address)
        raise SignInError
    user.failed_sign_ins = 0
    user.locked_until_at = None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    session.flush()
    record_sign_in(session, username, "success", auditor=auditor, role=user.role,
                   address=address)
    return user

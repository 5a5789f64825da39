"""People: adding them, passwords, the pause after repeated failures, switching them off."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

import hub.auth.users as users_mod
from hub.auth.subject import Subject
from hub.auth.users import (
    SIGN_IN_FAILED,
    SignInError,
    authenticate,
    list_users,
    set_user_active,
)
from hub.db.auth_models import UserRow, WebSessionRow
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.errors import BadRequestError, ConflictError, NotFoundError
from hub.store import service
from hub.ui.sessions import start_session
from tests.ui.conftest import PASSWORD, make_user


def _sign_in(database: Database, username: str, password: str = PASSWORD,
             now_offset: float = 0, at: datetime | None = None) -> UserRow | str:
    """authenticate() in a committed transaction (as the route does), now (or `at`): the
    user, or the SignInError message."""
    now = at or utcnow() + timedelta(seconds=now_offset)
    with database.session(write=True) as s:
        try:
            return authenticate(s, username, password, now)
        except SignInError as exc:
            return exc.diagnostics


def _row(database: Database, username: str) -> UserRow:
    with database.session(write=False) as s:
        row = s.scalar(select(UserRow).where(UserRow.username == username))
        assert row is not None
        return row


def test_password_is_stored_as_an_argon2id_hash(database: Database) -> None:
    make_user(database, "revisor")
    row = _row(database, "revisor")
    assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in row.password_hash
    assert row.role == "auditor"
    assert row.active
    assert row.failed_sign_ins == 0


def test_add_user_refuses_bad_input(database: Database, org_id: str) -> None:
    with pytest.raises(BadRequestError, match="at least 12"):
        make_user(database, "kort", password="elleve tegn")
    with pytest.raises(BadRequestError, match="role"):
        make_user(database, "sjef", role="superuser")
    with pytest.raises(BadRequestError, match="username"):
        make_user(database, "   ")
    with pytest.raises(BadRequestError, match="control character U\\+0000"):
        make_user(database, "ka\u0000ri")  # PostgreSQL cannot hold it; FHIR strings may not
    make_user(database, "ola", role="coordinator", organization_id=org_id)
    with pytest.raises(ConflictError, match="already"):
        make_user(database, "ola")
    assert [u.username for u in _all(database)] == ["ola"]


def _all(database: Database) -> list[UserRow]:
    with database.session(write=False) as s:
        return list_users(s)


def test_a_coordinator_needs_an_existing_active_organisation(database: Database,
                                                             org_id: str) -> None:
    with pytest.raises(BadRequestError, match="organisation"):
        make_user(database, "kari", role="coordinator")
    with pytest.raises(BadRequestError, match="no Organization/finnes-ikke"):
        make_user(database, "kari", role="coordinator", organization_id="finnes-ikke")
    with database.session(write=True) as s:
        service.delete_resource(s, Subject.hub_itself(), resource_type="Organization",
                                resource_id=org_id)
    with pytest.raises(BadRequestError, match=f"no Organization/{org_id}"):
        make_user(database, "kari", role="coordinator", organization_id=org_id)
    assert _all(database) == []


def test_an_inactive_organisation_is_refused(database: Database, org_id: str) -> None:
    with database.session(write=True) as s:
        org = service.read(s, Subject.hub_itself(), resource_type="Organization",
                           resource_id=org_id).body
        assert org is not None
        service.update(s, Subject.hub_itself(), resource_type="Organization",
                       resource_id=org_id, resource={**org, "active": False})
    with pytest.raises(BadRequestError, match="not active"):
        make_user(database, "kari", role="coordinator", organization_id=org_id)


def test_right_password_signs_in(database: Database, org_id: str) -> None:
    make_user(database, "kari", role="coordinator", organization_id=org_id)
    user = _sign_in(database, "kari")
    assert isinstance(user, UserRow)
    assert (user.username, user.role, user.organization_id) == ("kari", "coordinator", org_id)


def test_wrong_password_and_unknown_user_get_the_same_answer(database: Database) -> None:
    make_user(database, "revisor")
    assert _sign_in(database, "revisor", "feil passord her") == SIGN_IN_FAILED
    assert _sign_in(database, "ingen-slik", PASSWORD) == SIGN_IN_FAILED
    assert _row(database, "revisor").failed_sign_ins == 1
    assert SignInError().status == 401


def test_unknown_user_costs_one_password_hash_check_like_a_known_one(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown name must not answer faster than a known one (that would tell who has an
    account): both verify one argon2 hash. Counted, not timed, so load cannot make it flaky."""
    make_user(database, "revisor")
    checked: list[str] = []
    real = users_mod._verify

    def counting(password_hash: str, password: str) -> bool:
        checked.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(users_mod, "_verify", counting)
    assert _sign_in(database, "revisor", "feil passord her") == SIGN_IN_FAILED
    assert _sign_in(database, "ingen-slik", "feil passord her") == SIGN_IN_FAILED
    known, unknown = checked
    assert known.startswith("$argon2")
    assert unknown.startswith("$argon2")
    assert unknown != known  # the dummy hash, with the same cost parameters
    assert unknown.split("$")[3] == known.split("$")[3]


def test_repeated_failures_pause_the_account_and_the_pause_lifts(database: Database) -> None:
    make_user(database, "revisor")
    for _ in range(4):
        assert _sign_in(database, "revisor", "feil passord her") == SIGN_IN_FAILED
    assert isinstance(_sign_in(database, "revisor"), UserRow)  # success resets the count
    assert _row(database, "revisor").failed_sign_ins == 0
    for _ in range(5):
        assert _sign_in(database, "revisor", "feil passord her") == SIGN_IN_FAILED
    row = _row(database, "revisor")
    assert row.locked_until_at is not None
    assert row.locked_until_at > utcnow() + timedelta(seconds=290)
    # Paused: even the right password fails, with the same words.
    assert _sign_in(database, "revisor") == SIGN_IN_FAILED
    # Timed from the pause itself, not from the clock when this line runs (argon2 on a busy
    # machine takes seconds): a second before it lifts, and a second after.
    lifts = row.locked_until_at
    assert _sign_in(database, "revisor", at=lifts - timedelta(seconds=1)) == SIGN_IN_FAILED
    # The pause lifts after HUB_SIGNIN_LOCKOUT seconds.
    user = _sign_in(database, "revisor", at=lifts + timedelta(seconds=1))
    assert isinstance(user, UserRow)
    row = _row(database, "revisor")
    assert (row.failed_sign_ins, row.locked_until_at) == (0, None)


def test_limits_come_from_the_caller(database: Database) -> None:
    make_user(database, "revisor")
    now = utcnow()
    for _ in range(2):
        with database.session(write=True) as s, pytest.raises(SignInError):
            authenticate(s, "revisor", "feil passord her", now, max_failures=2, lockout=10)
    with database.session(write=True) as s, pytest.raises(SignInError):
        authenticate(s, "revisor", PASSWORD, now + timedelta(seconds=9), max_failures=2,
                     lockout=10)
    with database.session(write=True) as s:
        authenticate(s, "revisor", PASSWORD, now + timedelta(seconds=11), max_failures=2,
                     lockout=10)


def test_sign_in_rehashes_when_the_parameters_changed(database: Database) -> None:
    make_user(database, "revisor")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with database.session(write=True) as s:
        row = s.scalar(select(UserRow).where(UserRow.username == "revisor"))
        assert row is not None
        row.password_hash = weak
    assert isinstance(_sign_in(database, "revisor"), UserRow)
    rehashed = _row(database, "revisor").password_hash
    assert rehashed != weak
    assert not PasswordHasher().check_needs_rehash(rehashed)
    assert isinstance(_sign_in(database, "revisor"), UserRow)


def test_disabling_ends_sessions_and_sign_in(database: Database) -> None:
    make_user(database, "revisor")
    with database.session(write=True) as s:
        user = authenticate(s, "revisor", PASSWORD, utcnow())
        start_session(s, user, now=utcnow(), lifetime=60)
    with database.session(write=True) as s:
        set_user_active(s, "revisor", False)
    with database.session(write=False) as s:
        assert s.scalars(select(WebSessionRow)).all() == []
    assert _sign_in(database, "revisor") == SIGN_IN_FAILED
    with database.session(write=True) as s:
        set_user_active(s, "revisor", True)
    assert isinstance(_sign_in(database, "revisor"), UserRow)
    with database.session(write=True) as s, pytest.raises(NotFoundError):
        set_user_active(s, "ingen-slik", False)

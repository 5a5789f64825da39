"""Request plumbing shared by the routers: the database, the acting subject, the body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from hub.auth.subject import Subject
from hub.auth.tokens import subject_for_token
from hub.config import Settings
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.errors import PayloadTooLargeError, UnauthorizedError, UnsupportedMediaTypeError
from hub.fhir.jsonio import JSONDict, loads_object

T = TypeVar("T")
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    """The app's database."""
    db: Database = request.app.state.database
    return db


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]


async def get_subject(request: Request, db: DatabaseDep) -> Subject:
    """The client whose bearer token the request carries (`Authorization: Bearer <token>`).
    Raises UnauthorizedError (401, `WWW-Authenticate: Bearer`) when it is missing, unknown,
    expired, or its client is disabled."""
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthorizedError(
            "This request needs an access token (Authorization: Bearer <token>); get one at "
            "/auth/token, see /fhir/.well-known/smart-configuration.",
            headers={"WWW-Authenticate": 'Bearer realm="carehub"'})
    now = utcnow()
    subject = await in_transaction(db, lambda s: subject_for_token(s, token, now), write=False)
    if subject is None:
        raise UnauthorizedError(
            "The access token is unknown or has expired, or its client is disabled; get a new "
            "one at /auth/token.",
            headers={"WWW-Authenticate": 'Bearer realm="carehub", error="invalid_token"'})
    return subject


SubjectDep = Annotated[Subject, Depends(get_subject)]


async def in_transaction(db: Database, fn: Callable[[Session], T], *, write: bool) -> T:
    """Run `fn(session)` in one database transaction on a worker thread; commit on success."""

    def work() -> T:
        with db.session(write=write) as session:
            return fn(session)

    return await run_in_threadpool(work)


async def read_body(request: Request, settings: Settings) -> JSONDict:
    """The FHIR JSON body: 415 for other media types, 413 when too large, 400 unparsable."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in _JSON_TYPES:
        raise UnsupportedMediaTypeError(
            f"Send FHIR JSON (Content-Type: application/fhir+json), not '{ctype or 'nothing'}'.")
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"The body is {declared} bytes; the limit is {limit}.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"The body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return loads_object(b"".join(chunks))

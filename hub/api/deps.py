"""Request plumbing shared by the routers: the database, the acting subject, the body, and the
audit trail of every request (`audited_transaction`, `audit_failure`)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from hub.api.threads import in_thread
from hub.api.turns import WriteTurns
from hub.audit.events import TOKEN, Interaction, Outcome, agent_name, token_event
from hub.audit.recorder import NOTHING, Auditor, Touched, take_disclosures
from hub.audit.spool import ReadAudit
from hub.auth.subject import Subject
from hub.auth.tokens import subject_for_token
from hub.config import Settings
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.errors import (
    BadRequestError,
    BusyError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from hub.fhir.jsonio import JSONDict, loads, loads_object

T = TypeVar("T")
log = logging.getLogger("hub.audit")
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}
JSON_PATCH = "application/json-patch+json"


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    """The app's database."""
    db: Database = request.app.state.database
    return db


def get_auditor(request: Request) -> Auditor:
    """The app's auditor (one signing key per process)."""
    auditor: Auditor = request.app.state.auditor
    return auditor


# The dependencies are coroutines that wrap the plain getters: FastAPI runs a plain `def`
# dependency on a worker thread, and those hops (three a request) cost the event loop more
# CPU than the route's own work on a small message (bench/ingest.py, py-spy --gil).
async def _settings(request: Request) -> Settings:
    return get_settings(request)


async def _database(request: Request) -> Database:
    return get_database(request)


async def _auditor(request: Request) -> Auditor:
    return get_auditor(request)


SettingsDep = Annotated[Settings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_database)]
AuditorDep = Annotated[Auditor, Depends(_auditor)]


def get_read_audit(request: Request) -> ReadAudit:
    """Where the app commits the audit records of reads (hub/audit/spool.py)."""
    reads: ReadAudit = request.app.state.read_audit
    return reads


async def settle_reads(request: Request) -> None:
    """Move the audit records of reads committed so far from the spool into the trail, so
    that an auditor's query that follows sees them. Never raises (a failure is logged; the
    sealer moves them within HUB_SEAL_INTERVAL anyway)."""
    try:
        reads = get_read_audit(request)
        await in_thread(reads.move_all)
    except Exception:
        log.exception("could not move the audit records of reads into the trail")


async def get_subject(request: Request, db: DatabaseDep) -> Subject:
    """The client whose bearer token the request carries (`Authorization: Bearer <token>`),
    or, without an Authorization header, the person whose /ui session cookie it carries (kind
    user, no scopes: only what people may do, e.g. auditors reading AuditEvents).
    Raises UnauthorizedError (401, `WWW-Authenticate: Bearer`) when it is missing, unknown,
    expired, or its client is disabled. The subject is kept on request.state for the audit."""
    given = request.headers.getlist("authorization")
    if len(given) > 1:  # which one would speak for the caller is anyone's guess
        raise UnauthorizedError(
            "This request carries the Authorization header more than once; send one bearer "
            "token.", headers={"WWW-Authenticate": 'Bearer realm="carehub", '
                                                   'error="invalid_request"'})
    header = (given[0] if given else "").strip()
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header:
        person = await _session_subject(request, db)
        if person is not None:
            request.state.subject = person
            return person
    if scheme.lower() != "bearer" or not token:
        raise UnauthorizedError(
            "This request needs an access token (Authorization: Bearer <token>); get one at "
            "/auth/token, see /fhir/.well-known/smart-configuration.",
            headers={"WWW-Authenticate": 'Bearer realm="carehub"'})
    now = utcnow()
    subject = await in_thread(_subject_for_token, db, token, now)
    if subject is None:
        raise UnauthorizedError(
            "The access token is unknown or has expired, or its client is disabled; get a new "
            "one at /auth/token.",
            headers={"WWW-Authenticate": 'Bearer realm="carehub", error="invalid_token"'})
    request.state.subject = subject
    return subject


def _subject_for_token(db: Database, token: str, now: datetime) -> Subject | None:
    with db.one_read() as session:  # one statement: no transaction of its own
        return subject_for_token(session, token, now)


async def _session_subject(request: Request, db: Database) -> Subject | None:
    """The signed-in person of the request's web session cookie, or None."""
    from hub.ui.sessions import SESSION_COOKIE, find_session  # the UI builds on this module

    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    now = utcnow()
    signed_in = await in_transaction(db, lambda s: find_session(s, raw, now), write=False)
    return signed_in.subject if signed_in is not None else None


SubjectDep = Annotated[Subject, Depends(get_subject)]


async def in_transaction(db: Database, fn: Callable[[Session], T], *, write: bool) -> T:
    """Run `fn(session)` in one database transaction on a worker thread; commit on success."""

    def work() -> T:
        with db.session(write=write) as session:
            return fn(session)

    return await in_thread(work)


# --- the audit trail of requests ------------------------------------------------------------


def client_address(request: Request) -> str | None:
    """The caller's IP address as the server saw it."""
    return request.client.host if request.client else None


READ_INTERACTIONS: frozenset[Interaction] = frozenset(
    {"read", "vread", "history-instance", "search-type"})
"""Interactions that only read: their work runs in a read-only transaction."""


def audited_work(
    request: Request,
    db: Database,
    subject: Subject,
    fn: Callable[[Session], T],
    *,
    interaction: Interaction,
    resource_type: str | None,
    touched: Callable[[Session, T], Touched] = lambda _s, _r: NOTHING,
    query: str | None = None,
    operation: str | None = None,
    reads_only: bool = False,
) -> T:
    """Run `fn(session)` and record it in the audit trail: the consent gate's disclosure
    decisions (session.info["disclosures"]) and then the interaction itself, one record per
    patient of `touched(session, result)`. Blocks: call it on a worker thread
    (`audited_transaction` does), e.g. from a route that has more to do there first (one
    thread hop instead of two).

    A write (the default): one write transaction holds the work and its records and commits
    both. On SQLite that is a BEGIN IMMEDIATE transaction under the database's one write
    lock; on PostgreSQL the append is a plain insert that waits for no one (the sealer puts
    committed records into the tree later, hub/audit/seal.py).

    `reads_only` (read, vread, history, search: `fn` writes nothing): `fn` runs in a
    read-only transaction, which on SQLite (WAL) neither waits for writers nor holds them
    up, and its records are then committed apart (hub/audit/spool.py: on SQLite a spool file
    with a lock of its own) before this returns, so the answer goes out only once they are
    durable. If they cannot be committed this raises AuditUnavailableError (503): nothing is
    disclosed unaudited.

    When `fn` raises, no record is written here (a write's records roll back with it); the
    decisions it made are kept on request.state for the error handler, which records them
    with the failure (`audit_failure`).
    """
    auditor = get_auditor(request)
    address = client_address(request)
    request.state.audit_interaction = interaction
    request.state.audit_operation = operation
    with db.session(write=not reads_only) as session:
        try:
            result = fn(session)
            what = touched(session, result)
        except BaseException:
            request.state.pending_disclosures = take_disclosures(session)
            raise
        entries = [
            *auditor.disclosure_entries(take_disclosures(session), subject=subject,
                                        context=operation or interaction),
            *auditor.rest_entries(subject, interaction=interaction,
                                  resource_type=resource_type, touched=what, query=query,
                                  operation=operation, address=address)]
        if not reads_only:
            auditor.write(session, entries)
            return result
    get_read_audit(request).append(auditor.signer, entries)
    return result


def turns_of(request: Request) -> WriteTurns | None:
    """The process's turns for write requests (hub/api/turns.py; None: no limit)."""
    turns: WriteTurns | None = getattr(request.app.state, "write_turns", None)
    return turns


BUSY_RETRY_AFTER = 1
"""Seconds a write shed by HUB_WRITE_BACKLOG is asked to wait before it is sent again."""


async def in_write_turn(request: Request, work: Callable[[], T]) -> T:
    """Run a write request's `work` on a worker thread once this process has a turn for it
    (hub/api/turns.py: a bulkhead that narrows while the process serves reads); the others
    wait in the event loop, holding no thread. Reads never wait here, so that a burst of
    messages takes a bounded share of the process (its GIL, its database connections) and
    the people reading keep theirs (bench/mixed.py).

    A process holds at most HUB_WRITE_BACKLOG write requests (working or waiting); one more
    raises BusyError (503, Retry-After) before its work begins (nothing of it is written),
    so that an overload is shed where clients can see it instead of queued until they time
    out."""
    turns = turns_of(request)
    state = request.app.state
    backlog = get_settings(request).write_backlog
    held = getattr(state, "writes_held", 0)  # changed on the event loop's thread only
    if backlog and held >= backlog:
        raise BusyError(
            f"This hub process already holds {held} write requests, so this one was not "
            f"taken: nothing was done. Send it again in {BUSY_RETRY_AFTER} s; a message sent "
            "again with the same MessageHeader.id is taken only once.",
            headers={"Retry-After": str(BUSY_RETRY_AFTER)})
    state.writes_held = held + 1
    try:
        if turns is None:
            return await in_thread(work)
        async with turns.limiter:
            return await in_thread(work)
    finally:
        state.writes_held -= 1


async def audited_transaction(request: Request, db: Database, subject: Subject,
                              fn: Callable[[Session], T], *, reads_only: bool = False,
                              **options: Any) -> T:
    """`audited_work` on a worker thread, awaited from the event loop (what routes use);
    `options` are audited_work's others. A write waits its turn first (`in_write_turn`)."""
    work = functools.partial(audited_work, request, db, subject, fn, reads_only=reads_only,
                             **options)
    if reads_only:
        turns = turns_of(request)
        if turns is None:
            return await in_thread(work)
        with turns.reading():  # writes get fewer turns while this read is in flight
            return await in_thread(work)
    return await in_write_turn(request, work)


_INSTANCE_INTERACTIONS: dict[str, Interaction] = {
    "GET": "read", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
_AUDITED_PREFIXES = ("/fhir", "/auth/token")
_NOT_AUDITED = ("/fhir/metadata", "/fhir/.well-known/")


def is_audited(path: str) -> bool:
    """Whether requests to `path` leave audit records (all of /fhir and /auth/token, but not
    the CapabilityStatement and the SMART configuration)."""
    if path.startswith(_NOT_AUDITED) or path.rstrip("/") == "/fhir/metadata":
        return False
    return any(path == p or path.startswith(p + "/") for p in _AUDITED_PREFIXES)


def _interaction_of(request: Request) -> tuple[Interaction, str | None, str | None, str | None]:
    """(interaction, resource type, resource id, operation) of a /fhir request, from its URL;
    what the route decided (audited_transaction) wins."""
    segments = [s for s in request.url.path.removeprefix("/fhir").split("/") if s]
    method = request.method.upper()
    operation = next((s for s in reversed(segments) if s.startswith("$")), None)
    rtype = segments[0] if segments and segments[0][:1].isupper() else None
    rid = segments[1] if rtype and len(segments) > 1 and not segments[1].startswith(("$", "_")) \
        else None
    interaction: Interaction = "operation"
    n, tail = len(segments), segments[2:]
    if operation is not None:
        pass
    elif n == 0 and method == "POST":
        interaction = "transaction"
    elif n == 1 and method in ("GET", "POST"):
        interaction = "search-type" if method == "GET" else "create"
    elif n == 2 and segments[1] == "_search":
        interaction = "search-type"
    elif n == 2:
        interaction = _INSTANCE_INTERACTIONS.get(method, "operation")
    elif tail == ["_history"]:
        interaction = "history-instance"
    elif n == 4 and tail[0] == "_history":
        interaction = "vread"
    decided: Interaction | None = getattr(request.state, "audit_interaction", None)
    decided_op: str | None = getattr(request.state, "audit_operation", None)
    return decided or interaction, rtype, rid, decided_op or operation


async def record_apart(request: Request, write: Callable[[Session, Auditor], object]) -> None:
    """Run `write(session, auditor)` in a short write transaction of its own, for what must
    be recorded although the request's own transaction rolled back (or never began). Never
    raises: the answer goes out whatever happens here; a failure is logged."""
    try:
        auditor = get_auditor(request)
        db = get_database(request)
    except AttributeError:  # the app is not started (no lifespan): nothing to write to
        log.error("no audit trail to record %s %s in", request.method, request.url.path)
        return

    def work() -> None:
        with db.session(write=True) as session:
            write(session, auditor)

    try:
        await in_thread(work)
    except Exception:
        log.exception("could not record %s %s in the audit trail", request.method,
                      request.url.path)


async def audit_failure(request: Request, status: int, text: str, *,
                        apart_from_writes: bool = False) -> None:
    """Record a request that failed (HubError or worse) in a short write transaction of its
    own, the request's own having rolled back: who (if known), what was asked, the status
    (outcome 4 for 4xx, 8 for 5xx), and the disclosure decisions it made on the way. Never
    raises: the error response goes out whatever happens here.

    A read, and a write shed unread (`apart_from_writes`: BusyError, under an overload of
    writes), is recorded where reads are (hub/audit/spool.py), off the main write lock."""
    if not is_audited(request.url.path):
        return
    subject: Subject | None = getattr(request.state, "subject", None)
    pending: list[dict[str, Any]] = getattr(request.state, "pending_disclosures", None) or []
    interaction, rtype, rid, operation = _interaction_of(request)
    touched = Touched((f"{rtype}/{rid}",) if rtype and rid else (),
                      (f"Patient/{rid}",) if rtype == "Patient" and rid else ())
    outcome: Outcome = "8" if status >= 500 else "4"
    query = request.url.query or None
    what = f"{request.method} {request.url.path}: {status}"
    address = client_address(request)

    if apart_from_writes or (interaction in READ_INTERACTIONS
                             and request.method in ("GET", "HEAD", "POST")):
        # A read that failed is recorded where reads are, off the main write lock.
        def spool() -> None:
            auditor = get_auditor(request)
            get_read_audit(request).append(auditor.signer, [
                *auditor.disclosure_entries(pending, subject=subject,
                                            context=operation or interaction),
                *auditor.rest_entries(subject, interaction=interaction, resource_type=rtype,
                                      touched=touched, outcome=outcome, query=query,
                                      description=text, operation=operation,
                                      address=address, request=what)])

        try:
            await in_thread(spool)
        except Exception:
            log.exception("could not record %s %s in the audit trail", request.method,
                          request.url.path)
        return

    def write(session: Session, auditor: Auditor) -> None:
        if request.url.path.startswith("/auth/"):
            auditor.event(session, token_event(None, organization_id=None, outcome=outcome,
                                               reason=text, address=address),
                          agent=agent_name(None), subtype=TOKEN)
            return
        auditor.write(session, [
            *auditor.disclosure_entries(pending, subject=subject,
                                        context=operation or interaction),
            *auditor.rest_entries(subject, interaction=interaction, resource_type=rtype,
                                  touched=touched, outcome=outcome, query=query,
                                  description=text, operation=operation, address=address,
                                  request=what)])

    await record_apart(request, write)


async def read_body(request: Request, settings: Settings) -> JSONDict:
    """The FHIR JSON body: 415 for other media types, 413 when too large, 400 unparsable."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in _JSON_TYPES:
        raise UnsupportedMediaTypeError(
            f"Send FHIR JSON (Content-Type: application/fhir+json), not '{ctype or 'nothing'}'.")
    return loads_object(await _read_bytes(request, settings))


FORM = "application/x-www-form-urlencoded"


async def read_search_form(request: Request, settings: Settings) -> list[tuple[str, str]]:
    """The criteria of `POST [type]/_search`: its form body's pairs ([] for no body, the
    criteria then all in the URL); 415 for a body of another media type, which would
    otherwise be dropped and the search run unfiltered; 413 when too large, 400 not UTF-8."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await _read_bytes(request, settings)
    if ctype != FORM:
        if not raw:
            return []
        raise UnsupportedMediaTypeError(
            f"A search by POST takes its criteria as a form (Content-Type: {FORM}) or in the "
            f"URL, not as '{ctype or 'a body without Content-Type'}'.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("The search form is not UTF-8.") from None
    return parse_qsl(text, keep_blank_values=True)


async def read_json_patch(request: Request, settings: Settings) -> list[JSONDict]:
    """A JSON Patch body (RFC 6902): 415 for other media types, 413 when too large, 400 when
    it is not a list of operations."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != JSON_PATCH:
        raise UnsupportedMediaTypeError(
            f"PATCH takes a JSON Patch (Content-Type: {JSON_PATCH}), not "
            f"'{ctype or 'nothing'}'.")
    ops = loads(await _read_bytes(request, settings))
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise BadRequestError("A JSON Patch is a JSON array of operation objects "
                              '([{"op": "replace", "path": "/status", "value": "..."}]).')
    return ops


async def _read_bytes(request: Request, settings: Settings) -> bytes:
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding not in ("", "identity"):
        # RFC 9110 15.5.16: a Content-Encoding the server does not support is a 415 (it was
        # read as the raw bytes, "not UTF-8 text"); the hub decodes none, so no body can
        # inflate past the size limit.
        raise UnsupportedMediaTypeError(
            f"The body is sent with Content-Encoding '{coding[:40]}', which the hub does not "
            "decode; send it unencoded.", headers={"Accept-Encoding": "identity"})
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
    return b"".join(chunks)

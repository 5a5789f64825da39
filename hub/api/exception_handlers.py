"""Every error leaves the hub as an OperationOutcome with plain-language diagnostics, and is
recorded in the audit trail (deps.audit_failure) when it ends a /fhir request."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from hub.api.deps import audit_failure
from hub.api.responses import FhirResponse
from hub.errors import BusyError, HubError, Issue, operation_outcome

log = logging.getLogger("hub.api")

RETRY_AFTER = 5
"""Seconds a client is asked to wait before sending again while the database is away."""

CLIENT_CLOSED = 499
"""The status recorded for a request whose client left before sending its body."""

_HTTP_TEXT = {404: "There is nothing at this address.",
              405: "This method is not supported at this address."}


PageMaker = Callable[[Request, int, str], Response]
"""Makes the HTML page of an error: (request, status, sentence) -> response."""


def install(app: FastAPI, *, pages: tuple[str, PageMaker] | None = None) -> None:
    """Register the handlers on `app`. With `pages` (a path prefix and what makes its error
    pages), an address under that prefix that nothing answers (404, 405) gets an HTML page
    instead of an OperationOutcome: the web pages' routes answer their own errors so, and a
    person who mistypes an address of theirs is at a browser."""

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> FhirResponse:
        await audit_failure(request, exc.status, exc.diagnostics,
                            apart_from_writes=isinstance(exc, BusyError))
        return FhirResponse(exc.outcome(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> FhirResponse:
        text = "; ".join(str(e.get("msg")) for e in exc.errors()) or "The request is malformed."
        await audit_failure(request, 400, text)
        return FhirResponse(operation_outcome([Issue(text, "structure")]), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        text = _HTTP_TEXT.get(exc.status_code, str(exc.detail))
        await audit_failure(request, exc.status_code, text)
        if pages is not None and _under(request.url.path, pages[0]):
            page = pages[1](request, exc.status_code, text)
            page.headers.update(getattr(exc, "headers", None) or {})
            return page
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        return FhirResponse(operation_outcome([Issue(text, code)]),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # A client that closes the connection before its body is read (a timeout, mostly)
        # is no failure of the hub: one line, no incident, no traceback; and no answer, as
        # no one is there to read it (499, nginx's "client closed request", for the record).
        log.info("client closed the connection during %s %s before sending its whole body; "
                 "nothing was done", request.method, request.url.path)
        await audit_failure(request, CLIENT_CLOSED, "The client closed the connection before "
                            "sending the whole request; nothing was changed.")
        return Response(status_code=CLIENT_CLOSED)

    async def _database_away(request: Request, exc: Exception) -> FhirResponse:
        # PostgreSQL restarting or failing over, a connection cut, a lock or statement
        # timeout: worth sending again, unlike a 500. Whether a commit whose answer was lost
        # took effect cannot be known here; a message sent again is taken once (its id).
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                    type(exc).__name__)
        text = ("The hub's database could not be reached just now, so the request may not "
                "have been carried out. Send it again in a few seconds; a message sent again "
                "with the same MessageHeader.id is taken only once.")
        await audit_failure(request, 503, text)
        return FhirResponse(operation_outcome([Issue(text, "transient")]), status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER)})

    app.add_exception_handler(OperationalError, _database_away)
    app.add_exception_handler(InterfaceError, _database_away)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> FhirResponse:
        incident = uuid.uuid4()
        log.exception("incident %s on %s %s", incident, request.method, request.url.path)
        text = (f"The hub failed to handle this request (incident {incident}); nothing was "
                "changed. The operators have the details.")
        await audit_failure(request, 500, text)
        return FhirResponse(operation_outcome([Issue(text, "exception", "fatal")]),
                            status_code=500)

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> FhirResponse:
        # The last line of defence: what comes in is checked where it comes in (bodies in
        # validation, search values in the query parser, ids, client ids and user names where
        # they are looked up), so this is text that escaped those checks. PostgreSQL's driver
        # refuses U+0000 before sending anything, and the transaction rolls back.
        if "NUL" not in str(exc.orig):
            return await _unexpected(request, exc)
        log.warning("U+0000 in %s %s reached the database", request.method, request.url.path)
        text = ("The request holds the character U+0000 (%00 in a URL), which no FHIR value "
                "and nothing the hub stores may hold; nothing was changed.")
        await audit_failure(request, 400, text)
        return FhirResponse(operation_outcome([Issue(text, "value")]), status_code=400)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")

"""SMART Backend Services endpoints: the token endpoint and the SMART configuration.

Both need no token. The token endpoint speaks OAuth, not FHIR: its errors are
`{"error", "error_description"}` bodies, never OperationOutcomes. Every token request is
recorded in the audit trail: an issued token in the transaction that stores it, a refusal in a
short transaction of its own (naming the client the assertion claimed, marked unverified).
"""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from hub.api.deps import (
    DatabaseDep,
    SettingsDep,
    client_address,
    get_auditor,
    in_transaction,
    record_apart,
)
from hub.audit.events import TOKEN, agent_name, token_event
from hub.auth import tokens
from hub.db.types import utcnow
from hub.errors import BadRequestError
from hub.fhir import jsonio

router = APIRouter()

_FORM = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_MAX_FORM_BYTES = 64 * 1024


def _oauth_error(exc: tokens.OAuthError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=_NO_STORE)


def _claimed_client(assertion: str | None) -> str | None:
    """The client_id (iss) an assertion claims, unverified; None when unreadable."""
    parts = (assertion or "").split(".")
    if len(parts) != 3 or len(assertion or "") > tokens.MAX_ASSERTION_CHARS:
        return None
    try:
        claims = jsonio.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, BadRequestError):
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) and 0 < len(iss) <= 64 else None


async def _refused(request: Request, exc: tokens.OAuthError,
                   assertion: str | None = None) -> JSONResponse:
    """Record the refusal in the audit trail (a transaction of its own), then answer it."""
    claimed = _claimed_client(assertion)
    event = token_event(claimed, organization_id=None, outcome="4",
                        reason=f"{exc.error}: {exc.description}", verified=False,
                        address=client_address(request))
    agent = f"Unverified/{claimed}" if claimed else agent_name(None)
    await record_apart(request, lambda session, auditor: auditor.event(
        session, event, agent=agent, subtype=TOKEN))
    return _oauth_error(exc)


@router.post("/auth/token")
async def token(request: Request, db: DatabaseDep, settings: SettingsDep) -> JSONResponse:
    """Trade a signed client assertion for a bearer token (client_credentials grant)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != _FORM:
        return await _refused(request, tokens.OAuthError(
            "invalid_request", f"Send the token request as {_FORM}, not "
            f"'{ctype or 'nothing'}'."))
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > _MAX_FORM_BYTES:
        return await _refused(request, tokens.OAuthError(
            "invalid_request", "The request is too large."))
    form = await request.form()
    pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    names = [k for k, _ in pairs]
    repeated = sorted({k for k in names if names.count(k) > 1})
    if repeated:
        return await _refused(request, tokens.OAuthError(
            "invalid_request", f"Each parameter may appear once; repeated: {', '.join(repeated)}."))
    fields = dict(pairs)
    url = tokens.token_url(settings)
    auditor = get_auditor(request)
    address = client_address(request)
    now = utcnow()

    def issue(session: Session) -> dict[str, object]:
        answer = tokens.issue_token(session, form=fields, token_url=url, settings=settings,
                                    now=now)
        client = tokens.subject_for_token(session, str(answer["access_token"]), now)
        auditor.event(session, token_event(
            client.id if client else None,
            organization_id=client.organization_id if client else None, outcome="0",
            scope=str(answer["scope"]), address=address), agent=agent_name(client),
            subtype=TOKEN)
        return answer

    try:
        answer = await in_transaction(db, issue, write=True)
    except tokens.OAuthError as exc:
        return await _refused(request, exc, fields.get("client_assertion"))
    return JSONResponse(answer, headers=_NO_STORE)


@router.get("/fhir/.well-known/smart-configuration")
async def smart_configuration(settings: SettingsDep) -> JSONResponse:
    """How a system gets a token here (SMART App Launch 2.0, Backend Services)."""
    return JSONResponse({
        "token_endpoint": tokens.token_url(settings),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(tokens.KTY_FOR_ALG),
        "grant_types_supported": [tokens.GRANT_TYPE],
        "scopes_supported": tokens.SCOPES_SUPPORTED,
        "capabilities": ["client-confidential-asymmetric"],
    })

"""SMART Backend Services endpoints: the token endpoint and the SMART configuration.

Both need no token. The token endpoint speaks OAuth, not FHIR: its errors are
`{"error", "error_description"}` bodies, never OperationOutcomes.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hub.api.deps import DatabaseDep, SettingsDep, in_transaction
from hub.auth import tokens

router = APIRouter()

_FORM = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_MAX_FORM_BYTES = 64 * 1024


def _oauth_error(exc: tokens.OAuthError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=_NO_STORE)


@router.post("/auth/token")
async def token(request: Request, db: DatabaseDep, settings: SettingsDep) -> JSONResponse:
    """Trade a signed client assertion for a bearer token (client_credentials grant)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != _FORM:
        return _oauth_error(tokens.OAuthError(
            "invalid_request", f"Send the token request as {_FORM}, not "
            f"'{ctype or 'nothing'}'."))
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > _MAX_FORM_BYTES:
        return _oauth_error(tokens.OAuthError("invalid_request", "The request is too large."))
    form = await request.form()
    pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    names = [k for k, _ in pairs]
    repeated = sorted({k for k in names if names.count(k) > 1})
    if repeated:
        return _oauth_error(tokens.OAuthError(
            "invalid_request", f"Each parameter may appear once; repeated: {', '.join(repeated)}."))
    fields = dict(pairs)
    url = tokens.token_url(settings)
    try:
        answer = await in_transaction(db, lambda s: tokens.issue_token(
            s, form=fields, token_url=url, settings=settings), write=True)
    except tokens.OAuthError as exc:
        return _oauth_error(exc)
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

"""SMART Backend Services tokens: a client trades a signed assertion for a short-lived bearer
token (RFC 6749 client_credentials with an RFC 7523 private_key_jwt assertion).

The assertion's header is read before anything is trusted only to choose the key: the client
(iss) must be registered and active, the kid must name a key in its JWKS, and that key's type
must fit the algorithm (RS384 or ES384, nothing else). Only then is the signature checked, and
only the verified claims count. Every jti is recorded until its assertion would have expired, so
an assertion works once, also across processes (the record's primary key decides a race).

Tokens are opaque random strings; the database holds their SHA-256 only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.auth_models import CLIENT_ID_RE, AccessTokenRow, ClientRow, UsedAssertionRow
from hub.db.direct import Direct
from hub.db.types import UTCDateTime, utcnow
from hub.errors import BadRequestError, GoneError, NotFoundError
from hub.fhir import jsonio
from hub.store import service
from hub.store.types import SERVED

GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
KTY_FOR_ALG = {"RS384": "RSA", "ES384": "EC"}
"""The signing algorithms accepted, and the key type each needs."""
MAX_ASSERTION_LIFETIME = 300
"""Seconds an assertion's exp may lie ahead (plus the clock skew)."""
MAX_TOKEN_LIFETIME = 300
MAX_ASSERTION_CHARS = 16 * 1024
MAX_JTI_CHARS = 255
MAX_TOKEN_CHARS = 512
MAX_SCOPE_CHARS = 2000
SCOPES_SUPPORTED = ["system/*.read", "system/*.write", "system/*.*"]
_SCOPE_RE = re.compile(r"^system/(?P<type>\*|[A-Z][A-Za-z]+)\.(?:read|write|\*)\Z")


class OAuthError(Exception):
    """A token request refused; the route answers `{"error", "error_description"}`."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        """The OAuth error response body."""
        return {"error": self.error, "error_description": self.description}


def _invalid_client(description: str, status: int = 400) -> OAuthError:
    return OAuthError("invalid_client", description, status)


def token_url(settings: Settings) -> str:
    """The token endpoint's absolute URL: what an assertion's `aud` must be."""
    return settings.base_url.rstrip("/") + "/auth/token"


def token_hash(token: str) -> str:
    """The stored form of a bearer token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_scope(scope: str) -> list[str]:
    """The requested scopes, each `system/<Type or *>.<read|write|*>`, repeats dropped.
    Raises OAuthError(invalid_scope)."""
    items = list(dict.fromkeys(scope.split()))
    if not items:
        raise OAuthError("invalid_scope", "Ask for at least one scope, e.g. 'system/*.read'.")
    for item in items:
        m = _SCOPE_RE.match(item)
        if m is None:
            raise OAuthError("invalid_scope", f"'{item[:100]}' is not a scope this hub grants; "
                             "use system/<Type or *>.<read|write|*>.")
        if m["type"] != "*" and m["type"] not in SERVED:
            raise OAuthError("invalid_scope",
                             f"'{item}' names {m['type']}, which this hub does not serve.")
    if len(" ".join(items)) > MAX_SCOPE_CHARS:
        raise OAuthError("invalid_scope", f"The scope is longer than {MAX_SCOPE_CHARS} "
                         "characters; ask for system/*.read or similar instead of every type.")
    return items


def _segment(part: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = jsonio.loads(raw, what=f"The client assertion's {what}")
    except BadRequestError as exc:
        raise _invalid_client(exc.diagnostics) from None
    except (ValueError, binascii.Error):
        raise _invalid_client(f"The client assertion's {what} is not base64url JSON.") from None
    if not isinstance(value, dict):
        raise _invalid_client(f"The client assertion's {what} is not a JSON object.")
    return value


def _unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, not yet trusted: used only to find the client and its key."""
    if len(assertion) > MAX_ASSERTION_CHARS:
        raise _invalid_client("The client assertion is too large.")
    parts = assertion.split(".")
    if len(parts) != 3:
        raise _invalid_client("The client assertion is not a signed JWT (three dot-separated "
                              "parts); encrypted or unsigned assertions are not accepted.")
    return _segment(parts[0], "header"), _segment(parts[1], "payload")


def _choose_key(client: ClientRow, header: dict[str, Any]) -> tuple[str, RSAKey | ECKey]:
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in KTY_FOR_ALG:
        raise _invalid_client(f"The client assertion is signed with {str(alg)[:20]!r}; sign "
                              "it with RS384 or ES384.")
    if not isinstance(kid, str) or not kid:
        raise _invalid_client("The client assertion's header has no 'kid' naming the key it "
                              "was signed with.")
    keys = json.loads(client.jwks).get("keys", [])
    found = next((k for k in keys if isinstance(k, dict) and k.get("kid") == kid), None)
    if found is None:
        raise _invalid_client(f"The client has no key with kid {kid[:100]!r}; register it "
                              "first.", 401)
    if found.get("kty") != KTY_FOR_ALG[alg]:
        raise _invalid_client(f"Key {kid!r} is a {found.get('kty')} key; {alg} needs an "
                              f"{KTY_FOR_ALG[alg]} key.", 401)
    try:
        key = RSAKey.import_key(found) if alg == "RS384" else ECKey.import_key(found)
    except (JoseError, ValueError, TypeError):
        raise _invalid_client(f"Key {kid!r} of this client cannot be used.", 401) from None
    return alg, key


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim, None when absent."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid_client(f"The client assertion's '{name}' is not a number of seconds.")
    return float(value)


def _check_claims(claims: Mapping[str, Any], *, client_id: str, aud: str, now: float,
                  skew: int) -> tuple[str, float]:
    """The jti and exp of verified claims. Raises OAuthError(invalid_client)."""
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise _invalid_client("The client assertion's 'iss' and 'sub' must both be the "
                              "client_id.")
    audience = claims.get("aud")
    if not (audience == aud or (isinstance(audience, list) and aud in audience)):
        raise _invalid_client(f"The client assertion's 'aud' must be the token URL {aud}.")
    exp = _number(claims, "exp")
    if exp is None:
        raise _invalid_client("The client assertion has no 'exp' claim.")
    if exp <= now - skew:
        raise _invalid_client("The client assertion has expired.")
    if exp > now + MAX_ASSERTION_LIFETIME + skew:
        raise _invalid_client(f"The client assertion's 'exp' is more than "
                              f"{MAX_ASSERTION_LIFETIME} seconds ahead.")
    iat = _number(claims, "iat")
    if iat is not None and iat > now + skew:
        raise _invalid_client("The client assertion's 'iat' lies in the future.")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf > now + skew:
        raise _invalid_client("The client assertion is not valid yet ('nbf').")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
        raise _invalid_client(f"The client assertion needs a 'jti' of 1 to {MAX_JTI_CHARS} "
                              "characters, never used before.")
    return jti, exp


def _organization_active(session: Session, organization_id: str) -> bool:
    try:
        stored = service.read(session, Subject.hub_itself(), resource_type="Organization",
                              resource_id=organization_id)
    except (NotFoundError, GoneError):
        return False
    return stored.body is None or stored.body.get("active") is not False


def _authenticate(session: Session, assertion: str, *, aud: str, now: datetime,
                  skew: int) -> tuple[ClientRow, str, float]:
    """The client the assertion proves, with the assertion's jti and exp."""
    header, unverified = _unverified(assertion)
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or not client_id:
        raise _invalid_client("The client assertion has no 'iss' (the client_id).")
    # Only a client_id a client can have is looked up (one with U+0000 was a 500 on
    # PostgreSQL).
    client = session.get(ClientRow, client_id) if CLIENT_ID_RE.match(client_id) else None
    if client is None:
        raise _invalid_client("No client is registered under this client_id.", 401)
    if not client.active:
        raise _invalid_client("This client is disabled.", 401)
    alg, key = _choose_key(client, header)
    try:
        token = jwt.decode(assertion, key, algorithms=[alg])
    except BadSignatureError:
        raise _invalid_client("The client assertion's signature does not verify.", 401) from None
    except JoseError as exc:
        raise _invalid_client(f"The client assertion cannot be verified ({exc.error}).",
                              401) from None
    jti, exp = _check_claims(token.claims, client_id=client_id, aud=aud,
                             now=now.timestamp(), skew=skew)
    if not _organization_active(session, client.organization_id):
        raise _invalid_client("The organisation this client acts for is not active.", 401)
    return client, jti, exp


def _prune(session: Session, now: datetime) -> None:
    session.execute(delete(UsedAssertionRow).where(UsedAssertionRow.expires_at < now))
    session.execute(delete(AccessTokenRow).where(AccessTokenRow.expires_at < now))


def issue_token(session: Session, *, form: Mapping[str, str], token_url: str,
                settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """Answer a token request (the form of POST /auth/token) with a bearer token.
    Raises OAuthError: invalid_request, unsupported_grant_type, invalid_client (400, or 401
    when the client or its key is unknown, disabled, or the signature fails), invalid_scope."""
    now = now or utcnow()
    skew = settings.auth_clock_skew
    _prune(session, now)
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "The request has no grant_type.")
    if grant_type != GRANT_TYPE:
        raise OAuthError("unsupported_grant_type",
                         f"Only grant_type={GRANT_TYPE} is supported here.")
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise _invalid_client(f"client_assertion_type must be {ASSERTION_TYPE}.")
    assertion = form.get("client_assertion")
    if not assertion:
        raise _invalid_client("The request has no client_assertion.")
    client, jti, exp = _authenticate(session, assertion, aud=token_url, now=now, skew=skew)
    named = form.get("client_id")
    if named and named != client.id:
        raise _invalid_client("client_id differs from the client assertion's 'iss'.")
    scopes = parse_scope(form.get("scope", ""))
    try:
        with session.begin_nested():
            session.execute(insert(UsedAssertionRow).values(
                client_id=client.id, jti=jti,
                expires_at=datetime.fromtimestamp(exp + skew, UTC)))
    except IntegrityError:
        raise _invalid_client("This client assertion (its jti) was used before; make a new "
                              "one for every token request.") from None
    lifetime = max(1, min(MAX_TOKEN_LIFETIME, settings.token_lifetime))
    token = secrets.token_urlsafe(32)
    scope = " ".join(scopes)
    session.execute(insert(AccessTokenRow).values(
        token_hash=token_hash(token), client_id=client.id, scope=scope, issued_at=now,
        expires_at=now + timedelta(seconds=lifetime)))
    return {"access_token": token, "token_type": "bearer", "expires_in": lifetime,
            "scope": scope}


# Built once: every request runs it, and building it cost more than running it.
_SUBJECT_FOR_TOKEN = Direct(
    select(AccessTokenRow.client_id, AccessTokenRow.scope, ClientRow.organization_id)
    .join(ClientRow, ClientRow.id == AccessTokenRow.client_id)
    .where(AccessTokenRow.token_hash == bindparam("token_hash"),
           AccessTokenRow.expires_at > bindparam("now", type_=UTCDateTime()),
           ClientRow.active.is_(True)))


def subject_for_token(session: Session, token: str, now: datetime) -> Subject | None:
    """The client a bearer token stands for; None when the token is unknown, expired, or its
    client is disabled."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    rows = _SUBJECT_FOR_TOKEN.rows(session.connection(),
                                   {"token_hash": token_hash(token), "now": now})
    if not rows:
        return None
    client_id, scope, organization_id = rows[0]
    return Subject(kind="client", id=client_id, organization_id=organization_id,
                   scopes=frozenset(scope.split()))

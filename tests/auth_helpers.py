"""Keys, client assertions and real bearer tokens for tests (SMART Backend Services)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, cast

from fastapi import FastAPI
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from hub.auth.clients import register_client
from hub.auth.subject import Subject
from hub.auth.tokens import ASSERTION_TYPE, token_url
from hub.db.engine import Database
from hub.store import service
from tests.factories import organization

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def make_es384_key(kid: str) -> tuple[ECKey, dict[str, Any]]:
    """A new EC P-384 private key, and a JWKS holding its public half."""
    key = ECKey.generate_key("P-384", parameters={"kid": kid})
    return key, {"keys": [key.as_dict(private=False)]}


def make_rs384_key(kid: str) -> tuple[RSAKey, dict[str, Any]]:
    """A new 2048-bit RSA private key, and a JWKS holding its public half."""
    key = RSAKey.generate_key(2048, parameters={"kid": kid})
    return key, {"keys": [key.as_dict(private=False)]}


def client_assertion(private_key: ECKey | RSAKey, client_id: str, token_url: str, *,
                     alg: str = "ES384", kid: str | None = None, exp_in: int = 120,
                     jti: str | None = None, **overrides: Any) -> str:
    """A signed client assertion. `overrides` replace claims; a None value drops the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": token_url,
                              "exp": now + exp_in, "iat": now, "jti": jti or str(uuid.uuid4())}
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    header = {"alg": alg, "typ": "JWT", "kid": kid or private_key.kid}
    return jwt.encode(header, claims, private_key, algorithms=[alg])


def token_form(assertion: str, scope: str = "system/*.*") -> dict[str, str]:
    """The form of a token request carrying `assertion`."""
    return {"grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}


def ensure_organization(database: Database, org_id: str, orgnr: str = "964969590") -> None:
    """Create Organization/org_id as the hub itself unless it exists."""
    hub = Subject.hub_itself()
    with database.session(write=True) as s:
        if not service.exists(s, hub, resource_type="Organization", resource_id=org_id):
            service.create(s, hub, resource=organization(orgnr, name=f"Organisation {org_id}"),
                           assigned_id=org_id)


def register(database: Database, *, org_id: str, jwks: dict[str, Any],
             name: str = "test system") -> str:
    """Register a client with `jwks` for Organization/org_id (created if missing)."""
    ensure_organization(database, org_id)
    with database.session(write=True) as s:
        return register_client(s, organization_id=org_id, jwks_json=json.dumps(jwks), name=name)


def register_and_token(client: TestClient, database: Database, *, org_id: str,
                       scope: str = "system/*.*") -> str:
    """A real access token: the organisation (if missing) and a client with a fresh ES384 key
    are registered, and a signed assertion is traded for the token at POST /auth/token."""
    key, jwks = make_es384_key(f"key-{uuid.uuid4().hex[:8]}")
    client_id = register(database, org_id=org_id, jwks=jwks)
    url = token_url(cast(FastAPI, client.app).state.settings)
    response = client.post("/auth/token", data=token_form(
        client_assertion(key, client_id, url), scope), headers=FORM)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token

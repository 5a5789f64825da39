"""The demo clients' keys on disk, and trading them for an access token (SMART Backend Services).

Each demo organisation's system has an ES384 key pair in the demo directory: the private key
(PEM, mode 0600) that signs its client assertions, and the public JWKS the hub holds for it.
`clients.json` there names, per organisation, the client_id, the key's kid and files, and the
token URL, so that `hub demo token ORG` (or any SMART client) can get a token.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENTS_FILE = "clients.json"
ALG = "ES384"


@dataclass(frozen=True)
class DemoClient:
    """One demo system: the organisation it acts for and where its key is."""

    organization_id: str
    client_id: str
    name: str
    kid: str
    key_file: str
    jwks_file: str

    def private_key(self) -> ECKey:
        """The client's private signing key."""
        return ECKey.import_key(Path(self.key_file).read_bytes())

    def public_jwks(self) -> str:
        """The JWKS (public half) registered for the client."""
        return Path(self.jwks_file).read_text(encoding="utf-8")


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by the owner only (replacing any older file)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_private_json(path: Path, body: Any) -> None:
    """Write `body` as JSON to `path`, readable by the owner only."""
    _write_private(path, (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode())


def ensure_key(directory: Path, *, organization_id: str, client_id: str,
               name: str) -> tuple[DemoClient, bool]:
    """The client's key pair in `directory`, made now unless both files are there; and
    whether it was made now (then the hub must be given the new JWKS)."""
    key_file = directory / f"{organization_id}.key.pem"
    jwks_file = directory / f"{organization_id}.jwks.json"
    made = not (key_file.is_file() and jwks_file.is_file())
    if made:
        private = ECKey.generate_key("P-384", private=True)
        kid = f"{organization_id}-{private.thumbprint()[:12]}"
        public = private.as_dict(private=False, kid=kid, use="sig", alg=ALG)
        _write_private(key_file, private.as_pem(private=True))
        jwks_file.write_text(json.dumps({"keys": [public]}, indent=2) + "\n", encoding="utf-8")
    kid = str(json.loads(jwks_file.read_text(encoding="utf-8"))["keys"][0]["kid"])
    return DemoClient(organization_id, client_id, name, kid, str(key_file), str(jwks_file)), made


def write_clients(directory: Path, clients: list[DemoClient], token_url: str) -> Path:
    """Record the clients and the token URL in `clients.json`; its path."""
    path = directory / CLIENTS_FILE
    body = {"token_url": token_url, "clients": [asdict(c) for c in clients]}
    path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return path


def read_clients(directory: Path) -> tuple[str, dict[str, DemoClient]]:
    """The token URL and the clients (by organisation id) recorded in `directory`.
    Raises FileNotFoundError when the demo has not been seeded there."""
    body: dict[str, Any] = json.loads((directory / CLIENTS_FILE).read_text(encoding="utf-8"))
    clients = {c["organization_id"]: DemoClient(**c) for c in body["clients"]}
    return str(body["token_url"]), clients


def client_assertion(client: DemoClient, token_url: str) -> str:
    """A signed client assertion for `client` (valid for two minutes, a fresh jti)."""
    now = int(time.time())
    claims = {"iss": client.client_id, "sub": client.client_id, "aud": token_url,
              "iat": now, "exp": now + 120, "jti": str(uuid.uuid4())}
    header = {"alg": ALG, "typ": "JWT", "kid": client.kid}
    return jwt.encode(header, claims, client.private_key(), algorithms=[ALG])


def token_form(client: DemoClient, token_url: str, scope: str = "system/*.*") -> dict[str, str]:
    """The POST /auth/token form for `client`."""
    return {"grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(client, token_url)}

"""System clients (SMART Backend Services): registering them with their public keys, rotating
keys, switching them off and on.

A client acts for exactly one active Organization and proves who it is with a JWT signed by a
key in its JSON Web Key Set. The set holds public keys only: RSA of at least 2048 bits or EC
P-384, each with a `kid`. Services flush, never commit.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.db.auth_models import CLIENT_ID_RE, AccessTokenRow, ClientRow
from hub.db.types import utcnow
from hub.errors import BadRequestError, ConflictError, GoneError, NotFoundError
from hub.store import service

MIN_RSA_BITS = 2048
EC_CURVE = "P-384"
MAX_JWKS_CHARS = 64 * 1024
MAX_KEYS = 10
MAX_NAME_LENGTH = 200
ALG_FOR_KTY = {"RSA": "RS384", "EC": "ES384"}

# Members that only a private (or symmetric) key has; a public JWKS never carries them.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def _check_key(index: int, key: Any) -> str:
    """The key's kid; BadRequestError when the key is unusable or not public."""
    where = f"Key {index + 1} of the JWKS"
    if not isinstance(key, dict):
        raise BadRequestError(f"{where} is not a JSON object.")
    kid = key.get("kid")
    if not isinstance(kid, str) or not kid.strip():
        raise BadRequestError(f"{where} has no 'kid'; every key needs one so that a client "
                              "assertion can name the key it was signed with.")
    where = f"Key '{kid}'"
    private = [m for m in _PRIVATE_MEMBERS if m in key]
    if private:
        raise BadRequestError(
            f"{where} contains private key material ({', '.join(repr(m) for m in private)}). "
            "Register the public key only; the private key must never leave the client.")
    kty = key.get("kty")
    if kty not in ALG_FOR_KTY:
        raise BadRequestError(f"{where} has key type {kty!r}; use an RSA key (at least "
                              f"{MIN_RSA_BITS} bits, RS384) or an EC {EC_CURVE} key (ES384).")
    alg = key.get("alg")
    if alg is not None and alg != ALG_FOR_KTY[kty]:
        raise BadRequestError(f"{where} is marked for {alg!r}; this hub accepts "
                              f"{ALG_FOR_KTY[kty]} for {kty} keys.")
    use = key.get("use")
    if use is not None and use != "sig":
        raise BadRequestError(f"{where} is marked for use {use!r}; it must be 'sig' (or absent).")
    if kty == "EC" and key.get("crv") != EC_CURVE:
        raise BadRequestError(f"{where} is on curve {key.get('crv')!r}; EC keys must be "
                              f"{EC_CURVE} (for ES384).")
    try:
        parsed = RSAKey.import_key(key) if kty == "RSA" else ECKey.import_key(key)
    except (JoseError, ValueError, TypeError) as exc:
        raise BadRequestError(f"{where} is not a valid {kty} public key ({exc}).") from None
    if parsed.is_private:
        raise BadRequestError(f"{where} is a private key; register the public key only.")
    if isinstance(parsed, RSAKey):
        bits = int(parsed.raw_value.key_size)
        if bits < MIN_RSA_BITS:
            raise BadRequestError(
                f"{where} is an RSA key of {bits} bits; at least {MIN_RSA_BITS} are needed.")
    return kid


def validate_jwks(jwks_json: str) -> str:
    """The JWKS, checked and re-serialised. Raises BadRequestError naming what is wrong."""
    if len(jwks_json) > MAX_JWKS_CHARS:
        raise BadRequestError(f"The JWKS is larger than {MAX_JWKS_CHARS} characters.")
    try:
        data = json.loads(jwks_json)
    except ValueError as exc:
        raise BadRequestError(f"The JWKS is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise BadRequestError('The JWKS must be a JSON object like {"keys": [...]}.')
    keys = data.get("keys")
    if not isinstance(keys, list) or not keys:
        raise BadRequestError('The JWKS needs a non-empty "keys" list.')
    if len(keys) > MAX_KEYS:
        raise BadRequestError(f"The JWKS has {len(keys)} keys; at most {MAX_KEYS} are allowed.")
    kids = [_check_key(i, key) for i, key in enumerate(keys)]
    repeated = sorted({k for k in kids if kids.count(k) > 1})
    if repeated:
        raise BadRequestError(f"The JWKS uses the kid {', '.join(map(repr, repeated))} more "
                              "than once; every key needs its own kid.")
    return json.dumps({"keys": keys}, separators=(",", ":"), sort_keys=True)


def _check_organization(session: Session, organization_id: str) -> None:
    hub = Subject.hub_itself()
    if not service.valid_id(organization_id) or not service.exists(
            session, hub, resource_type="Organization", resource_id=organization_id):
        raise NotFoundError(f"There is no Organization/{organization_id} here; register the "
                            "organisation first (hub org add).")
    try:
        stored = service.read(session, hub, resource_type="Organization",
                              resource_id=organization_id)
    except GoneError:  # deleted between the two reads
        raise NotFoundError(f"Organization/{organization_id} was deleted.") from None
    if stored.body is not None and stored.body.get("active") is False:
        raise BadRequestError(f"Organization/{organization_id} is not active; a client cannot "
                              "act for it.")


def _get(session: Session, client_id: str) -> ClientRow:
    row = session.get(ClientRow, client_id) if CLIENT_ID_RE.match(client_id) else None
    if row is None:
        raise NotFoundError(f"There is no client {client_id[:100]!r}.")
    return row


def register_client(session: Session, *, organization_id: str, jwks_json: str, name: str,
                    client_id: str | None = None) -> str:
    """Register a client acting for `organization_id`; returns its client_id (a new uuid4
    unless given). Raises BadRequestError (JWKS, name, id, inactive organisation),
    NotFoundError (no such organisation), ConflictError (client_id taken)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise BadRequestError(f"The client name must have between 1 and {MAX_NAME_LENGTH} "
                              "characters.")
    new_id = client_id if client_id is not None else str(uuid.uuid4())
    if not CLIENT_ID_RE.match(new_id):
        raise BadRequestError("A client_id has 1 to 64 letters, digits, '.', '_', '~' or '-'.")
    jwks = validate_jwks(jwks_json)
    _check_organization(session, organization_id)
    if session.get(ClientRow, new_id) is not None:
        raise ConflictError(f"There is already a client '{new_id}'.")
    row = ClientRow(id=new_id, organization_id=organization_id, name=name, jwks=jwks,
                    active=True, created_at=utcnow(), disabled_at=None)
    try:
        with session.begin_nested():  # a concurrent twin loses here, not at commit
            session.add(row)
            session.flush()
    except IntegrityError:
        raise ConflictError(f"There is already a client '{new_id}'.") from None
    return new_id


def list_clients(session: Session) -> list[ClientRow]:
    """Every client, oldest first."""
    return list(session.scalars(select(ClientRow).order_by(ClientRow.created_at, ClientRow.id)))


def set_client_active(session: Session, client_id: str, active: bool) -> None:
    """Switch a client on or off. Off also deletes its access tokens, so they stop working at
    once. Raises NotFoundError, BadRequestError (switching on for an inactive organisation)."""
    row = _get(session, client_id)
    if active:
        _check_organization(session, row.organization_id)
        row.active, row.disabled_at = True, None
    else:
        if row.active:
            row.disabled_at = utcnow()
        row.active = False
        session.execute(delete(AccessTokenRow).where(AccessTokenRow.client_id == client_id))
    session.flush()


def replace_jwks(session: Session, client_id: str, jwks_json: str) -> None:
    """Replace the client's keys (rotation): assertions signed with a key no longer in the
    set fail from now on; issued tokens stay valid until they expire. Raises NotFoundError,
    BadRequestError."""
    row = _get(session, client_id)
    row.jwks = validate_jwks(jwks_json)
    session.flush()


def add_keys(session: Session, client_id: str, jwks_json: str) -> None:
    """Add the keys of `jwks_json` to the client's set (the first step of a rotation; finish
    with replace_jwks). Raises NotFoundError, BadRequestError (also for a kid already there)."""
    row = _get(session, client_id)
    new_keys = json.loads(validate_jwks(jwks_json))["keys"]
    old_keys = json.loads(row.jwks)["keys"]
    merged = json.dumps({"keys": old_keys + new_keys})
    row.jwks = validate_jwks(merged)
    session.flush()

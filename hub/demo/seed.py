"""What the demo registers directly, as an operator would with `hub org/client/user add`: the
organisations (with their messaging Endpoints), one client per organisation with its keys,
and the people who sign in to /ui. Idempotent: what is there already is kept.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.auth.clients import register_client, replace_jwks
from hub.auth.subject import Subject
from hub.auth.users import add_user, hash_password
from hub.db.auth_models import ClientRow, UserRow
from hub.db.types import utcnow
from hub.demo.keys import DemoClient, ensure_key, write_private_json
from hub.fhir.identifiers import KOMMUNENUMMER_SYSTEM, ORGNR_SYSTEM
from hub.orgs.service import add_organization
from hub.store import service

HUB = Subject.hub_itself()
USERS_FILE = "users.json"


@dataclass(frozen=True)
class DemoOrg:
    """A demo organisation and its system."""

    id: str
    name: str
    kind: str
    orgnr: str
    system_name: str


ORGANIZATIONS = (
    DemoOrg("jaeren-dps", "Jæren DPS", "mental-health-centre", "983974791",
            "Jæren DPS patient record system"),
    DemoOrg("time-kommune", "Time kommune", "municipality", "964969590",
            "Time kommune care record system"),
    DemoOrg("klepp-kommune", "Klepp kommune", "municipality", "964979022",
            "Klepp kommune care record system"),
)
KOMMUNENUMMER = {"time-kommune": "1121", "klepp-kommune": "1120"}


@dataclass(frozen=True)
class DemoUser:
    """A person of the demo and their password."""

    username: str
    role: str
    organization_id: str | None
    password: str


USERS = (("koordinator.dps", "coordinator", "jaeren-dps"),
         ("koordinator.time", "coordinator", "time-kommune"),
         ("koordinator.klepp", "coordinator", "klepp-kommune"),
         ("revisor", "auditor", None),
         ("admin", "admin", None))


@dataclass(frozen=True)
class Seeded:
    """What the seeding left: the clients (by organisation), the people, and the moment the
    scenario's dates count from."""

    clients: dict[str, DemoClient]
    users: list[DemoUser]
    anchor: datetime


def inbox_url(base_url: str, org_id: str) -> str:
    """The demo receiving system of `org_id` (hub.demo.receiver), served beside the hub."""
    return f"{base_url.rstrip('/')}/demo/inbox/{org_id}"


def _organization(session: Session, org: DemoOrg, endpoint: str) -> None:
    if not service.exists(session, HUB, resource_type="Organization", resource_id=org.id):
        add_organization(session, HUB, name=org.name, kind=org.kind,
                         identifier=f"{ORGNR_SYSTEM}|{org.orgnr}", endpoint=endpoint,
                         org_id=org.id)
        if org.id in KOMMUNENUMMER:  # the kommunenummer too, as municipalities are known by it
            stored = service.read(session, HUB, resource_type="Organization", resource_id=org.id)
            assert stored.body is not None
            body = dict(stored.body)
            body["identifier"] = [*body["identifier"], {
                "system": KOMMUNENUMMER_SYSTEM, "value": KOMMUNENUMMER[org.id]}]
            service.update(session, HUB, resource_type="Organization", resource_id=org.id,
                           resource=body)
        return
    # Served at another address than last time: point the Endpoint at this one.
    endpoint_id = f"{org.id}-msg"
    if not service.exists(session, HUB, resource_type="Endpoint", resource_id=endpoint_id):
        return
    current = service.read(session, HUB, resource_type="Endpoint", resource_id=endpoint_id)
    if current.body is not None and current.body.get("address") != endpoint:
        service.update(session, HUB, resource_type="Endpoint", resource_id=endpoint_id,
                       resource={**current.body, "address": endpoint})


def _client(session: Session, directory: Path, org: DemoOrg) -> tuple[DemoClient, datetime]:
    client_id = f"{org.id}-demo"
    demo, made = ensure_key(directory, organization_id=org.id, client_id=client_id,
                            name=org.system_name)
    row = session.get(ClientRow, client_id)
    if row is None:
        register_client(session, organization_id=org.id, jwks_json=demo.public_jwks(),
                        name=org.system_name, client_id=client_id)
        row = session.get(ClientRow, client_id)
        assert row is not None
    elif made:  # the key files were lost: the hub learns the new key
        replace_jwks(session, client_id, demo.public_jwks())
    return demo, row.created_at


def _users(session: Session, directory: Path) -> list[DemoUser]:
    path = directory / USERS_FILE
    known: dict[str, str] = (json.loads(path.read_text(encoding="utf-8"))
                             if path.is_file() else {})
    out = []
    for username, role, org in USERS:
        password = known.get(username) or secrets.token_urlsafe(12)
        row = session.scalar(select(UserRow).where(UserRow.username == username))
        if row is None:
            add_user(session, username=username, password=password, role=role,
                     organization_id=org)
        elif username not in known:  # the password file was lost: a new password
            row.password_hash = hash_password(password)
        known[username] = password
        out.append(DemoUser(username, role, org, password))
    write_private_json(path, known)
    return out


def seed(session: Session, directory: Path, *, base_url: str) -> Seeded:
    """Register the demo's organisations, clients (keys in `directory`) and people unless
    there; the scenario's anchor is the midnight (UTC) before the centre's demo client was
    first registered, so a second run sends the very same messages (and the hub answers them
    as repeats)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # private keys and passwords live here
    clients: dict[str, DemoClient] = {}
    anchor = utcnow()
    for org in ORGANIZATIONS:
        _organization(session, org, inbox_url(base_url, org.id))
        clients[org.id], created = _client(session, directory, org)
        if org.kind == "mental-health-centre":
            anchor = created
    users = _users(session, directory)
    anchor = anchor.replace(hour=0, minute=0, second=0, microsecond=0)
    return Seeded(clients, users, anchor)

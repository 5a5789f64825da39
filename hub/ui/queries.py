"""What the /ui pages show, read in one place so the routes hold no queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.auth.users import list_users
from hub.db.auth_models import ClientRow, UserRow
from hub.errors import GoneError, NotFoundError
from hub.store import query as search_mod
from hub.store import service


@dataclass(frozen=True)
class OrganizationLine:
    """One organisation as the admin page lists it."""

    id: str
    name: str
    identifiers: str
    active: bool


@dataclass(frozen=True)
class AdminOverview:
    """Organisations, clients and users, for the admin's home page."""

    organizations: list[OrganizationLine]
    more_organizations: bool
    clients: list[ClientRow]
    users: list[UserRow]


def list_clients(session: Session) -> list[ClientRow]:
    """Every registered client, by id."""
    return list(session.scalars(select(ClientRow).order_by(ClientRow.id)))


def _org_line(rid: str, body: dict[str, Any]) -> OrganizationLine:
    idents = ", ".join(str(i.get("value", "")) for i in body.get("identifier") or []
                       if isinstance(i, dict) and i.get("value"))
    return OrganizationLine(rid, str(body.get("name") or rid), idents,
                            body.get("active") is not False)


def organization_name(session: Session, organization_id: str) -> str | None:
    """The name of Organization/id, or None when it is not (or no longer) stored."""
    try:
        stored = service.read(session, Subject.hub_itself(), resource_type="Organization",
                              resource_id=organization_id)
    except (NotFoundError, GoneError):
        return None
    return str((stored.body or {}).get("name") or organization_id)


def admin_overview(session: Session, *, limit: int) -> AdminOverview:
    """Up to `limit` organisations by name, and every client and user."""
    request = search_mod.SearchRequest("Organization", [], count=limit, sort=["name"])
    matches, _, page = service.search(session, Subject.hub_itself(), request=request)
    orgs = [_org_line(m.id, m.body) for m in matches if m.body is not None]
    return AdminOverview(orgs, page.has_next, list_clients(session), list_users(session))


@dataclass(frozen=True)
class HomePage:
    """What a person's home page shows: their organisation, and the admin overview."""

    organization_name: str | None
    admin: AdminOverview | None


def home_page(session: Session, *, role: str, organization_id: str | None,
              limit: int) -> HomePage:
    """The data of one person's home page."""
    name = organization_name(session, organization_id) if organization_id else None
    admin = admin_overview(session, limit=limit) if role == "admin" else None
    return HomePage(name, admin)

"""Registering organisations: an Organization resource (with its messaging Endpoint)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.db.auth_models import EndpointCredentialRow
from hub.db.types import utcnow
from hub.errors import BadRequestError, ConflictError
from hub.fhir.urls import shown_url, url_problem
from hub.store import query as search_mod
from hub.store import service
from hub.store.resources import StoredResource

KIND_SYSTEM = "http://carehub.example/fhir/CodeSystem/organization-kind"
Kind = Literal["mental-health-centre", "municipality", "other"]
KINDS: tuple[str, ...] = ("mental-health-centre", "municipality", "other")
_KIND_DISPLAY = {"mental-health-centre": "Mental-health centre (DPS)",
                 "municipality": "Municipality", "other": "Other organisation"}


def _parse_identifier(identifier: str) -> tuple[str, str]:
    system, sep, value = identifier.partition("|")
    if not sep or not system or not value:
        raise BadRequestError(f"--identifier must be SYSTEM|VALUE, not '{identifier}'.")
    return system, value


def add_organization(
    session: Session,
    subject: Subject,
    *,
    name: str,
    kind: str,
    identifier: str,
    endpoint: str | None = None,
    org_id: str | None = None,
    more_identifiers: Sequence[str] = (),
) -> str:
    """Register an organisation and, with `endpoint`, its FHIR messaging Endpoint; its id.
    `more_identifiers` (SYSTEM|VALUE) are kept beside `identifier`, e.g. a municipality's
    kommunenummer beside its organisasjonsnummer (the MLLP adapter finds it by that).
    Raises BadRequestError (bad input), ConflictError (id or identifier already registered)."""
    if kind not in KINDS:
        raise BadRequestError(f"--kind must be one of {', '.join(KINDS)}, not '{kind}'.")
    pairs = [_parse_identifier(i) for i in (identifier, *more_identifiers)]
    org_id = org_id or str(uuid.uuid4())
    if not service.valid_id(org_id):
        raise BadRequestError(f"'{org_id}' is not a valid id (letters, digits, '-', '.').")
    if service.exists(session, subject, resource_type="Organization", resource_id=org_id):
        raise ConflictError(f"Organization/{org_id} is already registered.")
    for system, value in pairs:
        if service.match(session, subject, resource_type="Organization",
                         criteria=f"identifier={system}|{value}", limit=1):
            raise ConflictError(
                f"An organisation with identifier {system}|{value} is registered.")
    org: dict[str, Any] = {
        "resourceType": "Organization", "id": org_id, "active": True, "name": name,
        "identifier": [{"system": system, "value": value} for system, value in pairs],
        "type": [{"coding": [{"system": KIND_SYSTEM, "code": kind,
                              "display": _KIND_DISPLAY[kind]}]}],
    }
    if endpoint:
        endpoint_id = _put_endpoint(session, subject, org_id, name, endpoint)
        org["endpoint"] = [{"reference": f"Endpoint/{endpoint_id}"}]
    service.update(session, subject, resource_type="Organization", resource_id=org_id,
                   resource=org)
    return org_id


def _put_endpoint(session: Session, subject: Subject, org_id: str, name: str,
                  url: str) -> str:
    """Write the organisation's messaging Endpoint at `url` (a new version when it has one);
    its id. Userinfo in `url` (HTTP Basic for the receiver) is kept apart from the Endpoint
    (`endpoint_credentials`), which every client reads as the directory; an address without
    userinfo removes credentials kept before."""
    problem = url_problem(url)
    if problem is not None:
        raise BadRequestError(f"The endpoint {shown_url(url)} is refused: {problem}.")
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    address = urlunsplit(parts._replace(netloc=host)) if at else url
    endpoint_id = f"{org_id}-msg"
    service.update(session, subject, resource_type="Endpoint", resource_id=endpoint_id,
                   resource={
                       "resourceType": "Endpoint", "id": endpoint_id, "status": "active",
                       "connectionType": {
                           "system": "http://terminology.hl7.org/CodeSystem/"
                                     "endpoint-connection-type",
                           "code": "hl7-fhir-msg"},
                       "name": f"{name}: FHIR messaging",
                       "managingOrganization": {"reference": f"Organization/{org_id}"},
                       "payloadType": [{"text": "FHIR message Bundle"}],
                       "payloadMimeType": ["application/fhir+json"],
                       "address": address})
    kept = session.get(EndpointCredentialRow, endpoint_id)
    if at and kept is not None:
        kept.userinfo, kept.updated_at = userinfo, utcnow()
    elif at:
        session.add(EndpointCredentialRow(endpoint_id=endpoint_id, userinfo=userinfo,
                                          updated_at=utcnow()))
    elif kept is not None:
        session.delete(kept)
    session.flush()
    return endpoint_id


def set_endpoint(session: Session, subject: Subject, org_id: str, url: str) -> str:
    """Give a registered organisation a (new) messaging Endpoint address; the Endpoint id.
    Raises NotFoundError (no such organisation), BadRequestError (not an http(s) URL)."""
    org = service.read(session, subject, resource_type="Organization", resource_id=org_id)
    assert org.body is not None
    endpoint_id = _put_endpoint(session, subject, org_id, str(org.body.get("name") or org_id),
                                url)
    ref = {"reference": f"Endpoint/{endpoint_id}"}
    if ref not in (org.body.get("endpoint") or []):
        service.update(session, subject, resource_type="Organization", resource_id=org_id,
                       resource={**org.body, "endpoint": [*(org.body.get("endpoint") or []),
                                                          ref]})
    return endpoint_id


def push_address(session: Session, endpoint_id: str, address: str) -> str:
    """The address the push posts to: the Endpoint's `address` with the credentials kept
    for it (if any) as its userinfo. Only the dispatcher asks this."""
    kept = session.get(EndpointCredentialRow, endpoint_id)
    if kept is None:
        return address
    parts = urlsplit(address)
    return urlunsplit(parts._replace(netloc=f"{kept.userinfo}@{parts.netloc.rpartition('@')[2]}"))


def list_organizations(session: Session, subject: Subject) -> list[StoredResource]:
    """Every registered organisation, oldest first."""
    out: list[StoredResource] = []
    offset = 0
    while True:
        req = search_mod.SearchRequest("Organization", [], count=500, offset=offset)
        matches, _, page = service.search(session, subject, request=req)
        out += matches
        if not page.has_next:
            return out
        offset += 500


def set_organization_active(session: Session, subject: Subject, org_id: str,
                            active: bool) -> StoredResource:
    """Mark an organisation active or not (a new version). Raises NotFoundError."""
    current = service.read(session, subject, resource_type="Organization", resource_id=org_id)
    assert current.body is not None
    if current.body.get("active") is active:
        return current
    return service.update(session, subject, resource_type="Organization", resource_id=org_id,
                          resource={**current.body, "active": active}).stored

"""Registering organisations: an Organization resource (with its messaging Endpoint)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.errors import BadRequestError, ConflictError
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
        if not re.match(r"^https?://", endpoint):
            raise BadRequestError(f"--endpoint must be an http(s) URL, not '{endpoint}'.")
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
                           "address": endpoint})
        org["endpoint"] = [{"reference": f"Endpoint/{endpoint_id}"}]
    service.update(session, subject, resource_type="Organization", resource_id=org_id,
                   resource=org)
    return org_id


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

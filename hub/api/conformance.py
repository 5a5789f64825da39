"""The hub's conformance resources, read-only: GET /fhir/{type} (search by `url`, `_id`) and
GET /fhir/{type}/{id} for StructureDefinition, CodeSystem, ValueSet, MessageDefinition and
SearchParameter, as kept in fhir_profiles/ (hub.fhir.profiles).

Like every /fhir call but metadata they need a token whose scopes grant read on the type
(`system/StructureDefinition.read`, `system/*.read`, ...), and they are audited. Include this
router before the generic FHIR router, whose /fhir/{type} routes would otherwise take them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request

from hub.api.deps import DatabaseDep, SettingsDep, SubjectDep, audited_transaction
from hub.api.responses import FhirResponse, bundle, page_link
from hub.auth import scopes
from hub.auth.subject import Subject
from hub.errors import (
    BadRequestError,
    Issue,
    MethodNotAllowedError,
    NotFoundError,
    operation_outcome,
)
from hub.fhir.profiles import CONFORMANCE_TYPES, conformance

router = APIRouter(prefix="/fhir")

_SEARCH_PARAMS = {"url", "_id"}
_PAGING = {"_count", "_offset"}
_IGNORED_QUIETLY = {"_format", "_pretty"}
_URL_PARAM = "http://hl7.org/fhir/SearchParameter/conformance-url"


def _allowed(subject: Subject, resource_type: str) -> None:
    scopes.require(subject, resource_type, "read")


def _int_param(pairs: list[tuple[str, str]], name: str, default: int, *, low: int,
               high: int) -> int:
    raw = next((v for k, v in pairs if k == name), None)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequestError(f"{name} must be a whole number; it is '{raw}'.",
                              expression=name) from exc
    return max(low, min(high, value))


def _matches(resource: dict[str, Any], pairs: list[tuple[str, str]]) -> bool:
    """All parameters hold (AND); a comma-separated value is any of (OR)."""
    for key, value in pairs:
        wanted = {v.strip() for v in value.split(",") if v.strip()}
        if key == "_id" and resource.get("id") not in wanted:
            return False
        if key == "url" and str(resource.get("url")) not in {w.split("|", 1)[0]
                                                              for w in wanted}:
            return False
    return True


def search_conformance(resource_type: str, pairs: list[tuple[str, str]], *, base: str,
                       page_size: int, max_page_size: int) -> dict[str, Any]:
    """The searchset Bundle of one conformance type (by `url`, `_id`; `_count`, `_offset`)."""
    count = _int_param(pairs, "_count", page_size, low=0, high=max_page_size)
    offset = _int_param(pairs, "_offset", 0, low=0, high=10**9)
    criteria = [(k, v) for k, v in pairs if k in _SEARCH_PARAMS]
    ignored = sorted({k for k, _ in pairs} - _SEARCH_PARAMS - _PAGING - _IGNORED_QUIETLY)
    found = [r for r in conformance().of_type(resource_type) if _matches(r, criteria)]
    page = found[offset:offset + count]
    path = f"{base}/{resource_type}"
    kept = [(k, v) for k, v in pairs if k not in ignored]
    links = [("self", page_link(path, kept, offset, count))]
    if offset + count < len(found):
        links.append(("next", page_link(path, kept, offset + count, count)))
    if offset > 0:
        links.append(("previous", page_link(path, kept, max(0, offset - count), count)))
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"{path}/{r['id']}", "resource": r, "search": {"mode": "match"}}
        for r in page]
    if ignored:
        entries.append({"resource": operation_outcome([Issue(
            f"Ignored search parameters this hub does not support on {resource_type}: "
            f"{', '.join(ignored)} (supported: url, _id, _count).", "not-supported",
            "warning")]), "search": {"mode": "outcome"}})
    return bundle("searchset", entries, links, len(found))


def read_conformance(resource_type: str, resource_id: str) -> dict[str, Any]:
    """One conformance resource; NotFoundError when there is none with that id."""
    found = conformance().get(resource_type, resource_id)
    if found is None:
        raise NotFoundError(f"There is no {resource_type}/{resource_id} here; "
                            f"GET /fhir/{resource_type} lists them.")
    return found


def capability_resources() -> list[dict[str, Any]]:
    """CapabilityStatement.rest.resource entries for the conformance types (read, search)."""
    return [{
        "type": rtype,
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": False,
        "conditionalDelete": "not-supported",
        "searchParam": [
            {"name": "_id", "type": "token", "documentation": "Logical id"},
            {"name": "url", "definition": _URL_PARAM, "type": "uri",
             "documentation": "The canonical url"},
        ],
    } for rtype in sorted(CONFORMANCE_TYPES)]


def supported_profiles() -> dict[str, list[str]]:
    """For each resource type, the canonical urls of the hub's profiles on it
    (CapabilityStatement.rest.resource.supportedProfile)."""
    out: dict[str, list[str]] = {}
    for sd in conformance().of_type("StructureDefinition"):
        if sd.get("kind") == "resource" and sd.get("derivation") == "constraint":
            out.setdefault(str(sd["type"]), []).append(str(sd["url"]))
    return {k: sorted(v) for k, v in sorted(out.items())}


def capability_messaging() -> list[dict[str, Any]]:
    """CapabilityStatement.messaging: every event the hub receives at $process-message."""
    return [{
        "documentation": "POST /fhir/$process-message; each event's MessageDefinition names "
                         "its focus and their profiles.",
        "supportedMessage": [{"mode": "receiver", "definition": str(md["url"])}
                             for md in conformance().of_type("MessageDefinition")],
    }]


def _add_routes(resource_type: str) -> None:
    async def search(request: Request, db: DatabaseDep, settings: SettingsDep,
                     subject: SubjectDep) -> FhirResponse:
        _allowed(subject, resource_type)
        pairs = list(request.query_params.multi_items())
        result = await audited_transaction(
            request, db, subject,
            lambda _s: search_conformance(resource_type, pairs, base=settings.fhir_base,
                                          page_size=settings.page_size,
                                          max_page_size=settings.max_page_size),
            interaction="search-type", resource_type=resource_type, query=urlencode(pairs))
        return FhirResponse(result)

    async def read(resource_id: str, request: Request, db: DatabaseDep,
                   subject: SubjectDep) -> FhirResponse:
        _allowed(subject, resource_type)
        found = await audited_transaction(
            request, db, subject, lambda _s: read_conformance(resource_type, resource_id),
            interaction="read", resource_type=resource_type)
        return FhirResponse(found)

    async def not_supported(subject: SubjectDep) -> FhirResponse:
        raise MethodNotAllowedError(
            f"{resource_type} resources are the hub's own and read-only here (read and "
            "search); they are kept in fhir_profiles/.", headers={"Allow": "GET"})

    search.__doc__ = f"Search {resource_type} by url or _id (read-only, from fhir_profiles/)."
    read.__doc__ = f"One {resource_type} of the hub's conformance resources."
    router.add_api_route(f"/{resource_type}", search, methods=["GET"])
    router.add_api_route(f"/{resource_type}/{{resource_id}}", read, methods=["GET"])
    router.add_api_route(f"/{resource_type}", not_supported,
                         methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    router.add_api_route(f"/{resource_type}/{{rest:path}}", not_supported,
                         methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
                         include_in_schema=False)


for _type in CONFORMANCE_TYPES:
    _add_routes(_type)

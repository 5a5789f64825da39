"""The CapabilityStatement, generated from what is actually registered."""

from __future__ import annotations

from typing import Any

from hub.fhir.structure import FHIR_VERSION
from hub.store.search_params import params_for
from hub.store.types import READ_ONLY, SERVED

_COMMON_SEARCH = [
    {"name": "_id", "type": "token", "documentation": "Logical id"},
    {"name": "_lastUpdated", "type": "date", "documentation": "When the hub stored the version"},
]
_READ = ["read", "vread", "history-instance", "search-type"]
_WRITE = ["create", "update", "delete"]
_INCLUDES = {"CarePlan": ["CarePlan:goal", "CarePlan:care-team"], "Task": ["Task:focus"],
             "Appointment": ["Appointment:actor"]}


def capability_statement(base: str, version: str) -> dict[str, Any]:
    """What this hub serves: resources, interactions, search parameters, operations."""
    resources = []
    for rtype in sorted(SERVED):
        interactions = _READ + ([] if rtype in READ_ONLY else _WRITE)
        params = [{"name": sp.code, "definition": sp.url, "type": sp.type}
                  for sp in sorted(params_for(rtype).values(), key=lambda s: s.code)]
        res: dict[str, Any] = {
            "type": rtype,
            "interaction": [{"code": c} for c in interactions],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": rtype not in READ_ONLY,
            "conditionalCreate": rtype not in READ_ONLY,
            "conditionalDelete": "not-supported",
            "searchParam": _COMMON_SEARCH + params,
        }
        if rtype in _INCLUDES:
            res["searchInclude"] = _INCLUDES[rtype]
        if rtype not in READ_ONLY:
            res["operation"] = [{"name": "validate",
                                 "definition": "http://hl7.org/fhir/OperationDefinition/"
                                               "Resource-validate"}]
        resources.append(res)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "software": {"name": "CareHub", "version": version},
        "implementation": {"description": "CareHub FHIR message hub", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search parameters not listed are ignored and reported in an "
                             "OperationOutcome entry of the searchset.",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }],
    }

"""The CapabilityStatement, generated from what is actually registered."""

from __future__ import annotations

from typing import Any

from hub.api.conformance import capability_messaging, capability_resources, supported_profiles
from hub.auth.isolation import DIRECTORY_TYPES
from hub.fhir.structure import FHIR_VERSION
from hub.store.search_params import params_for
from hub.store.types import READ_ONLY, SERVED

_COMMON_SEARCH = [
    {"name": "_id", "type": "token", "documentation": "Logical id"},
    {"name": "_lastUpdated", "type": "date", "documentation": "When the hub stored the version"},
]
_CHAIN = ("Chainable (`{code}:<Type>.<parameter>=`, or without the type where it is "
          "unambiguous) through up to 3 references, e.g. `{code}:<Type>.<reference>:<Type>."
          "identifier=`; each link goes only through resources the caller may see. A modifier "
          "on the last parameter is not supported (reported in an outcome entry).")
_HAS = {"name": "_has", "type": "special",
        "documentation": "Reverse chaining, `_has:<Type>:<reference parameter>:<parameter>=` "
                         "(nested `_has` up to 3 deep): only resources the caller may see "
                         "count as the referring match. A modifier on the last parameter is "
                         "not supported (reported in an outcome entry)."}
_READ = ["read", "vread", "history-instance", "search-type"]
_WRITE = ["create", "update", "patch", "delete"]
_AUDIT_EVENT = {  # the audit trail (hub/api/auditevents.py): auditors only, not the store
    "type": "AuditEvent",
    "documentation": "The audit trail (IHE BALP AuditEvents), read-only and for auditors "
                     "only: a person with role auditor signed in at /ui (the session cookie "
                     "reaches /fhir); anyone else gets 403. Oldest first.",
    "interaction": [{"code": "read"}, {"code": "search-type"}],
    "versioning": "no-version",
    "readHistory": False,
    "updateCreate": False,
    "conditionalCreate": False,
    "conditionalUpdate": False,
    "conditionalDelete": "not-supported",
    "searchParam": [
        {"name": "_id", "type": "token",
         "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
         "documentation": "The AuditEvent's id; comma-separated for any of several"},
        {"name": "patient", "type": "reference",
         "definition": "http://hl7.org/fhir/SearchParameter/clinical-patient",
         "documentation": "Patient/<id> or <id>; comma-separated for any of several"},
        {"name": "date", "type": "date",
         "definition": "http://hl7.org/fhir/SearchParameter/AuditEvent-date",
         "documentation": "When recorded; prefixes eq ge gt le lt, any precision"},
        {"name": "agent", "type": "token",
         "documentation": "Client/<client_id>, User/<username>, Operator/<os user>, or the "
                          "bare id"},
        {"name": "subtype", "type": "token",
         "definition": "http://hl7.org/fhir/SearchParameter/AuditEvent-subtype",
         "documentation": "read, vread, history-instance, search-type, create, update, "
                          "delete, transaction, batch, operation, disclose, login, token, "
                          "admin, delivery"},
    ],
}
_OPS = "http://carehub.example/fhir/OperationDefinition/"
_PATIENT_OPERATIONS = [
    {"name": "disclosure-check", "definition": f"{_OPS}Patient-disclosure-check",
     "documentation": "recipient=Organization/<id>&event=<code>: would a message of this event "
                      "reach that organisation now? Parameters decision, basis, reason."},
    {"name": "consent-trail", "definition": f"{_OPS}Patient-consent-trail",
     "documentation": "Every Consent version and disclosure decision for the patient, oldest "
                      "first; for auditors and the consents' custodian organisations."},
]
_FIGURES = ("Parameters: requests, admissions, share-admitted, days-used, stays-over-maximum, "
            "pending and rejected (by reason)")
_INSTANCE_OPERATIONS = {
    "ServiceRequest": [{
        "name": "self-admission-figures",
        "definition": f"{_OPS}ServiceRequest-self-admission-figures",
        "documentation": f"User-controlled admission under one agreement. {_FIGURES}; for the "
                         "clients and coordinators of the agreement's organisations."}],
    "Location": [{
        "name": "self-admission-figures",
        "definition": f"{_OPS}Location-self-admission-figures",
        "documentation": f"User-controlled admission in one unit, all its agreements. {_FIGURES} "
                         "and beds; for the unit's centre and its agreements' organisations."}],
}
_SYSTEM_OPERATIONS = [
    {"name": "process-message",
     "definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message"},
]
_INCLUDES = {"CarePlan": ["CarePlan:goal", "CarePlan:care-team"], "Task": ["Task:focus"],
             "Appointment": ["Appointment:actor"]}


def security(token_url: str) -> dict[str, Any]:
    """`rest.security`: SMART on FHIR (Backend Services) with the token endpoint in the
    `oauth-uris` extension, which clients such as fhirclient read to find how to sign in."""
    return {
        "cors": False,
        "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}],
            "text": "SMART Backend Services: client_credentials with a signed JWT assertion "
                    "(RS384 or ES384); scopes system/<Type|*>.<read|write|*>"}],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": "token", "valueUri": token_url}]}],
        "description": "Every interaction but metadata and .well-known/smart-configuration "
                       "needs a bearer token from the token endpoint.",
    }


def capability_statement(base: str, version: str, *, token_url: str) -> dict[str, Any]:
    """What this hub serves: resources, interactions, search parameters, operations, and how
    a client authenticates."""
    resources = []
    profiles = supported_profiles()
    for rtype in sorted(SERVED):
        if rtype == "AuditEvent":
            resources.append(dict(_AUDIT_EVENT))
            continue
        # clients write neither what only the hub writes nor the directory (CONTRACT 3)
        written = rtype not in READ_ONLY and rtype not in DIRECTORY_TYPES
        interactions = _READ + (_WRITE if written else [])
        params: list[dict[str, str]] = [
            {"name": sp.code, "definition": sp.url, "type": sp.type,
             **({"documentation": _CHAIN.format(code=sp.code)} if sp.type == "reference"
                else {})}
            for sp in sorted(params_for(rtype).values(), key=lambda s: s.code)]
        res: dict[str, Any] = {
            "type": rtype,
            "interaction": [{"code": c} for c in interactions],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": written,
            "conditionalCreate": written,
            "conditionalUpdate": written,
            "conditionalDelete": "single" if written else "not-supported",
            "searchParam": [*_COMMON_SEARCH, *params, _HAS],
        }
        if rtype in DIRECTORY_TYPES:
            res["documentation"] = ("The hub's directory: read and searched by every client, "
                                    "written only with the `hub org` commands.")
        if rtype == "Bundle":
            res["documentation"] = (
                "Stored messages. A receiver pulls its messages with "
                "GET /fhir/Bundle?message.receiver=Organization/<own id> (_lastUpdated=gt..., "
                "_count) and reads, vreads (version 1) and has the history of each at the "
                "fullUrl the pull names, with the same content: redacted and trimmed to the "
                "minimum necessary as the pull gives it.")
        if rtype in _INCLUDES:
            res["searchInclude"] = _INCLUDES[rtype]
        if rtype not in READ_ONLY:
            res["operation"] = [{"name": "validate",
                                 "definition": "http://hl7.org/fhir/OperationDefinition/"
                                               "Resource-validate"}]
        if rtype in profiles:
            res["supportedProfile"] = profiles[rtype]
        if rtype == "Patient":
            res["operation"] = [*res.get("operation", []), *_PATIENT_OPERATIONS]
        if rtype in _INSTANCE_OPERATIONS:
            res["operation"] = [*res.get("operation", []), *_INSTANCE_OPERATIONS[rtype]]
        resources.append(res)
    resources.extend(capability_resources())
    resources.sort(key=lambda r: str(r["type"]))
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
                             "OperationOutcome entry of the searchset. Reference parameters "
                             "chain through up to 3 links, and `_has` reverse-chains; every "
                             "link counts only what the caller may see.",
            "security": security(token_url),
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "operation": _SYSTEM_OPERATIONS,
        }],
        "messaging": capability_messaging(),
    }

"""An honest /openapi.json: what FastAPI derives from the routes, completed with what the
routes read themselves and what they answer.

The FHIR routes read their bodies raw (`read_body`: FHIR JSON, any resource) and answer
OperationOutcomes for every error, so the generated document alone would declare no request
bodies, `application/json` responses and a 422 `HTTPValidationError` that never happens.
Here every FHIR operation gets its request body (FHIR JSON, or the form the search and
token endpoints take), its media types, the statuses it can answer, and the bearer security
it needs; the token endpoint is described as the OAuth endpoint it is.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from hub.store.types import READ_ONLY, SERVED

FHIR_JSON = "application/fhir+json"
_RESOURCE = {"type": "object", "required": ["resourceType"],
             "properties": {"resourceType": {"type": "string"}},
             "additionalProperties": True, "description": "A FHIR R4 resource (JSON)"}
_OUTCOME = {"type": "object", "required": ["resourceType", "issue"],
            "properties": {"resourceType": {"type": "string", "enum": ["OperationOutcome"]},
                           "issue": {"type": "array", "items": {"type": "object"}}},
            "additionalProperties": True,
            "description": "An OperationOutcome with plain-language diagnostics"}
_OAUTH_ERROR = {"type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"},
                               "error_description": {"type": "string"}}}
_TOKEN = {"type": "object", "required": ["access_token", "token_type", "expires_in", "scope"],
          "properties": {"access_token": {"type": "string"},
                         "token_type": {"type": "string", "enum": ["bearer"]},
                         "expires_in": {"type": "integer"}, "scope": {"type": "string"}}}
_ERRORS = {
    "400": "Unparsable or malformed request",
    "401": "No, unknown or expired bearer token",
    "403": "The token's scopes or the organisation's rights do not allow this",
    "404": "Unknown type or id (also where a 403 would reveal that a record exists)",
    "405": "The address does not serve this method (Allow names those it does)",
    "406": "A format other than FHIR JSON was asked for (_format, Accept)",
    "409": "Conflicts with what is stored (e.g. a message id reused with other content)",
    "410": "The resource was deleted",
    "412": "If-Match or If-None-Exist does not hold, or a conditional update's criteria "
           "match more than one resource",
    "413": "The body is larger than HUB_MAX_BODY_BYTES",
    "415": "The body is not FHIR JSON",
    "422": "Well-formed but not valid (each problem named in an issue)",
}
_JSON_PATCH = {"type": "array", "description": "JSON Patch (RFC 6902) operations",
               "items": {"type": "object", "required": ["op", "path"],
                         "properties": {"op": {"type": "string", "enum": [
                             "add", "remove", "replace", "move", "copy", "test"]},
                             "path": {"type": "string"}, "from": {"type": "string"},
                             "value": {}}}}
_DESCRIPTION = ("CareHub's FHIR R4 REST API (JSON) and its SMART Backend Services token "
                "endpoint. What each resource type supports (interactions, search "
                "parameters, operations) is in the CapabilityStatement at /fhir/metadata; "
                "every error is an OperationOutcome.")
_PUBLIC = {"/fhir/metadata", "/fhir/.well-known/smart-configuration", "/auth/token"}
_FORM_SEARCH = {"type": "object", "additionalProperties": {"type": "string"},
                "description": "Search parameters, as in the query of a GET search"}


def _fhir_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {FHIR_JSON: {"schema": schema}, "application/json": {"schema": schema}}


def _success(path: str, method: str) -> dict[str, Any]:
    if path == "/fhir/.well-known/smart-configuration":
        return {"200": {"description": "SMART configuration",
                        "content": {"application/json": {"schema": {"type": "object"}}}}}
    if method == "delete":
        return {"204": {"description": "Deleted (a new, empty version)"}}
    ok = {"200": {"description": "FHIR resource", "content": _fhir_content(_RESOURCE)}}
    if method in ("post", "put") and path in ("/fhir/{resource_type}",
                                              "/fhir/{resource_type}/{resource_id}"):
        ok["201"] = {"description": "Created", "content": _fhir_content(_RESOURCE)}
    if method == "post" and path == "/fhir/{resource_type}":
        ok["200"]["description"] = (
            "Nothing created: the resource If-None-Exist matched, or the Patient the hub "
            "already keeps for the person (one per fødselsnummer or D-nummer); Location names "
            "it, and the body is an OperationOutcome where the caller may not read it")
    return ok


def _complete(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer",
        "description": "An access token from POST /auth/token (SMART Backend Services)"}
    components.get("schemas", {}).pop("HTTPValidationError", None)
    components.get("schemas", {}).pop("ValidationError", None)
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if path == "/auth/token":
                _token_operation(op)
                continue
            for param in op.get("parameters", []):
                if param.get("name") == "resource_type" and param.get("in") == "path":
                    param["schema"] = {"type": "string", "pattern": "^[A-Z][A-Za-z]{1,63}$",
                                       "examples": sorted(SERVED)}
                    if method in ("put", "patch", "delete") or (
                            method == "post" and path == "/fhir/{resource_type}"):
                        # the read-only types answer these 405 (Allow: GET, HEAD)
                        param["schema"]["not"] = {"enum": sorted(READ_ONLY)}
                        param["schema"]["examples"] = sorted(SERVED - READ_ONLY)
            if method == "patch":
                op["requestBody"] = {"required": True, "content": {
                    "application/json-patch+json": {"schema": _JSON_PATCH}}}
            elif method in ("post", "put"):
                if path.endswith("/_search"):
                    op["requestBody"] = {"required": False, "content": {
                        "application/x-www-form-urlencoded": {"schema": _FORM_SEARCH}}}
                else:
                    op["requestBody"] = {"required": True, "content": _fhir_content(_RESOURCE)}
            responses: dict[str, Any] = _success(path, method)
            for code, text in _ERRORS.items():
                if path in _PUBLIC and code in ("401", "403"):
                    continue
                responses[code] = {"description": text, "content": _fhir_content(_OUTCOME)}
            op["responses"] = responses
            if path not in _PUBLIC:
                op["security"] = [{"bearer": []}]
    return schema


def _token_operation(op: dict[str, Any]) -> None:
    form = {"type": "object",
            "required": ["grant_type", "client_assertion_type", "client_assertion"],
            "properties": {"grant_type": {"type": "string", "enum": ["client_credentials"]},
                           "scope": {"type": "string"},
                           "client_assertion_type": {"type": "string"},
                           "client_assertion": {"type": "string"}}}
    op["requestBody"] = {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": form}}}
    error = {"content": {"application/json": {"schema": _OAUTH_ERROR}}}
    op["responses"] = {
        "200": {"description": "An access token",
                "content": {"application/json": {"schema": _TOKEN}}},
        "400": {"description": "invalid_request, invalid_client, invalid_scope, ...", **error},
        "401": {"description": "invalid_client: the assertion does not prove the client",
                **error},
        "405": {"description": "Only POST", "content": _fhir_content(_OUTCOME)},
        "406": {"description": "Only JSON answers", "content": _fhir_content(_OUTCOME)},
    }


def install(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _complete(get_openapi(
                title=app.title, version=app.version, description=_DESCRIPTION,
                routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

"""Structure validation against FHIR models: the one module that imports fhir.resources.

R4 is our wire format; fhir.resources ships R4B models, which agree with R4 for the resources
the hub handles. Known departures (see shared/fhir-r4-examples/README.md) are handled here:
`_valueX` on Extension is valid R4 the library rejects, so it is set aside before the model sees
the resource. The models only judge; what the hub stores is the JSON it received.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from hub.errors import Issue

FHIR_VERSION = "4.0.1"


@cache
def _model(resource_type: str) -> type[Resource] | None:
    try:
        cls = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None
    if not isinstance(cls, type) or not issubclass(cls, Resource):
        return None
    if cls.__name__ != resource_type:
        return None
    return cls


def is_resource_type(name: str) -> bool:
    """True when `name` is a FHIR resource type (not a datatype)."""
    return bool(name) and name[0].isupper() and _model(name) is not None


def _strip_primitive_extension_values(node: Any) -> Any:
    """Drop `_value*` keys inside Extension objects (valid R4 the R4B models refuse)."""
    if isinstance(node, dict):
        is_extension = "url" in node and any(k.startswith("value") for k in node)
        out = {}
        for key, value in node.items():
            if is_extension and key.startswith("_value"):
                continue
            out[key] = _strip_primitive_extension_values(value)
        return out
    if isinstance(node, list):
        return [_strip_primitive_extension_values(v) for v in node]
    return node


def _location(resource_type: str, loc: tuple[int | str, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part and not part.startswith(("function-", "union[", "list[")):
            path += f".{part}"
    return path


_MESSAGES = {
    "extra_forbidden": "is not an element of {type} in FHIR R4",
    "missing": "is required",
}


def structure_issues(resource: dict[str, Any]) -> list[Issue]:
    """Every structural problem of a resource against its FHIR model; [] when it is valid."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or (model := _model(rtype)) is None:
        return [Issue(f"'{rtype}' is not a FHIR resource type.", "structure", "error",
                      "resourceType")]
    data = _strip_primitive_extension_values(resource)
    try:
        model.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            where = _location(rtype, tuple(err.get("loc", ())))
            template = _MESSAGES.get(err.get("type", ""))
            text = template.format(type=rtype) if template else str(err.get("msg", "is invalid"))
            text = text.rstrip(".")
            issues.append(Issue(f"{where}: {text}.", "structure", "error", where))
        return issues
    except (ValueError, TypeError) as exc:
        return [Issue(f"{rtype}: {exc}", "structure", "error", rtype)]
    return []


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """The top-level elements of `resource_type` that FHIR marks as summary (`isSummary`) or
    mandatory (min 1), as JSON names (choice types spelled out); empty for unknown types."""
    model = _model(resource_type)
    if model is None:
        return frozenset()
    return frozenset(
        str(field.alias or name) for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict)
        and (field.json_schema_extra.get("summary_element_property")
             or field.json_schema_extra.get("element_required")))


@cache
def mandatory_elements(resource_type: str) -> frozenset[str]:
    """The top-level elements of `resource_type` with min 1, as JSON names."""
    model = _model(resource_type)
    if model is None:
        return frozenset()
    return frozenset(
        str(field.alias or name) for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict)
        and field.json_schema_extra.get("element_required"))

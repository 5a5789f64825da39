"""Structure validation against FHIR models: the one module that imports fhir.resources.

R4 is our wire format; fhir.resources ships R4B models, which agree with R4 for the resources
the hub handles. Known departures (see shared/fhir-r4-examples/README.md) are handled here:
`_valueX` on Extension is valid R4 the library rejects, so it is set aside before the model sees
the resource. The models only judge; what the hub stores is the JSON it received.
"""

from __future__ import annotations

import re
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


# --- required bindings of the base spec on `code` elements ------------------------------------
# The models carry, for each `code` element bound `required` in the FHIR specification, the
# codes of its ValueSet (`enum_values`, generated from the spec's own ValueSets); the models do
# not enforce them, so `binding_issues` does. A list ending in "+" was cut short by the
# generator, and one with "mime" stands for all MIME types (CapabilityStatement.format); neither
# is used (they would refuse valid codes). The models are R4B's: every official R4 example
# passes (tests/fhir/test_bindings.py), so they agree with R4 where the hub's data goes.

_TYPE_NAME = re.compile(r"\babc\.(\w+)Type\b")


_Bound = tuple[frozenset[str] | None, str | None]


@cache
def _fields(model: Any) -> dict[str, _Bound]:
    """JSON name -> (the required codes, or None; the element's own model name, or None),
    for the elements that have either."""
    out: dict[str, _Bound] = {}
    for name, field in getattr(model, "model_fields", {}).items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        enums = extra.get("enum_values")
        codes = (frozenset(str(e) for e in enums)
                 if isinstance(enums, list) and enums and not {"+", "mime"} & set(enums)
                 else None)
        found = _TYPE_NAME.search(str(field.annotation))
        child = found.group(1) if found else None
        if child in ("Resource", "Element", "Extension", "Narrative", "DomainResource"):
            child = "Resource" if child in ("Resource", "DomainResource") else None
        if codes is not None or child is not None:
            out[str(field.alias or name)] = (codes, child)
    return out


@cache
def _datatype(name: str) -> type[Any] | None:
    try:
        cls = get_fhir_model_class(name)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) else None


def _binding_walk(model: Any, node: dict[str, Any], where: str,
                  issues: list[Issue]) -> None:
    fields = _fields(model)
    for key, value in node.items():
        if key not in fields:
            continue
        codes, child = fields[key]
        items = value if type(value) is list else [value]
        for i, item in enumerate(items):
            at = f"{where}.{key}" + (f"[{i}]" if isinstance(value, list) else "")
            if codes is not None and isinstance(item, str) and item not in codes:
                shown = ", ".join(sorted(codes)) if len(codes) <= 12 else \
                    ", ".join(sorted(codes)[:12]) + ", ..."
                issues.append(Issue(
                    f"{at}: '{item[:60]}' is not a code of the ValueSet FHIR R4 requires here "
                    f"({shown}).", "code-invalid", "error", at))
            elif child is not None and isinstance(item, dict):
                inner = (_model(str(item.get("resourceType"))) if child == "Resource"
                         else _datatype(child))
                if inner is not None:
                    _binding_walk(inner, item, at if child != "Resource"
                                  else str(item.get("resourceType")), issues)


def binding_issues(resource: dict[str, Any]) -> list[Issue]:
    """Codes outside the ValueSet a required binding of the base R4 specification names
    (e.g. Patient.gender, Address.use, Bundle.type), anywhere in the resource; [] when all
    bound codes are in their ValueSets."""
    model = _model(str(resource.get("resourceType")))
    if model is None:
        return []
    issues: list[Issue] = []
    _binding_walk(model, resource, str(resource["resourceType"]), issues)
    return issues

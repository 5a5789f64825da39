"""Structure validation against FHIR models (the one module that imports fhir.resources), the
characters R4 forbids in strings (hub.fhir.strings), and the required bindings of the base R4
specification.

R4 is our wire format; fhir.resources ships R4B models, which agree with R4 for the resources
the hub handles. Known departures (see shared/fhir-r4-examples/README.md) are handled here:
`_valueX` on Extension is valid R4 the library rejects, so it is set aside before the model sees
the resource. The models only judge; what the hub stores is the JSON it received. The bindings
come not from the models (their code lists are R4B's, some cut short) but from R4's own
StructureDefinitions and ValueSets, as a table derived from the official package
(fhir_profiles/r4/).

The models run in pydantic's lax mode, which turns `null` into "absent", a number into a
dateTime (a Unix time) and `true` into 1 (strict mode changes none of that for the FHIR
types), so `shape_issues` first walks the JSON against the models' field types and refuses
what R4's JSON rules forbid (http://hl7.org/fhir/R4/json.html): null (except in an array of
primitives whose `_name` array carries their extensions), empty arrays, objects and strings,
and a primitive in the wrong JSON type (a dateTime, code or id is a string, a boolean true or
false, an integer a number without a fraction, a decimal a number).
"""

from __future__ import annotations

import importlib
import json
import types
import typing
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from hub.errors import Issue
from hub.fhir.paths import PROFILES_DIR
from hub.fhir.strings import CONTROL, RULE, forbidden_character

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


def _has_control(node: Any) -> bool:
    """Whether a string under `node` holds a character R4 forbids (hub.fhir.strings)."""
    if isinstance(node, str):
        return CONTROL.search(node) is not None
    if isinstance(node, dict):
        for value in node.values():
            if _has_control(value):
                return True
    elif isinstance(node, list):
        for value in node:
            if _has_control(value):
                return True
    return False


def _control_issues(node: Any, at: str) -> list[Issue]:
    """An issue for each string under `node` (at path `at`) holding a character R4 forbids."""
    if isinstance(node, str):
        found = forbidden_character(node)
        if found is None:
            return []
        return [Issue(f"{at}: holds the control character {found}; {RULE}.", "value", "error",
                      at)]
    if isinstance(node, dict):
        return [i for key, value in node.items() for i in _control_issues(value, f"{at}.{key}")]
    if isinstance(node, list):
        return [i for n, value in enumerate(node) for i in _control_issues(value, f"{at}[{n}]")]
    return []


# --- JSON shape: what the lax models let through ---------------------------------------------
# A model's fields, as JSON name -> (kind, list?); kind is a FHIR primitive JSON kind
# ("string", "boolean", "integer", "decimal"), "element" (a `_name` primitive extension),
# "resource" (any resource: contained, Bundle.entry.resource), or the model of a complex type.
_JSON_KIND = {"string": "a JSON string", "boolean": "JSON true or false",
              "integer": "a JSON number without a fraction", "decimal": "a JSON number"}


def _shown(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    return f"'{value[:40]}'" if isinstance(value, str) else str(value)[:40]


def _fhir_name(marker: Any) -> str:
    name = type(marker).__name__
    return {"Xhtml": "xhtml"}.get(name, name[:1].lower() + name[1:])


def _field_of(annotation: Any) -> tuple[str | type[Any], str, bool] | None:
    """(kind, FHIR type name, list?) of a model field's annotation; None for what the walk
    does not judge."""
    many = False
    while True:
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin in (typing.Union, types.UnionType):
            if len(args) != 1:
                return None  # (str | list[str]: fhir_comments)
            annotation = args[0]
        elif origin is list:
            many, annotation = True, args[0]
        else:
            break
    if annotation is bool:
        return "boolean", "boolean", many
    if typing.get_origin(annotation) is typing.Annotated:
        base, *markers = typing.get_args(annotation)
        name = _fhir_name(markers[-1]) if markers else "string"
        if base is int:
            return "integer", name, many
        if base is Decimal:
            return "decimal", name, many
        return "string", name, many
    target = getattr(annotation, "_model_klass", None)
    if not isinstance(target, str):
        return None
    module, _, cls_name = target.rpartition(".")
    if cls_name == "Resource":
        return "resource", "Resource", many
    if cls_name == "FHIRPrimitiveExtension":
        return "element", "Element", many
    return getattr(importlib.import_module(module), cls_name), cls_name, many


@cache
def _shape(model: Any) -> dict[str, tuple[str | type[Any], str, bool]]:
    fields = {}
    for name, field in model.model_fields.items():
        found = _field_of(field.annotation)
        if found is not None:
            fields[str(field.alias or name)] = found
    return fields


def _json_kind(value: Any) -> str:
    if value is True or value is False:
        return "boolean"
    if isinstance(value, int | Decimal | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _primitive_issue(kind: str, name: str, value: Any, at: str) -> Issue | None:
    ok = (isinstance(value, str) if kind == "string"
          else value is True or value is False if kind == "boolean"
          else type(value) is int if kind == "integer"
          else type(value) in (int, Decimal, float))
    if ok:
        if value == "":
            return Issue(f"{at}: is an empty string; a FHIR {name} is never empty (leave the "
                         "element out).", "structure", "error", at)
        return None
    what = _json_kind(value)
    if kind == "integer" and isinstance(value, Decimal):
        what = "number with a fraction or exponent"
    shown = f" ({_shown(value)})" if what not in ("array", "object") else ""
    return Issue(f"{at}: is a JSON {what}{shown}; a FHIR {name} is "
                 f"{_JSON_KIND[kind]}.", "structure", "error", at)


def _shape_walk(model: Any, node: dict[str, Any], at: str, issues: list[Issue]) -> None:
    fields = _shape(model)
    for key, value in node.items():
        field = fields.get(key)
        if field is None:
            continue  # not an element of the model (its own error) or fhir_comments
        kind, name, many = field
        where = f"{at}.{key}"
        if value is None:
            issues.append(Issue(f"{where}: is null; FHIR JSON leaves out an element that has "
                                "no value.", "structure", "error", where))
            continue
        if not many:
            _shape_item(kind, name, value, where, issues)
            continue
        if type(value) is not list:
            continue  # one where an array is wanted: the model says so
        if not value:
            issues.append(Issue(f"{where}: is an empty array; FHIR JSON leaves out an element "
                                "that has no value.", "structure", "error", where))
            continue
        # null holds the place of a primitive that has only extensions, or of the extensions
        # of a primitive that has none: in an array with a `_name` (or `name`) array beside it
        twin = node.get(key[1:] if key.startswith("_") else f"_{key}")
        nulls_ok = (kind == "element" or isinstance(kind, str) and kind != "resource") \
            and type(twin) is list
        for n, item in enumerate(value):
            if item is None:
                if not nulls_ok:
                    issues.append(Issue(f"{where}[{n}]: is null; FHIR JSON has null only in an "
                                        "array of primitives with extensions.", "structure",
                                        "error", f"{where}[{n}]"))
                continue
            _shape_item(kind, name, item, f"{where}[{n}]", issues)


def _shape_item(kind: str | type[Any], name: str, value: Any, at: str,
                issues: list[Issue]) -> None:
    if isinstance(kind, str) and kind not in ("element", "resource"):
        found = _primitive_issue(kind, name, value, at)
        if found is not None:
            issues.append(found)
        return
    if type(value) is not dict:
        return  # the model says what it wants instead
    if not value:
        issues.append(Issue(f"{at}: is an empty object; FHIR JSON leaves out an element that "
                            "has no value.", "structure", "error", at))
        return
    if kind == "resource":
        rtype = value.get("resourceType")
        model = _model(rtype) if isinstance(rtype, str) else None
        if model is not None:
            _shape_walk(model, value, at, issues)
        return
    _shape_walk(_element_model() if isinstance(kind, str) else kind, value, at, issues)


@cache
def _element_model() -> type[Any]:
    from fhir.resources.R4B.fhirprimitiveextension import FHIRPrimitiveExtension
    return FHIRPrimitiveExtension


def shape_issues(resource: dict[str, Any]) -> list[Issue]:
    """What R4's JSON rules forbid that the models let through: null, empty arrays, objects
    and strings, and primitives in the wrong JSON type; [] when there is none."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or (model := _model(rtype)) is None:
        return []
    issues: list[Issue] = []
    _shape_walk(model, resource, rtype, issues)
    return issues


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
    issues = _control_issues(resource, rtype) if _has_control(resource) else []
    issues.extend(shape_issues(resource))
    named = {i.expression for i in issues}
    data = _strip_primitive_extension_values(resource)
    try:
        model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            where = _location(rtype, tuple(err.get("loc", ())))
            if where in named:
                continue  # the JSON shape already says what is wrong there
            template = _MESSAGES.get(err.get("type", ""))
            text = template.format(type=rtype) if template else str(err.get("msg", "is invalid"))
            text = text.rstrip(".")
            issues.append(Issue(f"{where}: {text}.", "structure", "error", where))
        return issues
    except (ValueError, TypeError, AttributeError) as exc:
        # A validator that fails on a wrong JSON type (an url's on a number: AttributeError)
        # instead of reporting it; the shape walk has named such an element already.
        if not named:
            issues.append(Issue(f"{rtype}: {exc}", "structure", "error", rtype))
    return issues


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


# --- required bindings of the base R4 specification ------------------------------------------
# The table (fhir_profiles/r4/required-bindings.json) is derived by scripts/r4_bindings.py from
# the official R4 core package (its README says which and how): for every element the R4
# StructureDefinitions bind `required`, the codes of its ValueSet, and the way to each such
# element from every resource and datatype (backbone elements, choice types spelled out,
# `contentReference`, contained and Bundle entry resources, extensions). A `code` must be a
# code of the ValueSet, a Coding its system and code; a CodeableConcept needs at least one such
# Coding (text alone does not meet a required binding; further codings may translate it).
# ValueSets the package cannot expand (MIME types, currencies, UCUM, a LOINC answer list) are
# listed in the table and not checked.

BINDINGS_FILE = PROFILES_DIR / "r4" / "required-bindings.json"
_SHOWN = 12  # codes named in a diagnostic


@dataclass(frozen=True)
class _ValueSet:
    url: str
    codes: frozenset[str]  # any system's, for `code` elements
    pairs: frozenset[tuple[str, str]]  # (system, code), for Coding and CodeableConcept

    def shown(self, *, systems: bool) -> str:
        """The ValueSet and (some of) its codes, for a diagnostic."""
        if not systems:
            listed = sorted(self.codes)
            more = ", ..." if len(listed) > _SHOWN else ""
            return f"{self.url}: {', '.join(listed[:_SHOWN])}{more}"
        parts, left = [], _SHOWN
        for system in sorted({s for s, _ in self.pairs}):
            codes = sorted(c for s, c in self.pairs if s == system)
            more = ", ..." if len(codes) > left else ""
            parts.append(f"system {system}: {', '.join(codes[:left])}{more}")
            left -= min(left, len(codes))
            if not left:
                break
        return f"{self.url}; {'; '.join(parts)}"


_Entry = tuple[str | None, _ValueSet | None, str | None]  # (kind, value set, node to descend)


@dataclass(frozen=True)
class _Bindings:
    nodes: dict[str, dict[str, _Entry]]
    unexpandable: dict[str, Any]


@cache
def _bindings() -> _Bindings:
    table = json.loads(BINDINGS_FILE.read_text(encoding="utf-8"))
    value_sets = {
        url: _ValueSet(url, frozenset(c for codes in by_system.values() for c in codes),
                       frozenset((s, c) for s, codes in by_system.items() for c in codes))
        for url, by_system in table["valueSets"].items()}
    nodes = {
        node: {key: (e.get("k"), value_sets[e["b"]] if "b" in e else None, e.get("n"))
               for key, e in children.items()}
        for node, children in table["nodes"].items()}
    return _Bindings(nodes, table["unexpandable"])


def unchecked_bindings() -> dict[str, Any]:
    """The required ValueSets of R4 the table could not expand: url -> reason and elements."""
    return dict(_bindings().unexpandable)


def _in(vs: _ValueSet, coding: Any) -> bool:
    if not isinstance(coding, dict):
        return False
    system, code = coding.get("system"), coding.get("code")
    return isinstance(system, str) and isinstance(code, str) and (system, code) in vs.pairs


def _coding_issue(vs: _ValueSet, coding: Any, at: str) -> Issue | None:
    if not isinstance(coding, dict) or _in(vs, coding):
        return None  # (not a Coding at all: structure_issues says so)
    system, code = coding.get("system"), coding.get("code")
    if not isinstance(code, str):
        what = "a coding without a code is not from"
    elif not isinstance(system, str):
        what = f"'{code[:60]}' has no system, so it is not from"
    else:
        what = f"'{system[:100]}|{code[:60]}' is not in"
    return Issue(f"{at}: {what} the ValueSet FHIR R4 requires here "
                 f"({vs.shown(systems=True)}).", "code-invalid", "error", at)


def _check(kind: str, vs: _ValueSet, item: Any, at: str, issues: list[Issue]) -> None:
    if kind == "code":
        if isinstance(item, str) and item not in vs.codes:
            issues.append(Issue(
                f"{at}: '{item[:60]}' is not a code of the ValueSet FHIR R4 requires here "
                f"({vs.shown(systems=False)}).", "code-invalid", "error", at))
    elif kind == "Coding":
        found = _coding_issue(vs, item, at)
        if found is not None:
            issues.append(found)
    elif isinstance(item, dict):  # CodeableConcept
        codings = item.get("coding")
        codings = codings if isinstance(codings, list) else []
        if any(_in(vs, c) for c in codings):
            return
        if not codings:
            issues.append(Issue(
                f"{at}: has no coding from the ValueSet FHIR R4 requires here "
                f"({vs.shown(systems=True)}); text alone does not meet a required binding.",
                "code-invalid", "error", at))
        for j, coding in enumerate(codings):
            found = _coding_issue(vs, coding, f"{at}.coding[{j}]")
            if found is not None:
                issues.append(found)


def _binding_walk(nodes: dict[str, dict[str, _Entry]], node: str, data: dict[str, Any],
                  where: str, issues: list[Issue]) -> None:
    children = nodes.get(node)
    if children is None:
        return
    for key, value in data.items():
        entry = children.get(key)
        if entry is None:
            continue
        kind, vs, target = entry
        many = type(value) is list
        for i, item in enumerate(value if many else (value,)):
            at = f"{where}.{key}[{i}]" if many else f"{where}.{key}"
            if vs is not None and kind is not None:
                _check(kind, vs, item, at, issues)
            if target is None or type(item) is not dict:
                continue
            if target == "*":  # a resource: contained, a Bundle entry, a Parameters value
                rtype = item.get("resourceType")
                if isinstance(rtype, str) and is_resource_type(rtype):
                    _binding_walk(nodes, rtype, item, at, issues)
            else:
                _binding_walk(nodes, target, item, at, issues)


def binding_issues(resource: dict[str, Any]) -> list[Issue]:
    """Codes outside the ValueSet a required binding of the base R4 specification names
    (e.g. Patient.gender, Encounter.status, Condition.clinicalStatus), anywhere in the
    resource; [] when every bound code is in its ValueSet."""
    nodes = _bindings().nodes
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not is_resource_type(rtype):
        return []
    issues: list[Issue] = []
    _binding_walk(nodes, rtype, resource, rtype, issues)
    return issues

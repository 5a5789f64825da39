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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    data = _strip_primitive_extension_values(resource)
    try:
        model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            where = _location(rtype, tuple(err.get("loc", ())))
            template = _MESSAGES.get(err.get("type", ""))
            text = template.format(type=rtype) if template else str(err.get("msg", "is invalid"))
            text = text.rstrip(".")
            issues.append(Issue(f"{where}: {text}.", "structure", "error", where))
        return issues
    except (ValueError, TypeError) as exc:
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

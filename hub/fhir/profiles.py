"""The hub's conformance resources (fhir_profiles/) and what it takes to conform to them.

- `conformance()`: every CodeSystem, ValueSet, StructureDefinition, MessageDefinition and
  SearchParameter in fhir_profiles/, loaded once.
- `validate_against(resource, profile_url)`: a constraint profile's differential applied to a
  resource: cardinality (nested paths too; slices only on `extension`, by url), fixed[x],
  pattern[x] (the instance contains the pattern), required bindings to our ValueSets, and
  FHIRPath invariants. Every code of one of our CodeSystems, and every extension of ours,
  found anywhere in the resource is checked as well.
- `message_issues(bundle)`: what a message needs beyond each resource's own validity (CONTRACT
  section 4): the header against carehub-message-header; the focus the event's
  MessageDefinition names, each resource of a focus type against its profile; references
  inside the bundle; the Patient it is about; identifiers. `hub.fhir.validation.
  validate_message` adds the structure checks of every entry: call that one.

Issue expressions are FHIRPath-like (`Bundle.entry[1].resource.period.end`); the diagnostics
name the element by its type path (`Encounter.period.end`) and say what it is for.
This module judges JSON only; model checks stay in hub.fhir.structure.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models as fhirpath_models
from fhirpathpy.parser import parse as fhirpath_parse

from hub.errors import Issue
from hub.fhir.identifiers import DNR_SYSTEM, FNR_SYSTEM
from hub.fhir.paths import PROFILES_DIR
from hub.fhir.structure import structure_issues
from hub.fhir.vocab import BASE, EVENT_SYSTEM

JSON = dict[str, Any]

CONFORMANCE_TYPES: tuple[str, ...] = (
    "CodeSystem", "ValueSet", "StructureDefinition", "MessageDefinition", "SearchParameter")
MESSAGE_HEADER_PROFILE = f"{BASE}/StructureDefinition/carehub-message-header"

_R4 = fhirpath_models["r4"]
_PATIENT_POSITIONS = frozenset({"subject", "patient", "for"})


# --- the conformance resources ---------------------------------------------------------------


class Conformance:
    """A set of conformance resources, indexed by canonical url and by type and id."""

    def __init__(self, resources: Iterable[JSON]) -> None:
        self.resources: tuple[JSON, ...] = tuple(resources)
        self._by_url: dict[str, JSON] = {}
        self._by_key: dict[tuple[str, str], JSON] = {}
        for res in self.resources:
            key = (str(res.get("resourceType")), str(res.get("id")))
            if key in self._by_key:
                raise ValueError(f"{key[0]}/{key[1]} is defined twice in the conformance set")
            self._by_key[key] = res
            url = res.get("url")
            if isinstance(url, str):
                if url in self._by_url:
                    raise ValueError(f"the canonical url {url} is used twice")
                self._by_url[url] = res
        self._profiles: dict[str, _Profile] = {}
        self._value_sets: dict[str, frozenset[tuple[str, str]] | None] = {}

    def with_resources(self, extra: Iterable[JSON]) -> Conformance:
        """A new set: these resources and `extra` (for tests and tools)."""
        return Conformance([*self.resources, *extra])

    def of_type(self, resource_type: str) -> list[JSON]:
        """Every resource of one type, by id."""
        return sorted((r for r in self.resources if r.get("resourceType") == resource_type),
                      key=lambda r: str(r.get("id")))

    def get(self, resource_type: str, resource_id: str) -> JSON | None:
        """The resource of that type and id, or None."""
        return self._by_key.get((resource_type, resource_id))

    def by_url(self, url: str) -> JSON | None:
        """The resource with that canonical url (a `|version` suffix is ignored), or None."""
        return self._by_url.get(url.split("|", 1)[0])

    def message_definition(self, event: str) -> JSON | None:
        """The MessageDefinition of an event code of message-event, or None."""
        found = self.by_url(f"{BASE}/MessageDefinition/{event}")
        return found if found and found.get("resourceType") == "MessageDefinition" else None

    def code_system_codes(self, url: str) -> frozenset[str] | None:
        """The codes of one of our CodeSystems, or None when the system is not ours."""
        cs = self.by_url(url)
        if cs is None or cs.get("resourceType") != "CodeSystem":
            return None
        return frozenset(_concept_codes(cs.get("concept") or []))

    def value_set_codes(self, url: str) -> frozenset[tuple[str, str]] | None:
        """(system, code) of every code in one of our ValueSets, or None when unknown."""
        url = url.split("|", 1)[0]
        if url not in self._value_sets:
            self._value_sets[url] = self._expand(url)
        return self._value_sets[url]

    def _expand(self, url: str) -> frozenset[tuple[str, str]] | None:
        vs = self.by_url(url)
        if vs is None or vs.get("resourceType") != "ValueSet":
            return None
        codes: set[tuple[str, str]] = set()
        for include in (vs.get("compose") or {}).get("include") or []:
            system = include.get("system")
            if not isinstance(system, str):
                return None
            listed = [c.get("code") for c in include.get("concept") or []]
            known = self.code_system_codes(system)
            if listed:
                codes.update((system, c) for c in listed if isinstance(c, str))
            elif known is not None:
                codes.update((system, c) for c in known)
            else:
                return None  # a whole external code system: not ours to expand
        return frozenset(codes)

    def profile(self, url: str) -> _Profile | None:
        """A StructureDefinition compiled for validation, or None when unknown."""
        url = url.split("|", 1)[0]
        if url not in self._profiles:
            sd = self.by_url(url)
            if sd is None or sd.get("resourceType") != "StructureDefinition":
                return None
            self._profiles[url] = _compile(sd)
        return self._profiles[url]


def _concept_codes(concepts: list[JSON]) -> Iterator[str]:
    for concept in concepts:
        if isinstance(concept.get("code"), str):
            yield concept["code"]
        yield from _concept_codes(concept.get("concept") or [])


def load(directory: Path = PROFILES_DIR) -> Conformance:
    """Read every JSON file of `directory`: a conformance resource, or a Bundle of them."""
    resources: list[JSON] = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("resourceType") == "Bundle":
            resources.extend(e["resource"] for e in data.get("entry") or [] if "resource" in e)
        else:
            resources.append(data)
    return Conformance(r for r in resources if r.get("resourceType") in CONFORMANCE_TYPES)


@lru_cache(maxsize=1)
def conformance() -> Conformance:
    """The hub's conformance resources, read from fhir_profiles/ once per process."""
    return load()


# --- profiles compiled from their differential ---------------------------------------------


@dataclass(frozen=True)
class _Step:
    name: str  # the JSON element name; a choice ends in [x]
    slice_url: str | None = None  # an extension slice: the url it selects


@dataclass(frozen=True)
class _Element:
    path: str
    steps: tuple[_Step, ...]
    short: str
    min: int | None
    max: str | None
    types: tuple[str, ...]
    fixed: Any
    pattern: Any
    binding: tuple[str, str] | None  # (strength, value set)
    constraints: tuple[JSON, ...]


_ABSENT = object()


@dataclass(frozen=True)
class _Profile:
    url: str
    id: str
    type: str
    is_resource: bool
    root_constraints: tuple[JSON, ...]
    elements: tuple[_Element, ...] = field(default_factory=tuple)


def _slice_url(elements: dict[str, JSON], slice_id: str, slice_name: str) -> str:
    """The url an extension slice selects: its profile, a fixed url child, or its name."""
    definition = elements.get(slice_id, {})
    for type_ in definition.get("type") or []:
        for profile in type_.get("profile") or []:
            return str(profile).split("|", 1)[0]
    fixed = elements.get(f"{slice_id}.url", {}).get("fixedUri")
    return str(fixed) if fixed else slice_name


def _compile(sd: JSON) -> _Profile:
    """The differential of a StructureDefinition as rules (non-extension slices are skipped)."""
    differential = (sd.get("differential") or {}).get("element") or []
    by_id = {str(e.get("id") or e.get("path")): e for e in differential}
    rtype = str(sd.get("type"))
    root_constraints: tuple[JSON, ...] = ()
    elements: list[_Element] = []
    for eid, definition in by_id.items():
        segments = eid.split(".")
        if len(segments) == 1:
            root_constraints = tuple(definition.get("constraint") or [])
            continue
        steps: list[_Step] = []
        supported = True
        for i, segment in enumerate(segments[1:], start=1):
            name, _, slice_name = segment.partition(":")
            if not slice_name:
                steps.append(_Step(name))
            elif name in ("extension", "modifierExtension"):
                prefix = ".".join(segments[:i + 1])
                steps.append(_Step(name, _slice_url(by_id, prefix, slice_name)))
            else:
                supported = False
        if not supported:
            continue  # slices other than extensions are not evaluated
        fixed = next((v for k, v in definition.items() if k.startswith("fixed")), _ABSENT)
        pattern = next((v for k, v in definition.items() if k.startswith("pattern")), _ABSENT)
        binding = definition.get("binding")
        elements.append(_Element(
            path=str(definition.get("path")),
            steps=tuple(steps),
            short=str(definition.get("short") or ""),
            min=definition.get("min"),
            max=definition.get("max"),
            types=tuple(str(t.get("code")) for t in definition.get("type") or []),
            fixed=fixed,
            pattern=pattern,
            binding=(str(binding.get("strength")), str(binding.get("valueSet")))
            if isinstance(binding, dict) and binding.get("valueSet") else None,
            constraints=tuple(definition.get("constraint") or []),
        ))
    return _Profile(url=str(sd.get("url")), id=str(sd.get("id")), type=rtype,
                    is_resource=sd.get("kind") == "resource",
                    root_constraints=root_constraints, elements=tuple(elements))


# --- walking instances -------------------------------------------------------------------


Node = tuple[Any, str]
"""A value in the instance and its expression relative to the root ('' for the root)."""


def _slice_suffix(key: str, url: str) -> str:
    return f".extension('{url}')" if key == "extension" else f".{key}.where(url = '{url}')"


def _children(node: Any, step: _Step) -> list[Node]:
    """The values under `node` that `step` names, each with its expression suffix."""
    if not isinstance(node, dict):
        return []
    if step.name.endswith("[x]"):
        stem = step.name[:-3]
        keys = [k for k in node if k.startswith(stem) and len(k) > len(stem)
                and k[len(stem)].isupper()]
    else:
        keys = [step.name] if step.name in node else []
    out: list[Node] = []
    for key in keys:
        value = node[key]
        if value is None:
            continue
        items = ([(v, f".{key}[{i}]") for i, v in enumerate(value)] if isinstance(value, list)
                 else [(value, f".{key}")])
        if step.slice_url is not None:
            matched = [v for v, _ in items if isinstance(v, dict)
                       and v.get("url") == step.slice_url]
            base = _slice_suffix(key, step.slice_url)
            items = [(v, base + (f"[{i}]" if len(matched) > 1 else ""))
                     for i, v in enumerate(matched)]
        out.extend(items)
    return out


def _nodes(root: Any, steps: tuple[_Step, ...]) -> list[Node]:
    found: list[Node] = [(root, "")]
    for step in steps:
        found = [(value, suffix + rel) for node, suffix in found
                 for value, rel in _children(node, step)]
    return found


def _missing_suffix(step: _Step, types: tuple[str, ...]) -> str:
    """How a missing element is named: `occurrencePeriod` when the choice has one type."""
    if step.slice_url is not None:
        return _slice_suffix(step.name, step.slice_url)
    if step.name.endswith("[x]") and len(types) == 1:
        return f".{step.name[:-3]}{types[0][:1].upper()}{types[0][1:]}"
    return f".{step.name}"


def _describe(value: Any) -> str:
    """A value in words: codes as system|code, primitives quoted, the rest as JSON."""
    if isinstance(value, dict):
        codings = value.get("coding") if isinstance(value.get("coding"), list) else None
        if codings is not None:
            shown = [_describe(c) for c in codings if isinstance(c, dict)]
            return " or ".join(shown) if shown else f"text only ({value.get('text')!r})"
        if "code" in value:
            return f"{value.get('system', '')}|{value.get('code')}"
    if isinstance(value, str):
        return f"'{value}'"
    return json.dumps(value, ensure_ascii=False, default=str)


def _contains(value: Any, pattern: Any) -> bool:
    """Pattern semantics: every element of the pattern is in the value (lists: some item)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and _contains(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(_contains(v, p) for v in items) for p in pattern)
    return bool(value == pattern)


def _under(suffix: str, prefixes: Iterable[str]) -> bool:
    return any(suffix == p or suffix.startswith((p + ".", p + "[")) for p in prefixes)


# --- validation against a profile --------------------------------------------------------


@dataclass
class _Run:
    """One validation: where issues point, how elements are named, and what for."""

    registry: Conformance
    resource: JSON  # the resource being validated (%resource)
    where: str  # the expression of the validated node in Issue.expression
    name: str  # the same node named by its type path, for diagnostics
    purpose: str  # "for a discharge-notice message"
    issues: list[Issue] = field(default_factory=list)
    coded: set[str] = field(default_factory=set)  # suffixes whose codes a binding judged

    def add(self, suffix: str, text: str, code: str, severity: str = "error") -> None:
        self.issues.append(Issue(text, code, severity, self.where + suffix))

    def named(self, suffix: str) -> str:
        return self.name + suffix


def validate_against(resource: JSON, profile_url: str, *, where: str | None = None,
                     purpose: str | None = None,
                     registry: Conformance | None = None) -> list[Issue]:
    """Every way `resource` departs from the profile; [] when it conforms.

    `where` is the expression of the resource in a larger one (`Bundle.entry[1].resource`);
    `purpose` finishes sentences such as "... is required {purpose}: the discharge time".
    An unknown profile, or one for another type, is itself an issue.
    """
    reg = registry or conformance()
    rtype = str(resource.get("resourceType"))
    run = _Run(reg, resource, where or rtype, rtype, purpose or f"by profile {profile_url}")
    profile = reg.profile(profile_url)
    if profile is None:
        run.add("", f"{profile_url} is not a profile this hub knows; its profiles are listed "
                    "at /fhir/StructureDefinition.", "not-found")
        return run.issues
    if profile.is_resource and profile.type != rtype:
        run.add("", f"The profile {profile.id} is for {profile.type} resources; this is a "
                    f"{rtype}.", "invalid")
        return run.issues
    if purpose is None:
        run.purpose = f"by profile {profile.id}"
    _apply(run, profile, resource)
    _local_definitions(run, resource, "")
    return run.issues


def local_definition_issues(resource: JSON, *, where: str | None = None,
                            registry: Conformance | None = None) -> list[Issue]:
    """Codes of our CodeSystems and extensions of ours anywhere in `resource`, checked."""
    rtype = str(resource.get("resourceType"))
    run = _Run(registry or conformance(), resource, where or rtype, rtype, "")
    _local_definitions(run, resource, "")
    return run.issues


def _apply(run: _Run, profile: _Profile, root: Any) -> None:
    for constraint in profile.root_constraints:
        _invariant(run, constraint, root, "", None if profile.is_resource else profile.type)
    for element in profile.elements:
        parents = _nodes(root, element.steps[:-1])
        last = element.steps[-1]
        for parent, parent_suffix in parents:
            children = _children(parent, last)
            _cardinality(run, element, parent_suffix + _missing_suffix(last, element.types),
                         len(children))
            for value, suffix in children:
                _check_value(run, element, value, parent_suffix + suffix)


def _cardinality(run: _Run, element: _Element, suffix: str, count: int) -> None:
    name = run.named(suffix)
    what = f": {element.short}" if element.short else ""
    if element.min and count < element.min:
        if element.min == 1:
            run.add(suffix, f"{name} is required {run.purpose}{what}.", "required")
        else:
            run.add(suffix, f"{name} needs at least {element.min} values {run.purpose}{what}; "
                            f"it has {count}.", "required")
    if element.max not in (None, "*") and count > int(str(element.max)):
        if element.max == "0":
            run.add(suffix, f"{name} must not be present {run.purpose}.", "structure")
        else:
            run.add(suffix, f"{name} may have at most {element.max} value"
                            f"{'' if element.max == '1' else 's'} {run.purpose}{what}; it has "
                            f"{count}.", "structure")


def _check_value(run: _Run, element: _Element, value: Any, suffix: str) -> None:
    name = run.named(suffix)
    what = f" ({element.short})" if element.short else ""
    if element.types and element.path.endswith("[x]"):
        stem = element.path.rsplit(".", 1)[-1][:-3]
        key = suffix.rsplit(".", 1)[-1].split("[", 1)[0].split("(", 1)[0]
        kind = key[len(stem):]
        if key.startswith(stem) and kind not in {t[:1].upper() + t[1:] for t in element.types}:
            allowed = " or ".join(element.types)
            run.add(suffix, f"{name} must be of type {allowed} {run.purpose}{what}; it is a "
                            f"{kind}.", "structure")
            return
    if element.fixed is not _ABSENT and value != element.fixed:
        run.add(suffix, f"{name} must be {_describe(element.fixed)} {run.purpose}{what}; it "
                        f"is {_describe(value)}.", "value")
    if element.pattern is not _ABSENT and not _contains(value, element.pattern):
        run.add(suffix, f"{name} must be {_describe(element.pattern)} {run.purpose}{what}; it "
                        f"is {_describe(value)}.", "value")
    if element.binding is not None:
        _binding(run, element, value, suffix)
    for constraint in element.constraints:
        _invariant(run, constraint, value, suffix, element.path)


def _binding(run: _Run, element: _Element, value: Any, suffix: str) -> None:
    assert element.binding is not None
    strength, vs_url = element.binding
    if strength != "required" or not vs_url.startswith(f"{BASE}/ValueSet/"):
        return  # other strengths, and other people's value sets, are not checked here
    allowed = run.registry.value_set_codes(vs_url)
    name = run.named(suffix)
    if allowed is None:
        run.add(suffix, f"{name} is bound to {vs_url}, a value set this hub does not have.",
                "not-found")
        return
    run.coded.add(suffix)
    if isinstance(value, str):
        ok = any(code == value for _, code in allowed)
    elif isinstance(value, dict) and isinstance(value.get("coding"), list):
        ok = any(_coded_in(c, allowed) for c in value["coding"])
    elif isinstance(value, dict):
        ok = _coded_in(value, allowed)
    else:
        ok = False
    if not ok:
        codes = ", ".join(sorted(code for _, code in allowed))
        systems = ", ".join(sorted({system for system, _ in allowed}))
        run.add(suffix, f"{name} must be a code of {systems} ({codes}) {run.purpose}; it is "
                        f"{_describe(value)}.", "code-invalid")


def _coded_in(coding: Any, allowed: frozenset[tuple[str, str]]) -> bool:
    """Whether `coding` is a Coding whose system and code are among `allowed`; a system or
    code of the wrong JSON type (a list: unhashable) is in no value set."""
    if not isinstance(coding, dict):
        return False
    system, code = coding.get("system"), coding.get("code")
    return isinstance(system, str | None) and isinstance(code, str | None) \
        and (system, code) in allowed


@cache
def _parsed(expression: str) -> Any:
    """An invariant parsed once: parsing costs far more than evaluating (bench/ingest.py)."""
    return fhirpath_parse(expression)  # type: ignore[no-untyped-call]


def _evaluate(node: Any, expression: str, base: str | None, context: JSON) -> Any:
    """fhirpathpy.evaluate, with the expression parsed once."""
    resource = node if base is None else ResourceNode.create_node(  # type: ignore[no-untyped-call]
        node, base)
    return apply_parsed_path(  # type: ignore[no-untyped-call]
        resource, _parsed(expression), context, _R4)


def _invariant(run: _Run, constraint: JSON, node: Any, suffix: str, base: str | None) -> None:
    expression = constraint.get("expression")
    if not isinstance(expression, str):
        return
    key = constraint.get("key", "?")
    severity = "warning" if constraint.get("severity") == "warning" else "error"
    try:
        result = _evaluate(node, expression, base, {"resource": run.resource,
                                                    "rootResource": run.resource})
    except Exception as exc:  # a broken rule must not pass silently
        run.add(suffix, f"{run.named(suffix)}: rule {key} could not be checked ({exc}).",
                "invariant", severity)
        return
    if result != [True]:
        run.add(suffix, f"{run.named(suffix)} breaks rule {key} {run.purpose}: "
                        f"{constraint.get('human', expression)}", "invariant", severity)


def _local_definitions(run: _Run, node: Any, suffix: str) -> None:
    """Codes of our CodeSystems must exist; extensions of ours must be known and conform."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _local_definitions(run, item, f"{suffix}[{i}]")
        return
    if not isinstance(node, dict):
        return
    system, code = node.get("system"), node.get("code")
    if isinstance(system, str) and isinstance(code, str) and not _under(suffix, run.coded):
        codes = run.registry.code_system_codes(system)
        if codes is not None and code not in codes:
            run.add(suffix, f"{run.named(suffix)}: '{code}' is not a code of {system} (its "
                            f"codes: {', '.join(sorted(codes))}).", "code-invalid")
    for key, value in node.items():
        if key in ("extension", "modifierExtension") and isinstance(value, list):
            for i, ext in enumerate(value):
                _extension(run, ext, suffix, key, i)
        elif not key.startswith("_"):
            _local_definitions(run, value, f"{suffix}.{key}")


def _extension(run: _Run, ext: Any, parent: str, key: str, index: int) -> None:
    """One extension: ours must be defined here and conform to its definition."""
    url = ext.get("url") if isinstance(ext, dict) else None
    if not isinstance(url, str) or not url.startswith(f"{BASE}/StructureDefinition/"):
        _local_definitions(run, ext, f"{parent}.{key}[{index}]")
        return
    profile = run.registry.profile(url)
    if profile is None or profile.type != "Extension":
        suffix = f"{parent}.{key}[{index}]"
        run.add(suffix, f"{run.named(suffix)}: {url} is not an extension this hub defines.",
                "structure")
        return
    named = parent + _slice_suffix(key, url)
    inner = _Run(run.registry, run.resource, run.where + named, run.name + named, run.purpose)
    _apply(inner, profile, ext)
    _local_definitions(inner, ext, "")
    run.issues.extend(inner.issues)


# --- messages ----------------------------------------------------------------------------


def message_resources(bundle: Any) -> list[tuple[int, JSON]]:
    """(index, resource) of every entry of a message that carries a resource."""
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    if not isinstance(entries, list):
        return []
    return [(i, e["resource"]) for i, e in enumerate(entries)
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
            and isinstance(e["resource"].get("resourceType"), str)]


def event_code(header: JSON) -> str | None:
    """The message-event code of a MessageHeader, or None."""
    coding = header.get("eventCoding")
    if isinstance(coding, dict) and coding.get("system") == EVENT_SYSTEM:
        code = coding.get("code")
        return code if isinstance(code, str) else None
    return None


def patient_aliases(bundle: JSON) -> dict[str, str]:
    """Dangling `urn:uuid:` references in patient positions (subject, patient, for), each
    mapped to the fullUrl of the message's one Patient entry; {} when there is not exactly
    one Patient. Senders reuse the urn:uuid they gave the patient in an earlier message (the
    shared examples 08 to 12 do); the hub matches people by fødselsnummer, so such a
    reference can only mean the Patient the message is about."""
    entries = bundle.get("entry") or []
    urls = {e["fullUrl"] for e in entries if isinstance(e, dict)
            and isinstance(e.get("fullUrl"), str)}
    patients = [str(entries[i].get("fullUrl")) for i, resource in message_resources(bundle)
                if resource["resourceType"] == "Patient"]
    if len(patients) != 1:
        return {}
    out: dict[str, str] = {}
    for _, resource in message_resources(bundle):
        for ref, key, _suffix in _references(resource, "", None):
            if ref.startswith("urn:uuid:") and ref not in urls and key in _PATIENT_POSITIONS:
                out[ref] = patients[0]
    return out


def _references(node: Any, suffix: str, key: str | None) -> Iterator[tuple[str, str | None,
                                                                              str]]:
    """(reference, the element it sits in, its expression suffix) of every Reference."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _references(item, f"{suffix}[{i}]", key)
    elif isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield ref, key, suffix
        for k, value in node.items():
            if not k.startswith("_"):
                yield from _references(value, f"{suffix}.{k}", k)


def _bundle_shape(bundle: JSON, issues: list[Issue]) -> tuple[dict[int, JSON],
                                                                dict[str, int]]:
    """The entries' resources by index, and entry index by fullUrl; shape problems noted."""
    entries = bundle["entry"]
    shell = {**bundle, "entry": [{k: v for k, v in e.items() if k != "resource"}
                                 if isinstance(e, dict) else e for e in entries]}
    issues.extend(structure_issues(shell))
    resources: dict[int, JSON] = {}
    full_urls: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            issues.append(Issue(f"{where} carries no resource; every entry of a message carries "
                                "one.", "required", "error", f"{where}.resource"))
            continue
        resources[i] = resource
        full_url = entry.get("fullUrl")
        if not isinstance(full_url, str) or not full_url:
            issues.append(Issue(f"{where}.fullUrl is required: inside a message, references "
                                "point at entries by their fullUrl.", "required", "error",
                                f"{where}.fullUrl"))
        elif full_url in full_urls:
            issues.append(Issue(f"{where}.fullUrl {full_url} is also the fullUrl of "
                                f"Bundle.entry[{full_urls[full_url]}]; each entry has its own.",
                                "invalid", "error", f"{where}.fullUrl"))
        else:
            full_urls[full_url] = i
    return resources, full_urls


def _reference_issues(bundle: JSON, resources: dict[int, JSON],
                      full_urls: dict[str, int]) -> list[Issue]:
    aliases = patient_aliases(bundle)
    issues = []
    for i, resource in sorted(resources.items()):
        where = f"Bundle.entry[{i}].resource"
        for ref, _key, suffix in _references(resource, "", None):
            if not ref.startswith("urn:uuid:") or ref in full_urls:
                continue
            expr = f"{where}{suffix}.reference"
            name = f"{resource['resourceType']}{suffix}.reference"
            if ref in aliases:
                issues.append(Issue(
                    f"{name} {ref} is no entry of this message; it is taken to mean the "
                    f"message's Patient ({aliases[ref]}), whom the hub matches by fødselsnummer. "
                    "Point at the Patient entry's fullUrl.", "not-found", "warning", expr))
            else:
                issues.append(Issue(
                    f"{name} {ref} is no entry of this message. Inside a message a reference "
                    "points at an entry's fullUrl, or names a stored resource as Type/id or by "
                    "identifier.", "not-found", "error", expr))
    return issues


def _a(event: str) -> str:
    """'an admission-notice', 'a discharge-notice'."""
    return f"{'an' if event[:1] in 'aeiou' else 'a'} {event}"


def _expected(low: int, high: str) -> str:
    if high == "*":
        return f"at least {low}"
    if str(low) == high:
        return f"exactly {low}"
    return f"{low} to {high}" if low else f"at most {high}"


def _focus_issues(event: str, definition: JSON, header: JSON, resources: dict[int, JSON],
                  full_urls: dict[str, int]) -> list[Issue]:
    issues = []
    where = "Bundle.entry[0].resource.focus"
    focus = header.get("focus")
    types: list[str] = []
    for j, ref in enumerate(focus if isinstance(focus, list) else []):
        target = ref.get("reference") if isinstance(ref, dict) else None
        index = full_urls.get(target) if isinstance(target, str) else None
        if index is None or index not in resources:
            issues.append(Issue(
                f"MessageHeader.focus[{j}] ({target or 'no reference'}) must point at an entry "
                "of this message by its fullUrl: a message carries what it is about.",
                "not-found", "error", f"{where}[{j}]"))
            continue
        types.append(resources[index]["resourceType"])
    counts = Counter(types)
    wanted = {str(f.get("code")): f for f in definition.get("focus") or []}
    for code, spec in wanted.items():
        low, high = int(spec.get("min", 0)), str(spec.get("max", "*"))
        n = counts.get(code, 0)
        if n < low or (high != "*" and n > int(high)):
            issues.append(Issue(
                f"{_a(event).capitalize()} message names {_expected(low, high)} {code} in "
                f"MessageHeader.focus; this one names {n}.",
                "required" if n < low else "structure", "error", where))
    for code, n in counts.items():
        if code not in wanted:
            issues.append(Issue(
                f"{_a(event).capitalize()} message has no {code} as its focus (its focus: "
                f"{', '.join(wanted)}); MessageHeader.focus names {n}.", "structure", "error",
                where))
    return issues


def _identifiers(resource: JSON) -> list[JSON]:
    ident = resource.get("identifier")
    items = [ident] if isinstance(ident, dict) else ident if isinstance(ident, list) else []
    return [i for i in items if isinstance(i, dict) and i.get("value")]


def _carried_issues(event: str, bundle: JSON, resources: dict[int, JSON]) -> list[Issue]:
    """The Patient the message is about, and sender-chosen identifiers on everything else."""
    issues = []
    entries = bundle["entry"]
    patients = [i for i, r in resources.items() if r["resourceType"] == "Patient"]
    if len(patients) != 1:
        issues.append(Issue(
            f"{_a(event).capitalize()} message carries the Patient it is about, once; it has "
            f"{len(patients)} Patient entries.",
            "required" if not patients else "structure", "error", "Bundle.entry"))
    for i, resource in sorted(resources.items()):
        where = f"Bundle.entry[{i}].resource.identifier"
        rtype = resource["resourceType"]
        if rtype == "Patient":
            if not any(ident.get("system") in (FNR_SYSTEM, DNR_SYSTEM)
                       for ident in _identifiers(resource)):
                issues.append(Issue(
                    f"Patient.identifier: the Patient needs a fødselsnummer ({FNR_SYSTEM}) or "
                    f"D-nummer ({DNR_SYSTEM}); the hub matches people by it.", "required",
                    "error", where))
        elif i > 0 and not _identifiers(resource):
            full_url = str(entries[i].get("fullUrl") or "")
            if not full_url.startswith(("http://", "https://")):  # not a stored resource
                issues.append(Issue(
                    f"{rtype}.identifier is required in a message: the hub matches every "
                    "resource but the Patient by its type and the identifier its sender "
                    "chose.", "required", "error", where))
    return issues


def message_issues(bundle: Any, *, registry: Conformance | None = None) -> list[Issue]:
    """What makes `bundle` unacceptable as a CareHub message, beyond each entry's own FHIR
    structure (see hub.fhir.validation.validate_message); warnings included."""
    reg = registry or conformance()
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return [Issue("A message is a Bundle of type message.", "structure", "error", "Bundle")]
    issues: list[Issue] = []
    if bundle.get("type") != "message":
        found = _describe(bundle.get("type"))
        issues.append(Issue(f"Bundle.type must be 'message'; it is {found}.", "value", "error",
                            "Bundle.type"))
    if not isinstance(bundle.get("entry"), list) or not bundle["entry"]:
        issues.append(Issue("A message Bundle has entries, its MessageHeader first.", "required",
                            "error", "Bundle.entry"))
        return issues
    resources, full_urls = _bundle_shape(bundle, issues)
    header = resources.get(0)
    if header is None or header.get("resourceType") != "MessageHeader":
        issues.append(Issue("Bundle.entry[0] must be the MessageHeader of the message.",
                            "structure", "error", "Bundle.entry[0].resource"))
        return issues
    issues.extend(validate_against(header, MESSAGE_HEADER_PROFILE,
                                   where="Bundle.entry[0].resource",
                                   purpose="in a CareHub message", registry=reg))
    issues.extend(_reference_issues(bundle, resources, full_urls))
    event = event_code(header)
    definition = reg.message_definition(event) if event else None
    is_acknowledgement = "response" in header
    profiled: dict[str, str] = {}
    if definition is not None and event is not None and not is_acknowledgement:
        issues.extend(_focus_issues(event, definition, header, resources, full_urls))
        profiled = {str(f.get("code")): str(f["profile"])
                    for f in definition.get("focus") or [] if f.get("profile")}
        issues.extend(_carried_issues(event, bundle, resources))
    for i, resource in sorted(resources.items()):
        if i == 0:
            continue
        where = f"Bundle.entry[{i}].resource"
        profile = profiled.get(resource["resourceType"])
        if profile and event is not None:
            issues.extend(validate_against(resource, profile, where=where,
                                           purpose=f"for {_a(event)} message", registry=reg))
        else:
            issues.extend(local_definition_issues(resource, where=where, registry=reg))
    return issues

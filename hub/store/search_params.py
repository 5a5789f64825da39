"""The search parameters the store indexes, loaded from fhir_profiles/search-parameters.json.

Each SearchParameter's FHIRPath `expression` is compiled once and evaluated on every written
resource; the values are kept in one index table per parameter type. Nearly all expressions are
plain paths (`Patient.name.given`, `A.x | A.y`, `Patient.telecom.where(system='phone')`); those
are walked directly over the JSON, which gives fhirpathpy's answer at a fraction of its cost.
Anything else, and every case where the plain walk might differ from fhirpathpy (primitive
extensions `_x`, nulls in arrays, a union with more than one value), goes to fhirpathpy.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import fhirpathpy

from hub.fhir import refs
from hub.fhir.jsonio import loads
from hub.fhir.paths import PROFILES_DIR
from hub.store.dates import MAX_AT, MIN_AT, parse_range

SUPPORTED_TYPES = ("token", "reference", "date", "string")


@dataclass(frozen=True)
class SearchParam:
    """One search parameter of one resource type."""

    code: str
    base: str
    type: str
    expression: str
    targets: frozenset[str]
    url: str
    evaluate: Callable[..., list[Any]] = field(compare=False, repr=False)


@dataclass
class IndexValues:
    """What one resource contributes to the four index tables."""

    tokens: list[tuple[str, str | None, str]] = field(default_factory=list)
    references: list[tuple[str, str, str]] = field(default_factory=list)
    dates: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    strings: list[tuple[str, str, str]] = field(default_factory=list)


def fold(text: str) -> str:
    """Lower case without accents (for string search): 'Ærø Ås' -> 'ærø as'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()[:255]


_PLAIN = re.compile(r"^([A-Z][A-Za-z]*)((?:\.[a-z][A-Za-z]*)+)"  # Type.path.to.element
                    r"(?:\.where\(([a-z][A-Za-z]*)='([^'\\]*)'\))?$")  # .where(key='value')
_Path = tuple[str, tuple[str, ...], tuple[str, str] | None]


class _FallbackError(Exception):
    """The plain walk cannot promise fhirpathpy's answer here."""


def _walk(resource: dict[str, Any], path: _Path) -> list[Any]:
    rtype, steps, where = path
    if resource.get("resourceType") != rtype:
        return []
    items: list[Any] = [resource]
    for step in steps:
        nxt: list[Any] = []
        for item in items:
            if not isinstance(item, dict):
                continue
            if "_" + step in item:
                raise _FallbackError
            value = item.get(step)
            if value is None:
                continue
            if isinstance(value, list):
                if any(v is None or isinstance(v, list) for v in value):
                    raise _FallbackError
                nxt.extend(value)
            else:
                nxt.append(value)
        items = nxt
    if where is not None:
        key, wanted = where
        if any(isinstance(i, dict) and "_" + key in i for i in items):
            raise _FallbackError
        items = [i for i in items if isinstance(i, dict) and i.get(key) == wanted]
    if any(isinstance(i, dict) and _has_primitive_extension(i) for i in items):
        raise _FallbackError  # fhirpathpy rewrites `_x` members of what it returns
    return items


def _has_primitive_extension(node: Any) -> bool:
    if isinstance(node, dict):
        return any(k.startswith("_") or _has_primitive_extension(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_has_primitive_extension(v) for v in node)
    return False


def compile_expression(expression: str) -> Callable[..., list[Any]]:
    """A function giving what fhirpathpy gives for `expression` on a resource."""
    paths: list[_Path] = []
    for part in expression.split("|"):
        m = _PLAIN.match(part.strip())
        if m is None:
            slow: Callable[..., list[Any]] = fhirpathpy.compile(expression)
            return slow
        paths.append((m[1], tuple(m[2][1:].split(".")),
                      (m[3], m[4]) if m[3] is not None else None))
    compiled: list[Callable[..., list[Any]]] = []

    def fhirpath(resource: dict[str, Any]) -> list[Any]:
        if not compiled:  # compiled on first need: most expressions never need it
            compiled.append(fhirpathpy.compile(expression))
        return compiled[0](resource)

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        try:
            if len(paths) == 1:
                return _walk(resource, paths[0])
            found = [v for path in paths for v in _walk(resource, path)]
        except _FallbackError:
            return fhirpath(resource)
        # A union removes duplicates by FHIRPath equality: leave anything to compare to it.
        return found if len(found) < 2 else fhirpath(resource)

    return evaluate


@lru_cache(maxsize=1)
def registry() -> dict[str, dict[str, SearchParam]]:
    """All search parameters by base resource type and code."""
    bundle = loads((PROFILES_DIR / "search-parameters.json").read_bytes())
    out: dict[str, dict[str, SearchParam]] = {}
    for entry in bundle.get("entry", []):
        sp = entry["resource"]
        if sp.get("type") not in SUPPORTED_TYPES:
            continue
        for base in sp["base"]:
            out.setdefault(base, {})[sp["code"]] = SearchParam(
                code=sp["code"],
                base=base,
                type=sp["type"],
                expression=sp["expression"],
                targets=frozenset(sp.get("target", [])),
                url=sp["url"],
                evaluate=compile_expression(sp["expression"]),
            )
    return out


def params_for(resource_type: str) -> dict[str, SearchParam]:
    """The search parameters of one type ({} if none)."""
    return registry().get(resource_type, {})


def parse_reference(ref: str) -> tuple[str, str] | None:
    """(type, id) of a literal reference 'Type/id', 'Type/id/_history/n' or an absolute URL."""
    return refs.parse(ref)


def _tokens(value: Any) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, str):
        yield None, value
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value.get("coding") or []:
                yield from _tokens(coding)
        elif "code" in value:
            yield value.get("system"), str(value["code"])
        elif "value" in value:  # Identifier, ContactPoint
            yield value.get("system"), str(value["value"])


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in ("text", "family", "given", "prefix", "suffix", "line", "city", "district",
                    "state", "postalCode", "country"):
            part = value.get(key)
            if isinstance(part, str):
                yield part
            elif isinstance(part, list):
                yield from (p for p in part if isinstance(p, str))


def _dates(value: Any) -> Iterator[tuple[datetime, datetime]]:
    if isinstance(value, str):
        rng = parse_range(value)
        if rng:
            yield rng
    elif isinstance(value, dict) and ("start" in value or "end" in value):
        start = parse_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = parse_range(value["end"]) if isinstance(value.get("end"), str) else None
        if start or end:
            yield (start[0] if start else MIN_AT), (end[1] if end else MAX_AT)


def extract(resource: dict[str, Any]) -> IndexValues:
    """The index values of a resource for every search parameter of its type."""
    out = IndexValues()
    for sp in params_for(resource["resourceType"]).values():
        try:
            values = sp.evaluate(resource)
        except Exception:  # noqa: BLE001 - a bad path must not block a valid write
            continue
        for value in values:
            if sp.type == "token":
                out.tokens.extend((sp.code, s, c[:255]) for s, c in _tokens(value) if c)
            elif sp.type == "reference":
                ref = value.get("reference") if isinstance(value, dict) else None
                parsed = parse_reference(ref) if isinstance(ref, str) else None
                if parsed and (not sp.targets or parsed[0] in sp.targets):
                    out.references.append((sp.code, parsed[0], parsed[1]))
            elif sp.type == "date":
                out.dates.extend((sp.code, lo, hi) for lo, hi in _dates(value))
            else:
                out.strings.extend((sp.code, fold(s), s[:255]) for s in _strings(value) if s)
    return out

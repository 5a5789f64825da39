"""The search parameters the store indexes, loaded from fhir_profiles/search-parameters.json.

Each SearchParameter's FHIRPath `expression` is compiled once (fhirpathpy) and evaluated on every
written resource; the values are kept in one index table per parameter type.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import fhirpathpy

from hub.fhir.jsonio import loads
from hub.store.dates import MAX_AT, MIN_AT, parse_range

PROFILES = Path(__file__).resolve().parent.parent.parent / "fhir_profiles"
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


@lru_cache(maxsize=1)
def registry() -> dict[str, dict[str, SearchParam]]:
    """All search parameters by base resource type and code."""
    bundle = loads((PROFILES / "search-parameters.json").read_bytes())
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
                evaluate=fhirpathpy.compile(sp["expression"]),
            )
    return out


def params_for(resource_type: str) -> dict[str, SearchParam]:
    """The search parameters of one type ({} if none)."""
    return registry().get(resource_type, {})


def parse_reference(ref: str) -> tuple[str, str] | None:
    """(type, id) of a literal reference 'Type/id', 'Type/id/_history/n' or an absolute URL."""
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or ref.startswith(("urn:", "#")):
        return None
    rtype, rid = parts[-2], parts[-1]
    if not rtype[:1].isupper() or not rid:
        return None
    return rtype, rid


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

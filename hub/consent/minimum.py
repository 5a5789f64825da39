"""Minimum necessary (CONTRACT section 5): what a receiver gets on a legal basis.

A delivery on a legal basis other than `reply` carries only the elements that the event's
MessageDefinition in fhir_profiles/ lists as administrative (extension
`administrative-element`, one `Type.element` each). Everything else, the narrative included,
is left out; an entry whose type the list does not name is left out whole. The
MessageHeader travels as it is. This is the one function that trims, for push, pull and read.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from hub.consent.policy import OWN_RECORDS, Verdict
from hub.fhir import vocab
from hub.fhir.profiles import conformance

ADMINISTRATIVE_ELEMENT = f"{vocab.EXTENSION_BASE}/administrative-element"
_ALWAYS = ("resourceType", "id", "meta")
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED", "display": "subsetted"}


@lru_cache(maxsize=64)
def administrative(event: str) -> Mapping[str, frozenset[str]] | None:
    """Type -> the elements the event's MessageDefinition lists as administrative; None when
    it lists none (then a legal-basis receiver gets the MessageHeader alone: when in doubt,
    withhold)."""
    definition = conformance().by_url(f"{vocab.BASE}/MessageDefinition/{event}")
    if definition is None:
        return None
    listed: dict[str, set[str]] = {}
    for ext in definition.get("extension") or []:
        if ext.get("url") == ADMINISTRATIVE_ELEMENT and isinstance(ext.get("valueString"), str):
            rtype, _, element = ext["valueString"].partition(".")
            if element:
                listed.setdefault(rtype, set()).add(element)
    return {t: frozenset(e) for t, e in listed.items()} or None


def on_legal_basis(verdict: Verdict) -> bool:
    """Whether a permit rests on a legal basis other than reply (so minimum necessary
    applies): its basis is a legal-basis code, not a Consent, not `reply` and not the
    receiver's own records."""
    return (verdict.decision != "deny" and verdict.basis is not None
            and not verdict.basis.startswith("Consent/")
            and verdict.basis not in ("reply", OWN_RECORDS))


def trim_resource(resource: Mapping[str, Any],
                  elements: Mapping[str, frozenset[str]]) -> dict[str, Any] | None:
    """The administrative elements of `resource` (None: its type has none listed), marked
    SUBSETTED as FHIR asks of a resource with elements left out."""
    keep = elements.get(str(resource.get("resourceType")))
    if keep is None:
        return None
    out = {k: v for k, v in resource.items() if k in keep or k in _ALWAYS}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*(t for t in meta.get("tag") or [] if t.get("code") != "SUBSETTED"),
                   SUBSETTED]
    out["meta"] = meta
    return out


def trim_message(bundle: Mapping[str, Any], event: str) -> dict[str, Any]:
    """A message Bundle as a legal-basis receiver of `event` gets it."""
    elements = administrative(event) or {}  # none listed: nothing but the header goes
    entries = list(bundle.get("entry") or [])
    if not entries:
        return dict(bundle)
    kept = [entries[0]]
    for entry in entries[1:]:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        trimmed = trim_resource(resource, elements)
        if trimmed is not None:
            kept.append({**entry, "resource": trimmed})
    return {**bundle, "entry": kept}

"""`_summary` and `_elements`: the trimmed copies of resources FHIR search answers with.

A trimmed resource keeps `resourceType`, `id`, `meta` and its mandatory elements, and carries
the tag `v3-ObservationValue|SUBSETTED` in `meta.tag`, so no client takes it for the whole.
"""

from __future__ import annotations

from typing import Any

from hub.errors import BadRequestError
from hub.fhir.structure import mandatory_elements, summary_elements

SUMMARY_MODES = ("true", "false", "text", "data", "count")
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED", "display": "subsetted"}
_ALWAYS = {"resourceType", "id", "meta"}


def check_summary(value: str) -> str:
    """A `_summary` value, checked; BadRequestError names the ones there are."""
    if value not in SUMMARY_MODES:
        raise BadRequestError(f"_summary={value[:40]} is not one of {', '.join(SUMMARY_MODES)}.",
                              expression="_summary")
    return value


def parse_elements(value: str) -> list[str]:
    """The element names of an `_elements` value (comma-separated, top-level only)."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    for name in names:
        if "." in name:  # a `Type.element` prefix is allowed; paths below are not
            head, _, tail = name.partition(".")
            if not head[:1].isupper() or "." in tail:
                raise BadRequestError(f"_elements={name[:60]}: only top-level elements can be "
                                      "chosen.", expression="_elements")
    return names


def _keep(resource: dict[str, Any], names: set[str]) -> dict[str, Any]:
    kept = {k: v for k, v in resource.items()
            if k in names or (k.startswith("_") and k[1:] in names)}
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if not (isinstance(t, dict)
                                                   and t.get("code") == "SUBSETTED")]
    meta["tag"] = [*tags, SUBSETTED]
    kept["meta"] = meta
    return kept


def subset(resource: dict[str, Any], *, summary: str | None = None,
           elements: list[str] | None = None) -> dict[str, Any]:
    """`resource` as `_summary` / `_elements` ask (a copy when trimmed, else itself)."""
    rtype = str(resource.get("resourceType", ""))
    if elements:
        names = {n.split(".", 1)[1] if "." in n and n.split(".", 1)[0] == rtype else n
                 for n in elements if "." not in n or n.split(".", 1)[0] == rtype}
        return _keep(resource, names | _ALWAYS | mandatory_elements(rtype))
    if summary == "true":
        return _keep(resource, set(summary_elements(rtype)) | _ALWAYS)
    if summary == "text":
        return _keep(resource, {"text"} | _ALWAYS | mandatory_elements(rtype))
    if summary == "data":
        return _keep(resource, set(resource) - {"text"})
    return resource

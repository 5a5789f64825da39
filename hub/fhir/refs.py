"""Reading FHIR references: the one place that knows their shapes.

A literal reference is `Type/id`, `Type/id/_history/n` or an absolute URL ending so; a
`urn:` or `#` reference names something inside a bundle or resource, never a stored record.
A conditional reference `Type?criteria` is a search, resolved only inside a transaction or
batch Bundle (FHIR R4 http.html 3.1.0.11.2); anywhere else it names nothing.
"""

from __future__ import annotations

import re
from typing import Any

_HISTORY = re.compile(r"/_history/[^/]*$")
_CONDITIONAL = re.compile(r"([A-Z][A-Za-z]+)\?(.*)\Z", re.DOTALL)


def parse(reference: object) -> tuple[str, str] | None:
    """(type, id) of a literal reference string, else None."""
    if not isinstance(reference, str):
        return None
    ref = _HISTORY.sub("", reference.strip())
    if ref.startswith(("urn:", "#")):
        return None
    parts = ref.split("/")
    if len(parts) < 2:
        return None
    if len(parts) > 2 and not ref.startswith(("http://", "https://")):
        return None
    rtype, rid = parts[-2], parts[-1]
    if not rtype[:1].isupper() or not rid:
        return None
    return rtype, rid


def conditional(reference: object) -> tuple[str, str] | None:
    """(type, criteria) of a conditional reference `Type?criteria`, else None."""
    found = _CONDITIONAL.match(reference) if isinstance(reference, str) else None
    return (found.group(1), found.group(2)) if found else None


def target(element: Any) -> tuple[str, str] | None:
    """(type, id) of a Reference element (a dict with `reference`), else None."""
    return parse(element.get("reference")) if isinstance(element, dict) else None


def relative(element: Any) -> str | None:
    """'Type/id' of a Reference element with a literal reference, else None."""
    found = target(element)
    return f"{found[0]}/{found[1]}" if found else None


def org_id(element: Any) -> str | None:
    """The id of the Organization a Reference element names, else None."""
    found = target(element)
    return found[1] if found and found[0] == "Organization" else None


def org_ref(reference: object) -> str | None:
    """'Organization/<id>' for an Organization reference string, else None."""
    found = parse(reference)
    return f"Organization/{found[1]}" if found and found[0] == "Organization" else None


def org_ids(elements: Any) -> set[str]:
    """Ids of the Organizations a list of Reference elements names."""
    items = elements if isinstance(elements, list) else [elements]
    return {o for o in (org_id(e) for e in items) if o}

"""FHIR JSON responses, and the Bundles the REST API answers with."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from hub.db.types import utcnow
from hub.errors import Issue, operation_outcome
from hub.fhir.jsonio import dumps_bytes
from hub.store.dates import format_instant
from hub.store.resources import StoredResource

FHIR_JSON = "application/fhir+json"


def http_date(moment: datetime) -> str:
    """An HTTP-date (RFC 9110, e.g. `Thu, 03 Dec 2026 05:45:16 GMT`), as Last-Modified needs."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


class FhirResponse(Response):
    """A FHIR JSON body (decimals kept as written)."""

    media_type = f"{FHIR_JSON}; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return dumps_bytes(content) if content is not None else b""


def resource_response(stored: StoredResource, *, status: int = 200, base: str,
                      prefer: str | None = None, location: bool = False,
                      withheld: Issue | None = None) -> FhirResponse:
    """A single resource with ETag, Last-Modified and (after a write) Location. `withheld`:
    the caller may not read `stored`, so the body is this OperationOutcome instead, and the
    headers name the resource alone: its version and when it last changed are not told."""
    if withheld is not None:
        headers = {"Location": f"{base}/{stored.relative_url}"} if location else {}
    else:
        headers = {"ETag": stored.etag, "Last-Modified": http_date(stored.last_updated_at)}
        if location:
            headers["Location"] = f"{base}/{stored.relative_url}/_history/{stored.version_id}"
    body: Any = stored.body if withheld is None else operation_outcome([withheld])
    wanted = preferred_return(prefer)
    if wanted == "minimal":
        body = None
    elif wanted == "OperationOutcome" and withheld is None:
        body = operation_outcome([Issue(stored.stored_text(created=status == 201),
                                        "informational", "information")])
    if wanted is not None:
        headers["Preference-Applied"] = f"return={wanted}"
    return FhirResponse(body, status_code=status, headers=headers)


RETURNS = {"minimal": "minimal", "representation": "representation",
           "operationoutcome": "OperationOutcome"}


def preferred_return(prefer: str | None) -> str | None:
    """What the Prefer header asks a write to answer with (FHIR R4 http.html#ops): `minimal`
    (no body), `representation` (the resource, the default) or `OperationOutcome`; None when
    it asks for none of them. As RFC 7240 says, the first `return` named counts."""
    for preference in (prefer or "").split(","):
        token, _, value = preference.split(";")[0].partition("=")
        if token.strip().lower() == "return":
            return RETURNS.get(value.strip().strip('"').lower())
    return None


def entry(stored: StoredResource, base: str, mode: str | None = None) -> dict[str, Any]:
    """A Bundle entry for a stored resource."""
    out: dict[str, Any] = {"fullUrl": f"{base}/{stored.relative_url}", "resource": stored.body}
    if mode:
        out["search"] = {"mode": mode}
    return out


def page_link(base_path: str, pairs: list[tuple[str, str]], offset: int, count: int) -> str:
    """A paging URL: the same query with `_offset` and `_count` set."""
    kept = [(k, v) for k, v in pairs if k not in ("_offset", "_count")]
    return f"{base_path}?{urlencode([*kept, ('_count', str(count)), ('_offset', str(offset))])}"


def bundle(kind: str, entries: list[dict[str, Any]], links: list[tuple[str, str]],
           total: int | None = None) -> dict[str, Any]:
    """A Bundle of `kind` with links."""
    out: dict[str, Any] = {"resourceType": "Bundle", "type": kind,
                           "timestamp": format_instant(utcnow())}
    if total is not None:
        out["total"] = total
    if links:
        out["link"] = [{"relation": r, "url": u} for r, u in links]
    out["entry"] = entries
    return out


def handling_strict(prefer: list[str]) -> bool:
    """Whether the Prefer headers ask `handling=strict` (R4 search.html: an error for any
    unknown or unsupported parameter) rather than `lenient`, the default. As RFC 7240 says,
    the first `handling` named counts."""
    for preference in ",".join(prefer).split(","):
        token, _, value = preference.split(";")[0].partition("=")
        if token.strip().lower() == "handling":
            return value.strip().strip('"').lower() == "strict"
    return False

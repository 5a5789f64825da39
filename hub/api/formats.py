"""Content negotiation for /fhir: the hub writes FHIR JSON only, so a request that accepts
nothing else (`_format=xml`, `Accept: application/fhir+xml`) gets 406 rather than JSON it did
not ask for. Browsers' `*/*` and JSON in any of its FHIR spellings are fine."""

from __future__ import annotations

from fastapi import Request

from hub.errors import NotAcceptableError

_JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir",
                 "text/json"}
_ANY = {"*/*", "application/*", "text/*"}


def _media_types(accept: str) -> list[tuple[str, float]]:
    out = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            out.append((media.lower(), quality))
    return out


async def check_format(request: Request) -> None:
    """Raise NotAcceptableError (406) when a /fhir request accepts no JSON. A coroutine,
    though it awaits nothing: FastAPI runs it inline instead of on a worker thread, and it
    runs for every request."""
    if not request.url.path.startswith("/fhir"):
        return
    fmt = request.query_params.get("_format")
    if fmt is not None:
        if fmt.split(";")[0].strip().lower() not in _JSON_FORMATS:
            raise NotAcceptableError(f"_format={fmt[:60]} is not served: this hub writes FHIR "
                                     "JSON only (_format=json).", expression="_format")
        return
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return
    wanted = _media_types(accept)
    if not any(q > 0 and (m in _JSON_FORMATS or m in _ANY or m.endswith("+json"))
               for m, q in wanted):
        raise NotAcceptableError(
            f"Accept: {accept[:80]} asks for a format this hub does not write; it answers "
            "in FHIR JSON only (Accept: application/fhir+json).")

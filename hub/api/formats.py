"""Content negotiation for /fhir: the hub writes FHIR JSON only, so a request that accepts
nothing else (`_format=xml`, `Accept: application/fhir+xml`) gets 406 rather than JSON it did
not ask for. Browsers' `*/*` and JSON in any of its FHIR spellings are fine. The hub speaks
FHIR R4 only: a `fhirVersion` MIME parameter (R4 http.html 3.1.0.1.9) naming another version
is a 406 in `Accept` or `_format` and a 415 in `Content-Type`; none, 4.0 or 4.0.1 is R4."""

from __future__ import annotations

from fastapi import Request

from hub.errors import NotAcceptableError, UnsupportedMediaTypeError

_R4 = {"4.0", "4.0.1"}

_JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir",
                 "text/json"}
_ANY = {"*/*", "application/*", "text/*"}


def _fhir_version(params: list[str]) -> str | None:
    """The `fhirVersion` parameter's value among a media type's parameters, or None."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "fhirversion":
            return value.strip().strip('"')
    return None


def _media_types(accept: str) -> list[tuple[str, float]]:
    """(media type, quality) of each range; one naming a FHIR version other than R4 counts
    as not acceptable (quality 0)."""
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
        if (version := _fhir_version(params)) is not None and version not in _R4:
            quality = 0.0
        if media:
            out.append((media.lower(), quality))
    return out


def _not_r4(version: str) -> str:
    return (f"fhirVersion={version[:20]} is not served: this hub speaks FHIR R4 only "
            "(fhirVersion=4.0, or no fhirVersion).")


async def check_format(request: Request) -> None:
    """Raise NotAcceptableError (406) when a /fhir request accepts no JSON. A coroutine,
    though it awaits nothing: FastAPI runs it inline instead of on a worker thread, and it
    runs for every request."""
    if not request.url.path.startswith("/fhir"):
        return
    ctype = request.headers.get("content-type")
    if ctype is not None:
        version = _fhir_version([p.strip() for p in ctype.split(";")[1:]])
        if version is not None and version not in _R4:
            raise UnsupportedMediaTypeError(f"Content-Type: {_not_r4(version)}")
    fmt = request.query_params.get("_format")
    if fmt is not None:
        media, *params = fmt.split(";")
        if media.strip().lower() not in _JSON_FORMATS:
            raise NotAcceptableError(f"_format={fmt[:60]} is not served: this hub writes FHIR "
                                     "JSON only (_format=json).", expression="_format")
        version = _fhir_version(params)
        if version is not None and version not in _R4:
            raise NotAcceptableError(f"_format: {_not_r4(version)}", expression="_format")
        return
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return
    wanted = _media_types(accept)
    if not any(q > 0 and (m in _JSON_FORMATS or m in _ANY or m.endswith("+json"))
               for m, q in wanted):
        raise NotAcceptableError(
            f"Accept: {accept[:80]} asks for a format this hub does not write; it answers "
            "in FHIR R4 JSON only (Accept: application/fhir+json, with fhirVersion=4.0 or "
            "none).")

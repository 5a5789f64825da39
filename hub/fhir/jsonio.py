"""FHIR JSON in and out, keeping numbers exactly as written (decimals are never floats)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import simplejson

from hub.errors import BadRequestError

JSONDict = dict[str, Any]


def loads(raw: bytes | str, *, what: str = "The request body") -> Any:
    """Parse JSON text; decimals become Decimal so `0.40` stays `0.40`. Raises BadRequestError."""
    try:
        return simplejson.loads(raw, use_decimal=True, allow_nan=False)
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"{what} is not UTF-8 text: {exc.reason}.") from exc
    except simplejson.JSONDecodeError as exc:
        raise BadRequestError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from exc


def loads_object(raw: bytes | str, *, what: str = "The request body") -> JSONDict:
    """Parse JSON text that must be an object with a resourceType. Raises BadRequestError."""
    data = loads(raw, what=what)
    if not isinstance(data, dict):
        raise BadRequestError(f"{what} must be a JSON object (a FHIR resource).")
    rtype = data.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise BadRequestError(
            f"{what} has no resourceType; a FHIR resource names its type.",
            expression="resourceType",
        )
    return data


def dumps(data: Any) -> str:
    """Serialise to compact JSON text, decimals as written."""
    text: str = simplejson.dumps(data, use_decimal=True, ensure_ascii=False,
                                 separators=(",", ":"))
    return text


def dumps_bytes(data: Any) -> bytes:
    """Serialise to compact UTF-8 JSON bytes, decimals as written."""
    return dumps(data).encode("utf-8")


def canonical_bytes(data: Any) -> bytes:
    """Compact UTF-8 JSON with every object's keys sorted, decimals as written: the same
    bytes for the same content whatever the key order (content hashes, comparisons)."""
    text: str = simplejson.dumps(data, use_decimal=True, ensure_ascii=False,
                                 separators=(",", ":"), sort_keys=True)
    return text.encode("utf-8")


__all__ = ["Decimal", "JSONDict", "canonical_bytes", "dumps", "dumps_bytes", "loads",
           "loads_object"]

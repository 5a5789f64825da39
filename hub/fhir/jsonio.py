"""FHIR JSON in and out, keeping numbers exactly as written (decimals are never floats).

`loads` is the one place request JSON is parsed (FHIR bodies, client assertions). It refuses,
as BadRequestError (400) with a plain reason, what a parser would choke on later or a client
could not have meant: an object naming one key twice, nesting deeper than MAX_DEPTH, and
numbers longer than MAX_NUMBER_CHARS (FHIR integers are 32-bit, decimals 18 digits), and a
string holding a lone surrogate (`"\\ud800"`: valid JSON text that encodes no character, so
R4 cannot hold it, nor can anything that writes it back out as UTF-8).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson
import simplejson

from hub.errors import BadRequestError
from hub.fhir.strings import SURROGATE as _SURROGATE
from hub.fhir.strings import without_control

JSONDict = dict[str, Any]

MAX_DEPTH = 100
"""Deepest nesting of objects and arrays accepted (a FHIR Bundle of QuestionnaireResponses
with nested items stays far below this)."""
MAX_NUMBER_CHARS = 40
"""Longest number accepted, in characters."""


# A \uD800-\uDFFF escape. Only a lone one is refused: a pair is one character (an emoji).
# An escaped backslash before "ud8.." also matches; then the parsed strings are only looked at.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _surrogate_at(node: Any, at: str) -> str | None:
    """The path (`Bundle.entry[0].fullUrl`) of the first string or key under `node` holding a
    lone surrogate; None when there is none."""
    if type(node) is str:
        return at if _SURROGATE.search(node) else None
    if type(node) is dict:
        for key, value in node.items():
            if _SURROGATE.search(key):
                return f"{at}.{without_control(key)[:100]}"
            found = _surrogate_at(value, f"{at}.{key[:100]}")
            if found is not None:
                return found
    elif type(node) is list:
        for n, value in enumerate(node):
            found = _surrogate_at(value, f"{at}[{n}]")
            if found is not None:
                return found
    return None


class _RefusedError(ValueError):
    """Raised inside the parser's hooks; becomes BadRequestError."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _RefusedError(f"names the key '{twice[:100]}' more than once in one object; JSON "
                       "keys must be unique")
    return out


def _number_too_long(text: str) -> str:
    return (f"has a number of {len(text)} characters ('{text[:20]}...'); numbers longer than "
            f"{MAX_NUMBER_CHARS} characters are not accepted")


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _RefusedError(_number_too_long(text) + f" (it has {len(text.lstrip('-'))} digits)")
    return int(text)


def _decimal(text: str) -> Decimal:
    if len(text) > MAX_NUMBER_CHARS:
        raise _RefusedError(_number_too_long(text))
    return Decimal(text)


def _deeper_than(node: Any, levels: int) -> bool:
    """Whether parsed JSON nests more than `levels` deep (recursion bounded by `levels`)."""
    if levels == 0:
        return True
    for child in (node.values() if type(node) is dict else node):
        kind = type(child)
        if (kind is dict or kind is list) and _deeper_than(child, levels - 1):
            return True
    return False


def _too_deep(raw: bytes | str, data: Any) -> bool:
    opening = (raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes)
               else raw.count("[") + raw.count("{"))
    return (opening > MAX_DEPTH and isinstance(data, dict | list)
            and _deeper_than(data, MAX_DEPTH - 1))


def loads(raw: bytes | str, *, what: str = "The request body") -> Any:
    """Parse JSON text; decimals become Decimal so `0.40` stays `0.40`. Raises BadRequestError
    for text that is not JSON, duplicate keys, nesting deeper than MAX_DEPTH and overlong
    numbers."""
    too_deep = BadRequestError(f"{what} is nested more than {MAX_DEPTH} levels deep; FHIR "
                               "resources are far shallower.")
    try:
        data = simplejson.loads(raw, parse_float=_decimal, parse_int=_int,
                                object_pairs_hook=_object, allow_nan=False)
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"{what} is not UTF-8 text: {exc.reason}.") from exc
    except _RefusedError as exc:
        raise BadRequestError(f"{what} {exc}.") from None
    except simplejson.JSONDecodeError as exc:
        raise BadRequestError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from exc
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:  # e.g. a number the interpreter will not convert
        raise BadRequestError(f"{what} is not acceptable JSON: {exc}.") from None
    if _too_deep(raw, data):
        raise too_deep
    escape = _SURROGATE_ESCAPE_BYTES if isinstance(raw, bytes) else _SURROGATE_ESCAPE
    if escape.search(raw) is not None:  # type: ignore[arg-type]
        rtype = data.get("resourceType") if type(data) is dict else None
        root = rtype if type(rtype) is str and rtype.isalnum() else "$"
        where = _surrogate_at(data, root)
        if where is not None:
            raise BadRequestError(
                f"{what} holds a lone surrogate escape (\\uD800-\\uDFFF without its pair) in "
                f"{where}; it encodes no Unicode character, so no FHIR string may hold it.",
                expression=where)
    return data


def loads_object(raw: bytes | str, *, what: str = "The request body") -> JSONDict:
    """Parse JSON text that must be an object with a resourceType. Raises BadRequestError."""
    data = loads(raw, what=what)
    if not isinstance(data, dict):
        raise BadRequestError(f"{what} must be a JSON object (a FHIR resource).")
    rtype = data.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise BadRequestError(
            f"{what} has no resourceType; a FHIR resource names its type.",
            expression="resourceType")
    return data


def _decimal_as_written(value: Any) -> orjson.Fragment:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _dumps_bytes(data: Any, *, sort_keys: bool) -> bytes:
    """Compact UTF-8 JSON, decimals as written. orjson writes the bytes simplejson writes
    (tests/fhir/test_jsonio.py compares them over the HL7 examples) 20-30 times faster (a
    1.6 kB message Bundle: 0.8 against 23 us); what orjson cannot write (an integer past 64
    bits, a key that is not a string) goes to simplejson, which writes it or fails alike.
    Dates and dataclasses, which orjson would write of its own accord, are refused as
    simplejson refuses them (a UUID object orjson does write, as its string)."""
    options = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
    try:
        return orjson.dumps(data, default=_decimal_as_written,
                            option=options | orjson.OPT_SORT_KEYS if sort_keys else options)
    except orjson.JSONEncodeError:
        text: str = simplejson.dumps(data, use_decimal=True, ensure_ascii=False,
                                     separators=(",", ":"), sort_keys=sort_keys)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (quoted into a diagnostic): escaped
            escaped: str = simplejson.dumps(data, use_decimal=True, separators=(",", ":"),
                                            sort_keys=sort_keys)
            return escaped.encode("ascii")


def dumps(data: Any) -> str:
    """Serialise to compact JSON text, decimals as written."""
    return _dumps_bytes(data, sort_keys=False).decode("utf-8")


def dumps_bytes(data: Any) -> bytes:
    """Serialise to compact UTF-8 JSON bytes, decimals as written."""
    return _dumps_bytes(data, sort_keys=False)


def canonical_bytes(data: Any) -> bytes:
    """Compact UTF-8 JSON with every object's keys sorted, decimals as written: the same
    bytes for the same content whatever the key order (content hashes, comparisons)."""
    return _dumps_bytes(data, sort_keys=True)


__all__ = ["MAX_DEPTH", "Decimal", "JSONDict", "canonical_bytes", "dumps", "dumps_bytes",
           "loads", "loads_object"]

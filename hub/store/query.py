"""Parsing a search query string into a SearchRequest (no database here)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hub.errors import BadRequestError
from hub.fhir.strings import RULE, forbidden_character
from hub.fhir.subset import check_summary, parse_elements

MAX_CRITERIA = 100
"""Most search criteria one query may carry (each is a join or subquery)."""
MAX_VALUES = 100
"""Most comma-separated values one criterion may carry (each is an OR branch)."""
MAX_OFFSET = 2**31 - 1
"""Largest `_offset` (and any paging number) accepted."""

RESULT_PARAMS = {"_count", "_offset", "_sort", "_include", "_total", "_format", "_summary",
                 "_elements", "_totalMethod", "_pretty"}
"""Controls of the result, not criteria (`_format` and `_pretty` are the API's: JSON, as
compact as always, whatever `_pretty` asks)."""


@dataclass
class SearchRequest:
    """A parsed search: criteria and result controls."""

    resource_type: str
    criteria: list[tuple[str, str]]
    count: int
    offset: int = 0
    sort: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    total: bool = False
    summary: str | None = None
    elements: list[str] = field(default_factory=list)
    strict: bool = False
    """`Prefer: handling=strict`: a criterion the hub cannot apply is a 400, not ignored."""


def parse_request(
    resource_type: str, pairs: list[tuple[str, str]], *, default_count: int, max_count: int
) -> SearchRequest:
    """Split query pairs into criteria and controls; BadRequestError for malformed controls."""
    req = SearchRequest(resource_type, [], default_count)
    for name, value in pairs:
        refuse_control_characters(name, value)
        if name == "_count":
            req.count = min(whole_number(name, value), max_count)
        elif name == "_offset":
            req.offset = whole_number(name, value)
        elif name == "_sort":
            req.sort.extend(v for v in value.split(",") if v)
        elif name == "_include":
            req.include.append(value)
        elif name == "_total":
            req.total = value == "accurate"
        elif name == "_totalMethod":  # what fhirpy's count() sends (an Aidbox parameter)
            req.total = req.total or value == "count"
        elif name == "_summary":
            req.summary = check_summary(value)
        elif name == "_elements":
            req.elements.extend(parse_elements(value))
        elif name in RESULT_PARAMS:
            continue
        else:
            if (values := len(split_escaped(value, ","))) > MAX_VALUES:
                raise BadRequestError(
                    f"{name} has {values} comma-separated values; at most "
                    f"{MAX_VALUES} are accepted in one criterion.", expression=name)
            req.criteria.append((name, value))
    if req.summary == "count":  # the total alone
        req.count, req.total = 0, True
    elif req.count == 0:  # a page of nothing asks only how many there are
        req.total = True
    if len(req.criteria) > MAX_CRITERIA:
        raise BadRequestError(
            f"The search has {len(req.criteria)} criteria; at most {MAX_CRITERIA} are "
            "accepted. Narrow it with fewer, more selective parameters.")
    return req


def refuse_control_characters(name: str, value: str) -> None:
    """BadRequestError (400) when a search parameter's name or value holds a character no FHIR
    string may hold (hub.fhir.strings): it could match nothing that may be stored."""
    for part, text in (("name", name), ("value", value)):
        if (found := forbidden_character(text)) is not None:
            raise BadRequestError(
                f"A search parameter's {part} ({text[:100]!r}) holds the control character "
                f"{found} (%{found[-2:]} in a URL); {RULE}.",
                expression=name if part == "value" else None)


def whole_number(name: str, value: str, *, most: int = MAX_OFFSET) -> int:
    """`value` as a whole number from 0 to `most`; BadRequestError (400) naming `name`
    otherwise (also for numbers beyond 64 bits, which no database column holds)."""
    text = value.strip()
    digits = text.removeprefix("-").removeprefix("+")
    if not digits.isascii() or not digits.isdigit():
        raise BadRequestError(f"{name} must be a whole number, not '{value[:40]}'.",
                              expression=name)
    if len(digits) > len(str(most)) or int(text) > most:
        raise BadRequestError(f"{name} is too large ({len(digits)} digits); it must be at "
                              f"most {most}.", expression=name)
    if int(text) < 0:
        raise BadRequestError(f"{name} must not be negative ('{value[:40]}').",
                              expression=name)
    return int(text)


_ESCAPED = re.compile(r"\\([\\,|$])")


def split_escaped(value: str, separator: str, most: int = -1) -> list[str]:
    """`value` split on `separator` where it is not escaped by a backslash (R4 search.html,
    "Escaping Search Parameters": `\\,`, `\\|`, `\\$`, `\\\\`), at most `most` times; the parts
    keep their escapes (see `unescape`)."""
    if "\\" not in value:
        return value.split(separator, most)
    parts: list[str] = []
    start = i = 0
    while i < len(value):
        if value[i] == "\\":
            i += 2  # the escaped character is never a separator
            continue
        if value[i] == separator and len(parts) != most:
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts


def unescape(value: str) -> str:
    """A search value's escaped `\\,`, `\\|`, `\\$` and `\\\\` as the literal character; any
    other backslash is kept as written (`b\\T` still finds `b\\T`)."""
    return _ESCAPED.sub(r"\1", value)

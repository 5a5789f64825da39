"""Parsing a search query string into a SearchRequest (no database here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.errors import BadRequestError

RESULT_PARAMS = {"_count", "_offset", "_sort", "_include", "_total", "_format", "_summary",
                 "_elements"}


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


def parse_request(
    resource_type: str, pairs: list[tuple[str, str]], *, default_count: int, max_count: int
) -> SearchRequest:
    """Split query pairs into criteria and controls; BadRequestError for malformed controls."""
    req = SearchRequest(resource_type, [], default_count)
    for name, value in pairs:
        if name == "_count":
            req.count = max(0, min(_int(name, value), max_count))
        elif name == "_offset":
            req.offset = max(0, _int(name, value))
        elif name == "_sort":
            req.sort.extend(v for v in value.split(",") if v)
        elif name == "_include":
            req.include.append(value)
        elif name == "_total":
            req.total = value == "accurate"
        elif name in RESULT_PARAMS:
            continue
        else:
            req.criteria.append((name, value))
    return req


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadRequestError(f"{name} must be a whole number, not '{value}'.") from None



"""Instance history's parameters (R4 http.html 3.1.0.12): `_count` and `_offset` page,
`_since` keeps the versions made at or after an instant, `_at` the versions that were current
at some point during a time; `_format` and `_pretty` are the API's. Anything else is a 400, so
that a client syncing with a parameter the hub does not know is told, not sent everything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from hub.errors import BadRequestError
from hub.fhir.datetimes import parse
from hub.store.query import refuse_control_characters, whole_number

_TICK = timedelta(microseconds=1)
_KNOWN = ("_count", "_offset", "_since", "_at", "_format", "_pretty")


@dataclass(frozen=True)
class HistoryRequest:
    """One page of an instance history: which versions, and how many from where."""

    count: int
    offset: int = 0
    since: datetime | None = None
    """Versions whose lastUpdated is at or after this moment."""
    at: tuple[datetime, datetime] | None = None
    """[start, end): versions current at some moment of it."""


def parse_history(pairs: Sequence[tuple[str, str]], *, default_count: int,
                  max_count: int) -> HistoryRequest:
    """The history request the query pairs ask; BadRequestError (400) naming the parameter
    for one this hub does not take, one given twice, or a value that is not what it must be."""
    seen: set[str] = set()
    count, offset = default_count, 0
    since: datetime | None = None
    at: tuple[datetime, datetime] | None = None
    for name, value in pairs:
        refuse_control_characters(name, value)
        if name not in _KNOWN:
            raise BadRequestError(
                f"History takes {', '.join(_KNOWN)} only, not {name[:60]}.", expression=name)
        if name in seen and name not in ("_format", "_pretty"):
            raise BadRequestError(f"{name} is given more than once.", expression=name)
        seen.add(name)
        if name == "_count":
            count = max(0, min(whole_number(name, value), max_count))
        elif name == "_offset":
            offset = max(0, whole_number(name, value))
        elif name in ("_since", "_at"):
            parsed = parse(value)
            if parsed is None:
                raise BadRequestError(
                    f"{name} must be a FHIR {'instant' if name == '_since' else 'dateTime'} "
                    f"(e.g. 2026-12-05T10:00:00Z), not '{value[:60]}'.", expression=name)
            if name == "_since":
                since = parsed.low
            else:
                # an instant to the microsecond is the one microsecond it names
                at = (parsed.low, max(parsed.after, parsed.low + _TICK))
    return HistoryRequest(count, offset, since, at)


def in_time(made_at: datetime, next_made_at: datetime | None, *, since: datetime | None,
            at: tuple[datetime, datetime] | None) -> bool:
    """Whether a version made at `made_at`, and current until `next_made_at` (None: still
    current), is one that `_since` (made at or after it) and `_at` (current at some moment
    of [start, end)) keep."""
    if since is not None and made_at < since:
        return False
    if at is not None:
        start, end = at
        if made_at >= end or (next_made_at is not None and next_made_at <= start):
            return False
    return True

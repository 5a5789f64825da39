"""FHIR date/dateTime values and Periods as half-open UTC spans, for consent periods.

A value stands for the span of its precision: "2026" is all of 2026, "2026-10-01" that whole day,
a dateTime (with or without seconds, any fraction, Z or an offset) one instant. A Period starts
at its start's first moment (inclusive) and ends after its end's last moment (exclusive): a
date-only end runs through the end of that day. Dates carry no zone in FHIR; we read them as UTC,
as does the store (hub/store/dates.py), which keeps closed ranges for search instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

_VALUE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)

EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

PeriodCheck = Literal["in", "before", "after", "unreadable"]


def _next(low: datetime, unit: str) -> datetime:
    """The first moment after the year, month or day that starts at `low`."""
    try:
        if unit == "y":
            return low.replace(year=low.year + 1)
        if unit == "m":
            return low.replace(year=low.year + low.month // 12, month=low.month % 12 + 1)
        return low + timedelta(days=1)
    except (ValueError, OverflowError):
        return LATEST


def span(value: object) -> tuple[datetime, datetime] | None:
    """The half-open UTC span [first, after) a FHIR date or dateTime stands for, or None."""
    if not isinstance(value, str):
        return None
    m = _VALUE_RE.match(value.strip())
    if not m:
        return None
    try:
        year = int(m["y"])
        if m["m"] is None:
            low = datetime(year, 1, 1, tzinfo=UTC)
            return low, _next(low, "y")
        month = int(m["m"])
        if m["d"] is None:
            low = datetime(year, month, 1, tzinfo=UTC)
            return low, _next(low, "m")
        day = int(m["d"])
        if m["H"] is None:
            low = datetime(year, month, day, tzinfo=UTC)
            return low, _next(low, "d")
        tz: timezone = UTC
        if m["tz"] and m["tz"] != "Z":
            hours, minutes = int(m["tz"][1:3]), int(m["tz"][4:6])
            if hours > 14 or minutes > 59:
                return None
            sign = 1 if m["tz"][0] == "+" else -1
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        micro = int((m["f"] or "")[:6].ljust(6, "0"))
        at = datetime(year, month, day, int(m["H"]), int(m["M"]), int(m["S"] or 0), micro,
                      tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return at, at


def instant(value: object) -> datetime | None:
    """The first moment of a FHIR date or dateTime (UTC), or None when it cannot be read."""
    parsed = span(value)
    return parsed[0] if parsed else None


def check_period(period: object, now: datetime) -> PeriodCheck:
    """Where `now` falls against a FHIR Period: start inclusive, end exclusive, missing = open."""
    if period is None:
        return "in"
    if not isinstance(period, Mapping):
        return "unreadable"
    bounds: Mapping[str, Any] = period
    start = span(bounds["start"]) if bounds.get("start") is not None else (EARLIEST, EARLIEST)
    end = span(bounds["end"]) if bounds.get("end") is not None else (LATEST, LATEST)
    if start is None or end is None:
        return "unreadable"
    if now < start[0]:
        return "before"
    if now >= end[1] and end[1] != LATEST:
        return "after"
    return "in"

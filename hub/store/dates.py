"""FHIR date, dateTime and instant values as the closed UTC range of time they stand for."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)

MIN_AT = datetime(1, 1, 1, tzinfo=UTC)
MAX_AT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
_TICK = timedelta(microseconds=1)


def parse_range(value: str) -> tuple[datetime, datetime] | None:
    """The [low, high] UTC range a FHIR date/dateTime/instant covers at its precision, or None."""
    m = _DATE_RE.match(value.strip())
    if not m:
        return None
    try:
        year = int(m["y"])
        if m["m"] is None:
            low = datetime(year, 1, 1, tzinfo=UTC)
            return low, datetime(year + 1, 1, 1, tzinfo=UTC) - _TICK if year < 9999 else MAX_AT
        month = int(m["m"])
        if m["d"] is None:
            low = datetime(year, month, 1, tzinfo=UTC)
            nxt = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
            return low, nxt - _TICK
        day = int(m["d"])
        if m["H"] is None:
            low = datetime(year, month, day, tzinfo=UTC)
            return low, low + timedelta(days=1) - _TICK
        tz: timezone = UTC
        if m["tz"] and m["tz"] != "Z":
            sign = 1 if m["tz"][0] == "+" else -1
            hours, minutes = int(m["tz"][1:3]), int(m["tz"][4:6])
            tz = timezone(timedelta(minutes=sign * (hours * 60 + minutes)))
        base = datetime(year, month, day, int(m["H"]), int(m["M"]), tzinfo=tz)
        if m["S"] is None:
            low = base.astimezone(UTC)
            return low, low + timedelta(minutes=1) - _TICK
        base = base.replace(second=int(m["S"]))
        if m["f"] is None:
            low = base.astimezone(UTC)
            return low, low + timedelta(seconds=1) - _TICK
        frac = m["f"][:6].ljust(6, "0")
        low = base.replace(microsecond=int(frac)).astimezone(UTC)
        return low, low
    except ValueError:
        return None


def format_instant(at: datetime) -> str:
    """A FHIR instant with microseconds and Z, e.g. 2026-11-23T19:48:40.123456Z."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

"""FHIR date, dateTime and instant values: what moment they start at and how precise they are.

One parser for the store's search index (closed ranges at the value's precision) and the
consent policy's periods (half-open spans; a time of day is an instant there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

_VALUE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)

EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
Precision = Literal["year", "month", "day", "minute", "second", "fraction"]


@dataclass(frozen=True)
class FhirTime:
    """A parsed value: its first moment (UTC), the first moment after it, its precision."""

    low: datetime
    after: datetime
    precision: Precision


def _after(low: datetime, precision: Precision) -> datetime:
    try:
        if precision == "year":
            return low.replace(year=low.year + 1)
        if precision == "month":
            return low.replace(year=low.year + low.month // 12, month=low.month % 12 + 1)
        step = {"day": timedelta(days=1), "minute": timedelta(minutes=1),
                "second": timedelta(seconds=1), "fraction": timedelta(0)}[precision]
        return low + step
    except (ValueError, OverflowError):
        return LATEST


def parse(value: object) -> FhirTime | None:
    """The moment and precision of a FHIR date/dateTime/instant string, or None."""
    if not isinstance(value, str):
        return None
    m = _VALUE_RE.match(value.strip())
    if not m:
        return None
    try:
        year = int(m["y"])
        if m["m"] is None:
            low = datetime(year, 1, 1, tzinfo=UTC)
            return FhirTime(low, _after(low, "year"), "year")
        month = int(m["m"])
        if m["d"] is None:
            low = datetime(year, month, 1, tzinfo=UTC)
            return FhirTime(low, _after(low, "month"), "month")
        day = int(m["d"])
        if m["H"] is None:
            low = datetime(year, month, day, tzinfo=UTC)
            return FhirTime(low, _after(low, "day"), "day")
        tz: timezone = UTC
        if m["tz"] and m["tz"] != "Z":
            hours, minutes = int(m["tz"][1:3]), int(m["tz"][4:6])
            if hours > 14 or minutes > 59:
                return None
            sign = 1 if m["tz"][0] == "+" else -1
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        precision: Precision = ("minute" if m["S"] is None else
                                "second" if m["f"] is None else "fraction")
        micro = int((m["f"] or "")[:6].ljust(6, "0"))
        low = datetime(year, month, day, int(m["H"]), int(m["M"]), int(m["S"] or 0), micro,
                       tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return FhirTime(low, _after(low, precision), precision)

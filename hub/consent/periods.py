"""FHIR date/dateTime values and Periods as half-open UTC spans, for consent periods.

A value stands for the span of its precision: "2026" is all of 2026, "2026-10-01" that whole day,
a dateTime (with or without seconds, any fraction, Z or an offset) one instant. A Period starts
at its start's first moment (inclusive) and ends after its end's last moment (exclusive): a
date-only end runs through the end of that day. Dates carry no zone in FHIR; we read them as UTC,
as does the store (hub/store/dates.py), which keeps closed ranges for search instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from hub.fhir.datetimes import EARLIEST, LATEST, parse

PeriodCheck = Literal["in", "before", "after", "unreadable"]


def span(value: object) -> tuple[datetime, datetime] | None:
    """The half-open UTC span [first, after) a FHIR date or dateTime stands for, or None; a
    time of day (any precision) is an instant."""
    parsed = parse(value)
    if parsed is None:
        return None
    if parsed.precision in ("minute", "second", "fraction"):
        return parsed.low, parsed.low
    return parsed.low, parsed.after


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

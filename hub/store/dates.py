"""FHIR date, dateTime and instant values as the closed UTC range of time they stand for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.fhir.datetimes import EARLIEST, LATEST, parse

MIN_AT = EARLIEST
MAX_AT = LATEST
_TICK = timedelta(microseconds=1)


def parse_range(value: str) -> tuple[datetime, datetime] | None:
    """The closed [low, high] UTC range a FHIR date/dateTime/instant covers at its precision,
    or None."""
    parsed = parse(value)
    if parsed is None:
        return None
    if parsed.precision == "fraction":
        return parsed.low, parsed.low
    return parsed.low, max(parsed.low, parsed.after - _TICK)


def format_instant(at: datetime) -> str:
    """A FHIR instant with microseconds and Z, e.g. 2026-11-23T19:48:40.123456Z."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

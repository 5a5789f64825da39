"""FHIR date/dateTime spans, and consent periods: start inclusive, end exclusive, dates whole."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub.consent.periods import check_period, instant, span
from hub.fhir.datetimes import LATEST

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "first", "after"),
    [
        ("2026", datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("2026-02", datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
        ("2028-02-29", datetime(2028, 2, 29, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC)),
        ("2026-11-23T12:00:00Z", NOW, NOW),
        ("2026-11-23T13:00:00+01:00", NOW, NOW),
        ("2026-11-23T07:30:00-04:30", NOW, NOW),
        ("2026-11-23T12:00Z", NOW, NOW),
        ("2026-11-23T12:00:00", NOW, NOW),  # no zone: read as UTC
        ("2026-11-23T12:00:00.5Z", NOW.replace(microsecond=500000),
         NOW.replace(microsecond=500000)),
        ("2026-11-23T12:00:00.123456789Z", NOW.replace(microsecond=123456),
         NOW.replace(microsecond=123456)),
        (" 2026-11-23 ", datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 24, tzinfo=UTC)),
        ("9999", datetime(9999, 1, 1, tzinfo=UTC), LATEST),
    ],
)
def test_span_covers_the_precision(value: str, first: datetime, after: datetime) -> None:
    assert span(value) == (first, after)


@pytest.mark.parametrize(
    "value",
    ["", "26", "2026-13", "2026-02-30", "2026-11-23T25:00:00Z", "2026-11-23T12:00:00+15:00",
     "2026-11-23T12:00:00+01:60", "23.11.2026", "2026-11-23 12:00", "now", None, 2026],
)
def test_span_refuses_what_is_not_a_date(value: object) -> None:
    assert span(value) is None
    assert instant(value) is None


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        (None, "in"),
        ({}, "in"),
        ({"start": "2026-11-23T12:00:00Z"}, "in"),  # start inclusive
        ({"start": "2026-11-23T12:00:01Z"}, "before"),
        ({"start": "2026-11-23"}, "in"),
        ({"start": "2026-11-24"}, "before"),
        ({"start": "2027"}, "before"),
        ({"end": "2026-11-23T12:00:00Z"}, "after"),  # end exclusive
        ({"end": "2026-11-23T13:00:00+01:00"}, "after"),
        ({"end": "2026-11-23T12:00:01Z"}, "in"),
        ({"end": "2026-11-23"}, "in"),  # a date-only end runs through that day
        ({"end": "2026-11-22"}, "after"),
        ({"end": "2026-11"}, "in"),
        ({"end": "2026-10"}, "after"),
        ({"start": "2026-01-01", "end": "2026-12-31"}, "in"),
        ({"start": "garbage"}, "unreadable"),
        ({"end": "2026-02-30"}, "unreadable"),
        ("2026", "unreadable"),
    ],
)
def test_check_period(period: object, expected: str) -> None:
    assert check_period(period, NOW) == expected

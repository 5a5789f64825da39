"""The shared FHIR date/dateTime parser: first moment, precision, and what follows it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub.fhir.datetimes import parse
from hub.store.dates import parse_range


@pytest.mark.parametrize(("value", "low", "after", "precision"), [
    ("2026", datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), "year"),
    ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), "month"),
    ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC), "day"),
    ("2026-11-23T10:00+01:00", datetime(2026, 11, 23, 9, tzinfo=UTC),
     datetime(2026, 11, 23, 9, 1, tzinfo=UTC), "minute"),
    ("2026-11-23T10:00:05Z", datetime(2026, 11, 23, 10, 0, 5, tzinfo=UTC),
     datetime(2026, 11, 23, 10, 0, 6, tzinfo=UTC), "second"),
    ("2026-11-23T10:00:05.25-02:00", datetime(2026, 11, 23, 12, 0, 5, 250000, tzinfo=UTC),
     datetime(2026, 11, 23, 12, 0, 5, 250000, tzinfo=UTC), "fraction"),
])
def test_parse(value: str, low: datetime, after: datetime, precision: str) -> None:
    parsed = parse(value)
    assert parsed is not None
    assert (parsed.low, parsed.after, parsed.precision) == (low, after, precision)


@pytest.mark.parametrize("value", ["2026-13", "2023-02-29", "yesterday", "2026-01-01T25:00Z",
                                   "2026-01-01T10:00+15:00", ""])
def test_rejects(value: str) -> None:
    assert parse(value) is None
    assert parse_range(value) is None


def test_search_range_is_closed_at_the_precision() -> None:
    assert parse_range("2026-11-23") == (datetime(2026, 11, 23, tzinfo=UTC),
                                         datetime(2026, 11, 23, 23, 59, 59, 999999, tzinfo=UTC))

"""Fixtures of the timed-check tests: the two-organisation `hub` of the example story."""

from __future__ import annotations

from tests.messaging.test_story import hub  # noqa: F401  (the fixture)

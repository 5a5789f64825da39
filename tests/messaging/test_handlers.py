"""The handler registry: every event's handlers, and the Task role rule before all others."""

from __future__ import annotations

import pytest

import hub.workflows  # noqa: F401
import hub.workflows.timed  # noqa: F401  (imported first on purpose: order must not matter)
from hub.fhir.vocab import EVENTS
from hub.messaging.handlers import HANDLERS, handles
from hub.workflows.tasks import task_roles


@pytest.mark.parametrize("event", EVENTS)
def test_the_task_role_rule_runs_before_every_other_handler(event: str) -> None:
    assert HANDLERS[event][0] is task_roles


def test_only_events_senders_may_post_take_handlers() -> None:
    with pytest.raises(ValueError, match="follow-up-overdue"):
        handles("follow-up-overdue")(task_roles)

"""What a sweep does with a due row of each kind: one action per kind, registered here.

An action runs in the sweep's transaction (inside a savepoint of its own) and returns the
outcome the row is closed with; the sweep closes it. An action that raises leaves no trace
but the row's `attempts` and `last_error`, and is tried again on a later sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.config import Settings
from hub.errors import HubError
from hub.scheduler.journal import Journal
from hub.scheduler.models import ScheduledCheckRow
from hub.store import service

HUB = Subject.hub_itself()


@dataclass
class Act:
    """What an action works with: the sweep's transaction, settings, audit journal, clock."""

    session: Session
    settings: Settings
    journal: Journal
    now: datetime

    def read(self, ref: str) -> dict[str, Any] | None:
        """The current body of "Type/id" as the hub sees it, or None (gone, deleted)."""
        rtype, _, rid = ref.partition("/")
        try:
            return service.read(self.session, HUB, resource_type=rtype, resource_id=rid).body
        except HubError:
            return None


Action = Callable[[Act, ScheduledCheckRow], str]
ACTIONS: dict[str, Action] = {}


def acts_on(kind: str) -> Callable[[Action], Action]:
    """Register the action of one kind of due row."""

    def register(fn: Action) -> Action:
        ACTIONS[kind] = fn
        return fn

    return register


def recipients(row: ScheduledCheckRow) -> list[str]:
    """The organisation ids a row's notice goes to."""
    return [o for o in row.recipients.split(",") if o]

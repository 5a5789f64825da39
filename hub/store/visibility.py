"""What a subject may see: the interface the store asks, and the one rule registered for it.

The store does not import the consent package above it. The consent gate registers itself
here when it is imported (hub/wiring.py imports it for every process); a store asked before
that refuses instead of showing everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.store.repository import Current


class Visibility(Protocol):
    """What one subject may see: an SQL pre-filter and a decision per row or version."""

    def clause(self) -> ColumnElement[bool] | None:
        """A filter on `resources` that never admits less than allowed (None: none)."""

    def certain(self) -> ColumnElement[bool] | None:
        """A filter on `resources` that admits only rows the subject may see without a
        decision per row (never more than allowed; None: every row)."""

    def allows(self, rows: Sequence[Current], searched: Iterable[str] = ()) -> list[bool]:
        """For each row, whether its current version may be seen (`searched`: by a search
        on these parameters, which must not tell what the subject may not see)."""

    def can_see(self, row: Current) -> bool:
        """Whether the row's current version may be seen."""

    def can_see_version(self, row: Current, body: Mapping[str, Any] | None) -> bool:
        """Whether one version (`body`; None: the current one) may be seen."""

    def view(self, row: Current, body: dict[str, Any] | None) -> dict[str, Any] | None:
        """A version the subject may see (`body`) as it is shown to the subject: the
        elements it may not see left out."""


Factory = Callable[[Session, Subject], Visibility]
_registered: list[Factory] = []


def use(factory: Factory) -> None:
    """Register the rule (the consent gate does, on import)."""
    _registered[:] = [factory]


def of(session: Session, subject: Subject) -> Visibility:
    """The registered rule for `subject`. RuntimeError when none is registered."""
    if not _registered:
        raise RuntimeError("No visibility rule is registered: import hub.wiring before "
                           "reading the store.")
    return _registered[0](session, subject)

"""Who owns what in the store: the organisation that wrote a record is the only one that
changes it. What a subject may *see* is the consent gate's decision (hub/consent/gate.py).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, false

from hub.auth.subject import Subject
from hub.errors import ForbiddenError
from hub.store.repository import Current, R

DIRECTORY_TYPES: frozenset[str] = frozenset({"Organization", "Endpoint"})
"""Shared by every organisation: who is who and where messages go."""


def own_clause(subject: Subject) -> ColumnElement[bool] | None:
    """A filter on `resources` for what `subject`'s organisation wrote (None: no filter)."""
    if subject.sees_everything:
        return None
    return R.c.owner_org == subject.organization_id if subject.organization_id else false()


def owns(subject: Subject, current: Current) -> bool:
    """True when `subject` (or its organisation) may change this resource."""
    if subject.sees_everything:
        return True
    return current.owner_org is not None and current.owner_org == subject.organization_id


def check_can_change(subject: Subject, current: Current) -> None:
    """ForbiddenError when a visible resource belongs to another organisation."""
    if subject.sees_everything:
        return
    if current.owner_org is None or current.owner_org != subject.organization_id:
        raise ForbiddenError(
            f"{current.resource_type}/{current.logical_id} belongs to another organisation; "
            "only its owner changes it.")


def owner_of_new(subject: Subject) -> str | None:
    """The organisation recorded as owner of what `subject` creates."""
    return subject.organization_id

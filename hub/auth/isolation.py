"""What a subject may see and change in the store: the one place that decides it.

Until the consent gate lands, an organisation's client sees the records its organisation
created plus the shared directory (Organization, Endpoint); it changes only its own records.
The hub itself sees everything. The consent gate will widen "its own" to what a patient's
consent or a legal basis discloses to the organisation.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_

from hub.auth.subject import Subject
from hub.errors import ForbiddenError
from hub.store.repository import Current, R

DIRECTORY_TYPES: frozenset[str] = frozenset({"Organization", "Endpoint"})
"""Shared by every organisation: who is who and where messages go."""


def visible_clause(subject: Subject) -> ColumnElement[bool] | None:
    """A filter on `resources` for what `subject` may see (None: no filter)."""
    if subject.sees_everything:
        return None
    own = R.c.owner_org == subject.organization_id if subject.organization_id else None
    directory = R.c.resource_type.in_(sorted(DIRECTORY_TYPES))
    return or_(own, directory) if own is not None else directory


def can_see(subject: Subject, current: Current) -> bool:
    """True when `subject` may know that this resource exists and read it."""
    if subject.sees_everything or current.resource_type in DIRECTORY_TYPES:
        return True
    return subject.organization_id is not None and current.owner_org == subject.organization_id


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

"""SMART system scopes: `system/<Type or *>.<read|write|*>`."""

from __future__ import annotations

from typing import Literal

from hub.auth.subject import Subject
from hub.errors import ForbiddenError

Access = Literal["read", "write"]


def allows(scopes: frozenset[str], resource_type: str, access: Access) -> bool:
    """True when one of `scopes` grants `access` to `resource_type`."""
    for scope in scopes:
        context, _, rest = scope.partition("/")
        rtype, _, mode = rest.partition(".")
        if context == "system" and rtype in ("*", resource_type) and mode in ("*", access):
            return True
    return False


def require(subject: Subject, resource_type: str, access: Access) -> None:
    """Raise ForbiddenError unless the subject's scopes grant `access` on the type."""
    if not allows(subject.scopes, resource_type, access):
        raise ForbiddenError(
            f"Your access does not include {access} on {resource_type} "
            f"(scope system/{resource_type}.{access} is needed)."
        )

"""Small readers the care-coordination rules share: what a reference names, and the body
behind it (from the message just accepted, else from the store, as the hub itself)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.errors import GoneError, InvalidResourceError, Issue, NotFoundError
from hub.fhir import refs
from hub.messaging.handlers import Accepted
from hub.store import service

HUB = Subject.hub_itself()


def ref(element: Any) -> str | None:
    """The literal `reference` of a Reference element ("Type/id" once intake rewrote it)."""
    if isinstance(element, dict) and isinstance(element.get("reference"), str):
        return str(element["reference"])
    return None


def shown(element: Any) -> str:
    """A Reference in words for a diagnostics line: its reference, identifier or display."""
    if not isinstance(element, dict):
        return "nothing"
    if element.get("reference"):
        return str(element["reference"])
    ident = element.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        return f"identifier {ident.get('system', '')}|{ident['value']}"
    return repr(element.get("display") or "an empty reference")


def identifier(body: dict[str, Any]) -> str:
    """The first identifier of a resource as system|value ('' when it has none)."""
    idents = body.get("identifier")
    first = idents[0] if isinstance(idents, list) and idents else idents
    if isinstance(first, dict) and first.get("value"):
        return f"{first.get('system', '')}|{first['value']}"
    return ""


def body(session: Session, accepted: Accepted, target: str | None,
         resource_type: str) -> dict[str, Any] | None:
    """The current body of `target` if it is a `resource_type`: the version this message
    stored, else the stored one; None when there is no such resource."""
    if target is None or not target.startswith(f"{resource_type}/"):
        return None
    if target in accepted.stored:
        return accepted.stored[target]
    try:
        found = service.read(session, HUB, resource_type=resource_type,
                             resource_id=target.split("/", 1)[1])
    except (NotFoundError, GoneError):
        return None
    return found.body


def owner(session: Session, target: str | None) -> str | None:
    """The organisation that owns the stored resource `target` ("Type/id")."""
    if target is None or "/" not in target:
        return None
    rtype, rid = target.split("/", 1)
    return service.owner_of(session, resource_type=rtype, resource_id=rid)


def requesters(session: Session, task_ref: str, task: dict[str, Any]) -> set[str]:
    """The organisations an answer to a Task goes back to: the one that sent the Task (its
    owner in the store) and an Organization it names as requester."""
    found = refs.org_ids(task.get("requester"))
    sent_by = owner(session, task_ref)
    return found | ({sent_by} if sent_by else set())


def reject(issues: list[Issue]) -> None:
    """Raise one 422 carrying every issue (the first one's words as its diagnostics)."""
    if issues:
        more = f" (and {len(issues) - 1} more problems)" if len(issues) > 1 else ""
        raise InvalidResourceError(issues[0].diagnostics + more, issues=issues)


def problem(diagnostics: str, expression: str, code: str = "business-rule") -> Issue:
    """One error issue of a broken rule."""
    return Issue(diagnostics, code, "error", expression)

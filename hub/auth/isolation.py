"""Who may write what (CONTRACT section 3): the one place that says it.

- Every stored resource has one owner, the organisation whose client or message first wrote
  it; only its owner writes new versions of it.
- Two parts of a resource belong to someone else: the statuses of a Task to the organisations
  it names as requester and owner (which status each may set is hub/workflows/tasks.py's
  rule), and a participant's answer in the organiser's Appointment (written by the meeting
  flow, which checks that the answer comes from a participant, and says so with
  `part=PARTICIPANT_ANSWER`).
- The directory (Organization, Endpoint) is written only by the hub itself (`hub org`).
- The hub as itself writes only its own notices and stored messages, and the directory.
- A Consent is recorded by the organisation it names as custodian (Consent.organization).

What a subject may *see* is the consent gate's decision (hub/consent/gate.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from hub.auth.subject import Subject
from hub.errors import ForbiddenError, InvalidResourceError
from hub.fhir import refs


class Current(Protocol):
    """What these rules read of a stored resource (hub.store.repository.Current)."""

    @property
    def resource_type(self) -> str: ...

    @property
    def logical_id(self) -> str: ...

    @property
    def owner_org(self) -> str | None: ...

DIRECTORY_TYPES: frozenset[str] = frozenset({"Organization", "Endpoint"})
"""Shared by every organisation: who is who and where messages go."""
HUB_WRITES: frozenset[str] = DIRECTORY_TYPES | {"Bundle", "Provenance", "AuditEvent"}
"""What the hub as itself writes: the directory, stored messages and its notices, its trail."""
PARTICIPANT_ANSWER = "participant-answer"
TASK_STATUS_PARTS = frozenset({"status", "statusReason", "businessStatus", "output",
                               "lastModified", "executionPeriod", "note"})
"""What the organisations a Task names may change in a Task another organisation owns."""
_VERSION_META = ("versionId", "lastUpdated")


def owns(subject: Subject, current: Current) -> bool:
    """True when `subject`'s organisation owns this resource (or the subject is the hub)."""
    if subject.is_hub:
        return current.resource_type in HUB_WRITES
    return current.owner_org is not None and current.owner_org == subject.organization_id


def owner_of_new(subject: Subject) -> str | None:
    """The organisation recorded as owner of what `subject` creates (None: the hub)."""
    return subject.organization_id


def check_create(subject: Subject, resource: Mapping[str, Any]) -> None:
    """Raise when `subject` may not create this resource: ForbiddenError (the directory, or
    the hub writing clinical data as itself), InvalidResourceError (a Consent recorded by an
    organisation it does not name as custodian)."""
    rtype = str(resource.get("resourceType"))
    _check_directory(subject, rtype)
    if subject.is_hub and rtype not in HUB_WRITES:
        raise ForbiddenError(f"The hub writes a {rtype} only for an organisation, never as "
                             "itself.")
    if rtype == "Consent":
        check_custodian(subject, resource)


def check_change(subject: Subject, current: Current, old: Mapping[str, Any] | None,
                 new: Mapping[str, Any] | None, *, part: str | None = None) -> None:
    """Raise ForbiddenError unless `subject` may write `new` (None: a deletion) as the next
    version of `current`, whose body is `old`; InvalidResourceError for a Consent whose
    custodian is not the writer."""
    _check_directory(subject, current.resource_type)
    if owns(subject, current):
        if new is not None and current.resource_type == "Consent":
            check_custodian(subject, new)
        return
    if new is not None and old is not None and may_change_part(subject, current.resource_type,
                                                              old, new, part=part):
        return
    raise ForbiddenError(
        f"{current.resource_type}/{current.logical_id} belongs to another organisation; only "
        "its owner changes it.")


def may_change_part(subject: Subject, rtype: str, old: Mapping[str, Any],
                    new: Mapping[str, Any], *, part: str | None = None) -> bool:
    """Whether a non-owner changes only the part of `old` that is its own (see the module)."""
    org = subject.organization_id
    if org is None:
        return False
    if rtype == "Task":
        named = refs.org_ids([old.get("owner"), old.get("requester")])
        return org in named and _only_changes(old, new, TASK_STATUS_PARTS)
    if rtype == "Appointment" and part == PARTICIPANT_ANSWER:
        return _only_participant_status(old, new)
    return False


def check_custodian(subject: Subject, consent: Mapping[str, Any]) -> None:
    """A Consent is recorded by the organisation it names as custodian (CONTRACT 5)."""
    org = subject.organization_id
    custodians = refs.org_ids(consent.get("organization") or [])
    if subject.is_hub or (org is not None and org in custodians):
        return
    named = ", ".join(f"Organization/{c}" for c in sorted(custodians)) or "no organisation"
    raise InvalidResourceError(
        f"A Consent is recorded by the organisation it names as custodian "
        f"(Consent.organization); this one names {named}, but you act for "
        f"Organization/{org}.", expression="Consent.organization")


def _check_directory(subject: Subject, rtype: str) -> None:
    if rtype in DIRECTORY_TYPES and not subject.is_hub:
        raise ForbiddenError(f"{rtype} resources are the hub's directory, written only with "
                             "the `hub org` commands.")


def _literal(node: Any) -> Any:
    """`node` with each resolved Reference reduced to its literal reference: a message may
    name a stored resource by identifier, and the stored copy then carries both."""
    if isinstance(node, list):
        return [_literal(v) for v in node]
    if not isinstance(node, Mapping):
        return node
    if isinstance(node.get("reference"), str):
        return {"reference": node["reference"]}
    return {k: _literal(v) for k, v in node.items()}


def _without_meta(body: Mapping[str, Any], drop: frozenset[str]) -> dict[str, Any]:
    out = {k: _literal(v) for k, v in body.items() if k not in drop and k != "meta"}
    meta = {k: v for k, v in (body.get("meta") or {}).items() if k not in _VERSION_META}
    if meta:
        out["meta"] = meta
    return out


def _only_changes(old: Mapping[str, Any], new: Mapping[str, Any],
                  parts: frozenset[str]) -> bool:
    return _without_meta(old, parts) == _without_meta(new, parts)


def _only_participant_status(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    def masked(body: Mapping[str, Any]) -> dict[str, Any]:
        out = _without_meta(body, frozenset())
        out["participant"] = [{k: _literal(v) for k, v in p.items() if k != "status"}
                              for p in body.get("participant") or [] if isinstance(p, dict)]
        return out
    return masked(old) == masked(new)

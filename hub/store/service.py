"""The versioned resource store: every write makes a version, every read names its subject.

Services take the session and the acting Subject first; they flush, never commit (the caller's
transaction decides). Errors are HubErrors.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    Table,
    bindparam,
    delete,
    false,
    insert,
    select,
    union_all,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.auth import isolation, scopes
from hub.auth.subject import Subject
from hub.db.direct import Direct
from hub.db.locks import identity_name, lock_names
from hub.db.models import ConditionalKeyRow
from hub.db.types import utcnow
from hub.errors import (
    BadRequestError,
    ConflictError,
    GoneError,
    InvalidResourceError,
    Issue,
    MethodNotAllowedError,
    NotFoundError,
    PreconditionFailedError,
)
from hub.fhir.identifiers import person_identifier_pairs, person_numbers
from hub.fhir.jsonio import canonical_bytes
from hub.fhir.structure import is_resource_type
from hub.fhir.validation import ID_RE, validate_resource
from hub.store import chains, visibility
from hub.store import history as history_mod
from hub.store import query as query_mod
from hub.store import repository as repo
from hub.store import search as search_mod
from hub.store.codec import decode_body, encode_body
from hub.store.dates import format_instant
from hub.store.resources import StoredResource, WriteResult
from hub.store.search_params import extract
from hub.store.types import READ_ONLY, SERVED

K = cast(Table, ConditionalKeyRow.__table__)
_RETRIES = 5


def check_type(subject: Subject, resource_type: str, *, write: bool) -> None:
    """404 for a type the hub does not serve, 405 for writing a read-only one (`Allow: GET`:
    its addresses are read and searched), 403 by scope."""
    if resource_type not in SERVED:
        if is_resource_type(resource_type):
            raise NotFoundError(f"This hub does not serve {resource_type} resources.")
        raise NotFoundError(f"'{resource_type}' is not a FHIR resource type.")
    if write and resource_type in READ_ONLY and subject.kind != "system":
        raise MethodNotAllowedError(f"{resource_type} is read-only here; only the hub writes it.",
                                    headers={"Allow": "GET"})
    scopes.require(subject, resource_type, "write" if write else "read")


def _check_valid(resource: dict[str, Any]) -> None:
    issues = validate_resource(resource)
    if issues:
        lead = issues[0].diagnostics if len(issues) == 1 else (
            f"{len(issues)} problems; the first: {issues[0].diagnostics}")
        raise InvalidResourceError(f"The {resource.get('resourceType')} is not valid: {lead}",
                                   issues=issues)


def _with_meta(resource: dict[str, Any], rid: str, version: int, at: datetime) -> dict[str, Any]:
    meta = {k: v for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    meta = {"versionId": str(version), "lastUpdated": format_instant(at), **meta}
    rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    return {"resourceType": resource["resourceType"], "id": rid, "meta": meta, **rest}


_VERSION_META = ("versionId", "lastUpdated")  # set by the store on every version


def _content(resource: dict[str, Any]) -> bytes:
    """What a version says, as canonical bytes: the body without the meta the store sets
    (key order ignored; numbers as written, so 0.40 differs from 0.4 and true from 1)."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in _VERSION_META}
    body = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        body["meta"] = meta
    return canonical_bytes(body)


def _same_content(current: repo.Current, resource: dict[str, Any]) -> bool:
    """True when `resource` says exactly what the current (not deleted) version says."""
    if current.deleted or current.body is None:
        return False
    return _content(decode_body(current.body)) == _content(resource)


def _shown(gate: visibility.Visibility, row: repo.Current,
           stored: StoredResource) -> StoredResource:
    """`stored` (a version of `row` the gate's subject may see) as the subject is shown it."""
    body = gate.view(row, stored.body)
    return stored if body is stored.body else replace(stored, body=body)


def _stored(current: repo.Current) -> StoredResource:
    return StoredResource.from_row(current.resource_type, current.logical_id, current.version_id,
                                   current.last_updated_at, current.body)


@dataclass(frozen=True)
class New:
    """A new resource for `create_many`: stored as `subject`, under `resource_id`."""

    subject: Subject
    resource: dict[str, Any]
    resource_id: str
    method: str = "POST"
    """POST, or PUT for an update that creates (its history says what the client sent)."""


def _insert_all(session: Session, items: Sequence[New]) -> list[tuple[int, StoredResource]]:
    for it in items:
        isolation.check_create(it.subject, it.resource)
    at = utcnow()
    bodies = [_with_meta(it.resource, it.resource_id, 1, at) for it in items]
    pks = repo.insert_resources(session, [
        repo.NewResource(body["resourceType"], it.resource_id, encode_body(body), at,
                         isolation.owner_of_new(it.subject), it.method)
        for it, body in zip(items, bodies, strict=True)])
    repo.insert_index(session, [(pk, body["resourceType"], extract(body))
                                for pk, body in zip(pks, bodies, strict=True)])
    return [(pk, StoredResource(body["resourceType"], body["id"], 1, at, body, it.method))
            for pk, body, it in zip(pks, bodies, items, strict=True)]


def _insert(session: Session, subject: Subject, resource: dict[str, Any],
            rid: str, method: str = "POST") -> tuple[int, StoredResource]:
    return _insert_all(session, [New(subject, resource, rid, method)])[0]


def create_many(session: Session, items: Sequence[New]) -> list[StoredResource]:
    """Store new, already validated resources under ids nobody can have used (fresh uuids),
    as `create(..., assigned_id=..., already_valid=True)` would one by one, but with one
    insert per table for them all (message intake). Checks every type first: raises
    NotFoundError, MethodNotAllowedError, ForbiddenError before writing anything."""
    for it in items:
        check_type(it.subject, it.resource["resourceType"], write=True)
    return [stored for _, stored in _insert_all(session, items)]


def create(
    session: Session,
    subject: Subject,
    *,
    resource: dict[str, Any],
    if_none_exist: str | None = None,
    assigned_id: str | None = None,
    already_valid: bool = False,
) -> WriteResult:
    """Store a new resource under a server id (or `assigned_id`); with `if_none_exist`, return
    the one match instead (412 if several). Raises InvalidResourceError, MethodNotAllowedError."""
    rtype = resource["resourceType"]
    check_type(subject, rtype, write=True)
    if not already_valid:
        _check_valid(resource)
    if not if_none_exist:
        linked = _linked_person(session, subject, resource)
        if linked is not None:
            return linked
        rid = assigned_id or str(uuid.uuid4())
        return WriteResult(_insert(session, subject, resource, rid)[1], created=True)
    return _conditional_create(session, subject, resource, if_none_exist, assigned_id)


def lock_people(session: Session, numbers: Iterable[str]) -> list[tuple[str, str]]:
    """Lock the identities of the people with these fødselsnummer / D-nummer `numbers` until
    the transaction ends, all at once (hub.db.locks): (system, value) of each way a Patient
    may carry them."""
    pairs = person_identifier_pairs(numbers)
    lock_names(session, [identity_name("Patient", system, value) for system, value in pairs])
    return pairs


def kept_person(session: Session, subject: Subject, numbers: Sequence[str], *,
                besides: str | None = None) -> repo.Current | None:
    """The Patient the hub keeps for the person with any of these fødselsnummer / D-nummer
    `numbers` (one Patient per person, CONTRACT section 3), other than Patient/`besides`;
    None when there is none. The person's identities stay locked until the transaction ends
    (the names message intake locks), so two writers cannot both find none and make two.
    Where a database from before this rule holds several, `subject`'s own is meant, else the
    one stored first, as for a message (hub.messaging.identity)."""
    if not numbers:
        return None
    pairs = lock_people(session, numbers)
    found = find_by_identifiers(session, Subject.hub_itself(), [
        Wanted(system, value, frozenset({"Patient"})) for system, value in pairs])
    ids = {stored.id for matches in found for stored in matches if stored.id != besides}
    made = sorted((c for c in (repo.get_current(session, "Patient", rid) for rid in ids)
                   if c is not None), key=lambda c: c.pk)  # stored first, first
    own = [c for c in made if isolation.owns(subject, c)]
    return next(iter(own or made), None)


def kept_person_of(session: Session, subject: Subject,
                   resource: dict[str, Any]) -> repo.Current | None:
    """`kept_person` for the numbers a Patient `resource` carries (None for other types)."""
    if resource.get("resourceType") != "Patient":
        return None
    return kept_person(session, subject, person_numbers(resource))


def kept_person_issue(kept: StoredResource) -> Issue:
    """What a create that named a person the hub keeps, and may not read, is told."""
    return Issue(f"The hub already keeps this person as {kept.relative_url} (one Patient per "
                 "fødselsnummer or D-nummer), so nothing was written. Refer to "
                 f"{kept.relative_url} in your records; you may read it once you hold records "
                 "about the person.", "informational", "information")


def _linked_person(session: Session, subject: Subject,
                   resource: dict[str, Any]) -> WriteResult | None:
    """A new Patient for a person the hub keeps is that Patient: nothing is written, and the
    caller gets its location (its body only where it may read it). As a message from an
    organisation that does not own the Patient links to it and leaves it unchanged."""
    kept = kept_person_of(session, subject, resource)
    if kept is None:
        return None
    gate = visibility.of(session, subject)
    readable = gate.can_see(kept)
    return WriteResult(_shown(gate, kept, _stored(kept)) if readable else _stored(kept),
                       created=False, unchanged=True, readable=readable)


def _normalise_criteria(criteria: str) -> str:
    pairs = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
    if not pairs:
        raise BadRequestError("If-None-Exist has no search criteria.")
    return urlencode(sorted(pairs))


def _conditional_create(
    session: Session, subject: Subject, resource: dict[str, Any], criteria: str,
    assigned_id: str | None,
) -> WriteResult:
    rtype = resource["resourceType"]
    norm = _normalise_criteria(criteria)
    # Each organisation matches within what it can see, so each claims its criteria apart.
    owner = isolation.owner_of_new(subject) or ""
    digest = hashlib.sha256(f"{owner} {rtype}?{norm}".encode()).hexdigest()
    # A conditional update on the same criteria takes this lock (PostgreSQL): the two wait
    # for each other instead of both finding nothing and both creating.
    lock_names(session, [_criteria_lock(owner, rtype, norm)])
    for attempt in range(_RETRIES):
        found = match(session, subject, resource_type=rtype, criteria=norm, limit=2)
        if len(found) > 1:
            raise PreconditionFailedError(
                f"If-None-Exist '{criteria}' matches more than one {rtype}; be more specific.")
        if found:
            return WriteResult(_stored(found[0]), created=False, unchanged=True)
        linked = _linked_person(session, subject, resource)
        if linked is not None:
            return linked
        if attempt:
            # The last insert met a committed key, yet nothing matches now: the resource that
            # claimed these criteria has changed since, so its claim is stale.
            session.execute(delete(K).where(K.c.resource_type == rtype,
                                            K.c.criteria_hash == digest))
        # Claim the criteria with a unique key, so a concurrent twin cannot also insert: it
        # waits for this transaction and then fails, re-searches and finds this resource.
        try:
            with session.begin_nested():
                pk, stored = _insert(session, subject, resource,
                                     assigned_id or str(uuid.uuid4()))
                session.execute(insert(K).values(resource_type=rtype, criteria_hash=digest,
                                                 criteria=norm[:2000], resource_pk=pk))
            return WriteResult(stored, created=True)
        except IntegrityError:
            continue
    raise PreconditionFailedError(
        f"If-None-Exist '{criteria}' could not be settled against concurrent writes; retry.")


def _criteria_lock(owner: str, rtype: str, norm: str) -> str:
    return f"conditional {owner} {rtype}?{norm}"


def conditional_target(session: Session, subject: Subject, *, resource_type: str,
                       criteria: str, resource: dict[str, Any]) -> str:
    """The id a conditional update (`PUT Type?criteria`, FHIR http.html#cond-update) writes:
    the one current match among what `subject` may see, else the body's id (update as
    create), else a new id. Only what the caller may see is matched, so the answer never
    depends on a record hidden from it. The criteria stay locked until the transaction ends
    (PostgreSQL; SQLite's writers run one at a time), so two twins do not both create.
    Raises BadRequestError (no or unknown criteria; a body id other than the match's),
    PreconditionFailedError (several matches)."""
    check_type(subject, resource_type, write=True)
    if not parse_qsl(criteria.lstrip("?"), keep_blank_values=True):
        raise BadRequestError(f"A conditional update (PUT /fhir/{resource_type}?...) needs "
                              "search criteria in the URL; to update one resource, PUT "
                              f"/fhir/{resource_type}/<id>.")
    norm = _normalise_criteria(criteria)
    owner = isolation.owner_of_new(subject) or ""
    lock_names(session, [_criteria_lock(owner, resource_type, norm)])
    matches = visible_matches(session, subject, resource_type=resource_type, criteria=norm)
    if len(matches) > 1:
        raise PreconditionFailedError(
            f"The criteria '{criteria[:200]}' match more than one {resource_type}; a "
            "conditional update needs exactly one (or none); be more specific.")
    body_id = resource.get("id")
    if matches:
        found = matches[0]
        if body_id is not None and body_id != found:
            raise BadRequestError(
                f"The body's id ({str(body_id)[:64]}) is not the id of the {resource_type} "
                f"the criteria match ({found}); leave it out or send that one.",
                expression=f"{resource_type}.id")
        return found
    if body_id is not None:
        if not isinstance(body_id, str) or not valid_id(body_id):
            raise BadRequestError(f"The body's id ({str(body_id)[:64]!r}) is not a FHIR id.",
                                  expression=f"{resource_type}.id")
        return body_id
    return str(uuid.uuid4())


def visible_matches(session: Session, subject: Subject, *, resource_type: str,
                    criteria: str) -> list[str]:
    """The ids of the current resources matching `criteria` (a search query string) among
    what `subject` may see: none, one, or two (two meaning "more than one"). Only what the
    caller may see counts, so the answer never depends on a record hidden from it (conditional
    update, conditional references in a transaction). Raises BadRequestError (criteria the
    search refuses, or parameters it does not support)."""
    pairs = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
    req = query_mod.parse_request(resource_type, pairs, default_count=2, max_count=2)
    req.count, req.offset, req.total, req.include = 2, 0, False, []
    page = search_mod.run(session, req, visibility.of(session, subject))
    if page.ignored:
        raise BadRequestError("Conditional criteria use search parameters this hub does not "
                              f"support on {resource_type}: {', '.join(page.ignored)}.")
    return [m.logical_id for m in page.matches]


def _own_clause(subject: Subject) -> ColumnElement[bool] | None:
    """A filter on `resources` for what `subject`'s organisation wrote (None: no filter)."""
    if subject.sees_everything:
        return None
    return repo.R.c.owner_org == subject.organization_id if subject.organization_id else false()


def match(
    session: Session, subject: Subject, *, resource_type: str, criteria: str, limit: int
) -> list[repo.Current]:
    """Current resources matching a search query string (for conditional interactions)."""
    pairs = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
    req = query_mod.parse_request(resource_type, pairs, default_count=limit, max_count=limit)
    query, ignored = search_mod.build_query(
        req, _own_clause(subject), chains.Links(session, visibility.of(session, subject)))
    if ignored:
        raise BadRequestError(
            f"Conditional criteria use unknown search parameters: {', '.join(ignored)}.")
    pks: list[int] = list(session.execute(query.limit(limit)).scalars())
    return repo.get_current_by_pk(session, pks)


def _parse_etag(if_match: str) -> int:
    tag = if_match.strip()
    tag = tag.removeprefix("W/").strip('"')
    try:
        return int(tag)
    except ValueError:
        raise BadRequestError(f"If-Match '{if_match}' is not a version tag like W/\"3\".") from None


def check_body_id(resource_type: str, resource_id: str, resource: dict[str, Any]) -> None:
    """BadRequestError unless the body's id is the id in the URL (FHIR http.html#update: no
    id, or another, is a 400); for `PUT Type/id`, by REST or as a Bundle entry."""
    if resource.get("id") != resource_id:
        raise BadRequestError(
            f"The body's id ({resource.get('id')!r}) must equal the id in the URL ({resource_id}).",
            expression=f"{resource_type}.id")


def update(
    session: Session,
    subject: Subject,
    *,
    resource_type: str,
    resource_id: str,
    resource: dict[str, Any],
    if_match: str | None = None,
    already_valid: bool = False,
    keep_unchanged: bool = False,
    part: str | None = None,
) -> WriteResult:
    """Store a new version of Type/id (creating it under that id if new). 412 when `if_match`
    is not the current version. `already_valid`: the caller ran hub.fhir.validation on this
    very body (message intake), so it is not checked twice. `keep_unchanged`: when the body
    says exactly what the current version says (meta.versionId and lastUpdated aside), write
    nothing and return the current version with `unchanged` (message intake: a resource sent
    again in every message keeps a meaningful history). `part`: the named part of another
    organisation's resource the caller writes (hub.auth.isolation). Raises BadRequestError,
    InvalidResourceError, ForbiddenError (another organisation's resource), ConflictError
    (an id the caller cannot see)."""
    check_type(subject, resource_type, write=True)
    if resource.get("resourceType") != resource_type:
        raise BadRequestError(
            f"The body is a {resource.get('resourceType')}, but the URL names {resource_type}.",
            expression="resourceType")
    check_body_id(resource_type, resource_id, resource)
    if not already_valid:
        _check_valid(resource)
    expected = _parse_etag(if_match) if if_match is not None else None
    for _ in range(_RETRIES):
        current = repo.get_current(session, resource_type, resource_id)
        old = decode_body(current.body) if current is not None and current.body else None
        if resource_type == "Patient":
            _check_one_person(session, subject, resource_id, old, resource)
        if current is not None and not isolation.owns(subject, current) and not (
                old is not None and isolation.may_change_part(
                    subject, resource_type, old, resource, part=part)) and not visibility.of(
                session, subject).can_see(current):
            raise ConflictError(f"The id {resource_id} is not available for a new "
                                f"{resource_type}; create it with POST to get an id.")
        if current is None:
            if expected is not None:
                raise PreconditionFailedError(
                    f"{resource_type}/{resource_id} does not exist, so If-Match cannot hold.")
            try:
                with session.begin_nested():
                    _, stored = _insert(session, subject, resource, resource_id, "PUT")
                return WriteResult(stored, created=True)
            except IntegrityError:
                continue  # created concurrently; update it instead
        if expected is not None and expected != current.version_id:
            raise PreconditionFailedError(
                f"{resource_type}/{resource_id} is at version {current.version_id}, not "
                f"{expected}: someone changed it; read it again and reapply your change.")
        if keep_unchanged and _same_content(current, resource):
            return WriteResult(_stored(current), created=False, unchanged=True)
        isolation.check_change(subject, current, old, resource, part=part)
        at = utcnow()
        body = _with_meta(resource, resource_id, current.version_id + 1, at)
        if repo.write_version(session, current, encode_body(body), at, "PUT"):
            repo.replace_index(session, current.pk, resource_type, extract(body))
            return WriteResult(StoredResource(resource_type, resource_id, current.version_id + 1,
                                              at, body, "PUT"), created=current.deleted)
        if expected is not None:
            raise PreconditionFailedError(
                f"{resource_type}/{resource_id} changed while you wrote; read it again.")
    raise PreconditionFailedError(f"{resource_type}/{resource_id} is changing too fast; retry.")


def _check_one_person(session: Session, subject: Subject, resource_id: str,
                      old: dict[str, Any] | None, new: dict[str, Any]) -> None:
    """InvalidResourceError when Patient/`resource_id` would take on a fødselsnummer or
    D-nummer that another Patient carries: the hub keeps one Patient per person (CONTRACT
    section 3). A number the current version already carries is no new claim."""
    added = sorted(set(person_numbers(new)) - set(person_numbers(old or {})))
    kept = kept_person(session, subject, added, besides=resource_id)
    if kept is None:
        return
    said = (f"The hub already keeps this person as Patient/{kept.logical_id}: one Patient per "
            "fødselsnummer or D-nummer. Refer to that Patient in your records instead of "
            f"writing a second one under Patient/{resource_id}.")
    raise InvalidResourceError(said, issues=[Issue(said, "duplicate", "error",
                                                   "Patient.identifier")])


def delete_resource(
    session: Session, subject: Subject, *, resource_type: str, resource_id: str
) -> StoredResource | None:
    """Delete Type/id (a new, empty version); None when it is not there (deleting is idempotent)."""
    check_type(subject, resource_type, write=True)
    for _ in range(_RETRIES):
        current = repo.get_current(session, resource_type, resource_id)
        if current is None or (not isolation.owns(subject, current)
                               and not visibility.of(session, subject).can_see(current)):
            return None  # deleting what is not there (for you) is a no-op, revealing nothing
        isolation.check_change(subject, current, None, None)
        if current.deleted:
            return None
        at = utcnow()
        if repo.write_version(session, current, None, at, "DELETE"):
            repo.replace_index(session, current.pk, resource_type, None)
            return StoredResource(resource_type, resource_id, current.version_id + 1, at, None,
                                  "DELETE")
    raise PreconditionFailedError(f"{resource_type}/{resource_id} is changing too fast; retry.")


def conditional_delete(session: Session, subject: Subject, *, resource_type: str,
                       criteria: str) -> tuple[str | None, StoredResource | None]:
    """Conditional delete in single mode (`DELETE Type?criteria`, R4 http.html#cdelete), by
    REST or as a transaction or batch entry: the one current match among what `subject` may
    see is deleted as `delete_resource` deletes it (another organisation's is a 403); none
    deletes nothing. (The match's id or None, the deletion or None.) Only what the caller
    may see is matched, so the answer never depends on a record hidden from it. Raises
    BadRequestError (no or unknown criteria), PreconditionFailedError (several matches),
    ForbiddenError."""
    check_type(subject, resource_type, write=True)
    if not parse_qsl(criteria.lstrip("?"), keep_blank_values=True):
        raise BadRequestError(f"A conditional delete (DELETE /fhir/{resource_type}?...) needs "
                              "search criteria; to delete one resource, DELETE "
                              f"/fhir/{resource_type}/<id>.")
    matches = visible_matches(session, subject, resource_type=resource_type,
                              criteria=_normalise_criteria(criteria))
    if len(matches) > 1:
        raise PreconditionFailedError(
            f"The criteria '{criteria[:200]}' match more than one {resource_type}; a "
            "conditional delete deletes one; be more specific.")
    if not matches:
        return None, None
    return matches[0], delete_resource(session, subject, resource_type=resource_type,
                                       resource_id=matches[0])


def read(session: Session, subject: Subject, *, resource_type: str,
         resource_id: str) -> StoredResource:
    """The current version of Type/id, as the subject is shown it. Raises NotFoundError,
    GoneError (deleted)."""
    check_type(subject, resource_type, write=False)
    current = repo.get_current(session, resource_type, resource_id)
    gate = visibility.of(session, subject)
    if current is None or not gate.can_see(current):
        raise NotFoundError(f"{resource_type}/{resource_id} is not known here.")
    if current.deleted:
        raise GoneError(f"{resource_type}/{resource_id} was deleted.",
                        headers={"ETag": f'W/"{current.version_id}"'})
    return _shown(gate, current, _stored(current))


def exists(session: Session, subject: Subject, *, resource_type: str, resource_id: str) -> bool:
    """True when Type/id exists and is not deleted."""
    check_type(subject, resource_type, write=False)
    current = repo.get_current(session, resource_type, resource_id)
    return (current is not None and not current.deleted
            and visibility.of(session, subject).can_see(current))


def vread(session: Session, subject: Subject, *, resource_type: str, resource_id: str,
          version_id: str) -> StoredResource:
    """One version of Type/id, where the subject may see that very version (each version is
    judged on its own: CONTRACT section 5). Raises NotFoundError, GoneError (a deletion)."""
    check_type(subject, resource_type, write=False)
    current = repo.get_current(session, resource_type, resource_id)
    missing = NotFoundError(f"{resource_type}/{resource_id} is not known here "
                            f"(no version '{version_id}').")
    if current is None or not version_id.isdigit() or len(version_id) > 18:
        raise missing
    row = repo.get_version(session, current.pk, int(version_id))
    if row is None:
        raise missing
    gate = visibility.of(session, subject)
    if not _version_visible(session, gate, current, row):
        raise missing
    if row.body is None:
        raise GoneError(f"Version {version_id} of {resource_type}/{resource_id} is its deletion.")
    return _shown(gate, current, StoredResource.from_row(
        resource_type, resource_id, row.version_id, row.last_updated_at, row.body, row.method))


def history(session: Session, subject: Subject, *, resource_type: str, resource_id: str,
            count: int, offset: int, since: datetime | None = None,
            at: tuple[datetime, datetime] | None = None) -> tuple[list[StoredResource], bool]:
    """The versions of Type/id the subject may see and `since` and `at` keep (instant
    history's `_since` and `_at`, hub.store.history),
    newest first, and whether more follow. Each version is judged on its own; paging counts
    only those. NotFoundError when the subject may see none at all (a time that keeps none
    is an empty page)."""
    check_type(subject, resource_type, write=False)
    current = repo.get_current(session, resource_type, resource_id)
    if current is None:
        raise NotFoundError(f"{resource_type}/{resource_id} is not known here.")
    rows = repo.list_versions(session, current.pk, limit=_MAX_VERSIONS, offset=0)
    gate = visibility.of(session, subject)
    visible = [r for i, r in enumerate(rows)
               if _version_visible(session, gate, current, r, older=rows[i + 1:i + 2])]
    if not visible:
        raise NotFoundError(f"{resource_type}/{resource_id} is not known here.")
    # a version is current until the next one is made, whoever may see that one
    made = [r.last_updated_at for r in rows]
    newer = {r.version_id: made[i - 1] if i else None for i, r in enumerate(rows)}
    kept = [r for r in visible
            if history_mod.in_time(r.last_updated_at, newer[r.version_id], since=since, at=at)]
    page = kept[offset:offset + count]
    versions = [_shown(gate, current, StoredResource.from_row(
        resource_type, resource_id, r.version_id, r.last_updated_at, r.body, r.method))
        for r in page]
    return versions, len(kept) > offset + count


_MAX_VERSIONS = 10_000  # history reads them all to judge each; no real resource has more


def _version_visible(session: Session, gate: visibility.Visibility, current: repo.Current,
                     row: Any, *, older: Sequence[Any] | None = None) -> bool:
    """Whether `gate`'s subject may see this version. A deletion says nothing but that the
    resource was deleted: it is shown to those who could see the version it deleted."""
    if row.body is not None:
        return gate.can_see_version(current, decode_body(row.body))
    before = list(older) if older is not None else (
        [repo.get_version(session, current.pk, row.version_id - 1)] if row.version_id > 1
        else [])
    return bool(before) and before[0] is not None and before[0].body is not None and (
        gate.can_see_version(current, decode_body(before[0].body)))


def search(session: Session, subject: Subject, *,
           request: query_mod.SearchRequest) -> tuple[list[StoredResource],
                                                       list[StoredResource],
                                                       search_mod.SearchPage]:
    """Matches and included resources of one search page."""
    check_type(subject, request.resource_type, write=False)
    gate = visibility.of(session, subject)
    page = search_mod.run(session, request, gate)
    return ([_shown(gate, c, _stored(c)) for c in page.matches],
            [_shown(gate, c, _stored(c)) for c in page.included], page)


def _identifier_query(with_system: bool) -> Select[Any]:
    tokens = repo.INDEX_TABLES[0]
    # The token index leads with resource_type: naming the types lets both databases look
    # the identifier up in it instead of scanning every token of every resource.
    return select(*repo.CURRENT_COLUMNS).where(
        repo.R.c.deleted.is_(False),
        repo.R.c.pk.in_(select(tokens.c.resource_pk).where(
            tokens.c.resource_type.in_(bindparam("types", expanding=True)),
            tokens.c.param == "identifier", tokens.c.code == bindparam("value"),
            tokens.c.system == bindparam("system") if with_system
            else tokens.c.system.is_(None)))).order_by(repo.R.c.pk)


# Built once (message intake asks this for every entry); key: whether a system is given.
_BY_IDENTIFIER = {s: _identifier_query(s) for s in (True, False)}


def find_by_identifier(session: Session, subject: Subject, *, system: str | None, value: str,
                       resource_types: frozenset[str] | None = None) -> list[StoredResource]:
    """Current resources (of `resource_types`, or any served type) carrying this identifier,
    among what `subject` may see."""
    query = _BY_IDENTIFIER[system is not None]
    params: dict[str, Any] = {"value": value, "system": system,
                              "types": sorted(resource_types or SERVED)}
    gate = visibility.of(session, subject)
    clause = gate.clause()
    if clause is not None:
        query = query.where(clause)
    rows = repo.current_rows(session, query, params)
    return [_shown(gate, r, _stored(r))
            for r, ok in zip(rows, gate.allows(rows, ("identifier",)), strict=True) if ok]


_TOKENS = repo.INDEX_TABLES[0]


def _identifier_tokens(types: Any) -> Select[Any]:
    """The current resources with their identifier tokens, among `types` (an IN's right
    side: an expanding parameter or a list of parameters)."""
    return (select(*repo.CURRENT_COLUMNS, _TOKENS.c.system, _TOKENS.c.code)
            .join(_TOKENS, _TOKENS.c.resource_pk == repo.R.c.pk)
            .where(repo.R.c.deleted.is_(False), _TOKENS.c.resource_type.in_(types),
                   _TOKENS.c.param == "identifier"))


def _by_identifiers_query(types: Any, values: Any) -> Select[Any]:
    """The current resources whose identifier token is one of `values`, among `types`
    (each an IN's right side: an expanding parameter or a list of parameters)."""
    return _identifier_tokens(types).where(_TOKENS.c.code.in_(values)).order_by(repo.R.c.pk)


def _by_identifiers_each(types: Any, values: list[Any],
                         clause: ColumnElement[bool] | None = None) -> CompoundSelect[Any]:
    """The rows of `_by_identifiers_query(types, values)`, one SELECT per value joined by
    UNION ALL (PostgreSQL). With `code IN (...)` PostgreSQL's planner, until the first
    ANALYZE of a growing table (a new hub, its first minute), read every identifier of
    the types and filtered the codes: 0.79 ms a message at 2,000 patients, growing with
    each (pg_stat_statements under bench/ingest.py), the largest statement of the server's
    time. An equality on the code is always a condition of the index's scan. `clause`: an
    organisation's visibility, on each SELECT."""
    branch = _identifier_tokens(types)
    if clause is not None:
        branch = branch.where(clause)
    each = union_all(*(branch.where(_TOKENS.c.code == v) for v in values))
    return each.order_by(each.selected_columns.pk)


def _identifiers_statement(dialect: str, types: Any, values: int,
                           clause: ColumnElement[bool] | None = None,
                           ) -> Select[Any] | CompoundSelect[Any]:
    """The look-up of the identifier tokens among `types` (an IN's right side) whose code
    is one of the parameters v0, v1, ... (`values` of them): on PostgreSQL one SELECT per
    value (`_by_identifiers_each`), elsewhere one IN. `clause`: an organisation's
    visibility."""
    codes: list[Any] = [bindparam(f"v{i}") for i in range(values)]
    if dialect == "postgresql":
        return _by_identifiers_each(types, codes, clause)
    query = _by_identifiers_query(types, codes)
    return query if clause is None else query.where(clause)


_FIXED_MOST = 16
"""`_by_identifiers` gives a statement for up to this many types and values."""
_BY_IDENTIFIERS_FIXED: dict[tuple[str, int, int], Direct] = {}


def _by_identifiers(dialect: str, types: int, values: int) -> Direct | None:
    """`_identifiers_statement` with a parameter of its own for each type instead of an
    expanding IN, which Direct cannot run (hub/db/direct.py); one statement per shape, the
    same few shapes for every message (None above `_FIXED_MOST`: SQLAlchemy runs it). On
    SQLite this look-up is inside the write lock; on PostgreSQL it becomes a prepared
    statement."""
    if not 0 < types <= _FIXED_MOST or not 0 < values <= _FIXED_MOST:
        return None
    statement = _BY_IDENTIFIERS_FIXED.get((dialect, types, values))
    if statement is None:
        statement = _BY_IDENTIFIERS_FIXED[(dialect, types, values)] = Direct(
            _identifiers_statement(dialect, [bindparam(f"t{i}") for i in range(types)], values))
    return statement


@dataclass(frozen=True)
class Wanted:
    """One identifier to look up: system (None: none given), value, and the types it may be."""

    system: str | None
    value: str
    resource_types: frozenset[str]


def find_by_identifiers(session: Session, subject: Subject,
                        wanted: Sequence[Wanted]) -> list[list[StoredResource]]:
    """`find_by_identifier` of each of `wanted`, in one statement (message intake looks up
    every entry's identifiers at once); per wanted, its matches in the order stored."""
    if not wanted:
        return []
    types = sorted({t for w in wanted for t in w.resource_types})
    values = sorted({w.value for w in wanted})
    gate = visibility.of(session, subject)
    clause = gate.clause()
    conn = session.connection()
    fixed = (_by_identifiers(conn.dialect.name, len(types), len(values)) if clause is None
             else None)
    if fixed is not None:  # the hub's own look-up (message intake), on the driver's cursor
        rows = fixed.rows(conn, {
            **{f"t{i}": t for i, t in enumerate(types)},
            **{f"v{i}": v for i, v in enumerate(values)}})
    else:  # past the fixed shapes, or an organisation's (with its visibility clause)
        query = _identifiers_statement(conn.dialect.name, bindparam("types", expanding=True),
                                       len(values), clause)
        rows = [tuple(r) for r in conn.execute(query, {
            "types": types, **{f"v{i}": v for i, v in enumerate(values)}})]
    currents = [repo.Current(*row[:-2]) for row in rows]
    seen = {c.pk for c, ok in zip(currents, gate.allows(currents, ("identifier",)), strict=True)
            if ok}
    out: list[list[StoredResource]] = []
    for w in wanted:
        pks: dict[int, repo.Current] = {}
        for row, current in zip(rows, currents, strict=True):
            if (current.pk in seen and row[-1] == w.value and row[-2] == w.system
                    and current.resource_type in w.resource_types):
                pks[current.pk] = current
        out.append([_shown(gate, c, _stored(c)) for c in pks.values()])
    return out


def owner_of(session: Session, *, resource_type: str, resource_id: str) -> str | None:
    """The organisation that owns Type/id (None: the hub's own, or no such resource). Owners
    are no secret from the hub's own flows (who organised a meeting, who sent a request)."""
    current = repo.get_current(session, resource_type, resource_id)
    return current.owner_org if current is not None else None


def owners_first_made_first(session: Session, *, resource_type: str,
                            resource_ids: Iterable[str]) -> list[tuple[str, str | None]]:
    """(id, owner) of these resources of one type, the one stored first coming first. For
    the hub's own matching (which of several Patients with one fødselsnummer a message
    means): owners are no secret from the hub."""
    rows = [repo.get_current(session, resource_type, rid) for rid in resource_ids]
    return [(r.logical_id, r.owner_org)
            for r in sorted((r for r in rows if r is not None), key=lambda r: r.pk)]


def valid_id(resource_id: str) -> bool:
    """True when `resource_id` is a valid FHIR logical id."""
    return bool(ID_RE.match(resource_id))


__all__ = ["check_type", "conditional_target", "create", "delete_resource", "history",
           "kept_person", "kept_person_issue", "kept_person_of", "lock_people", "match", "owner_of",
           "owners_first_made_first", "read", "search", "update", "valid_id", "vread"]

"""$process-message (CONTRACT section 4): check, store, route, answer, in one transaction.

Order of work, all in the caller's transaction: parse and validate (nothing stored on any
problem); the sender must be the caller's organisation; claim (sender, MessageHeader.id) in
`messages` (a message sent before returns its first answer; a twin waits on the unique key
and then does the same); place every entry (new resource or new version, by identity: reads
only); rewrite references to stored ids;
store (a resource that says exactly what its current version says is kept as it is: no new
version; the new ones and the Bundle with one insert per table); run the event's handlers;
decide and queue one delivery per destination; store the response.

The checks that need no database (`check_message`: the Bundle's shape, validation, the content
hash) can run before the transaction; the API does so, so that on SQLite the write lock is
held only for the work that needs it. The statements of this path are built once and its
writes run on the driver's cursor of the session's connection (hub/db/direct.py;
bench/ingest.py).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, make_transient_to_detached

from hub.auth import isolation, scopes
from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.direct import Direct
from hub.db.types import utcnow
from hub.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InvalidResourceError,
    Issue,
)
from hub.fhir import refs, vocab
from hub.fhir.jsonio import canonical_bytes, dumps_bytes, loads
from hub.fhir.validation import validate_message
from hub.messaging import identity
from hub.messaging.handlers import Accepted, run_handlers
from hub.messaging.models import MessageFullUrlRow, MessageRow
from hub.messaging.routing import queue_delivery
from hub.store import service
from hub.store.dates import format_instant
from hub.store.resources import StoredResource

EVENT_SYSTEM = vocab.EVENT_SYSTEM


@dataclass(frozen=True)
class Outcome:
    """The answer to one $process-message call."""

    response: dict[str, Any]
    replayed: bool  # True: a duplicate; this is the first call's stored answer
    resources: tuple[str, ...] = ()  # what it stored ("Type/id"), for the audit trail
    patients: tuple[str, ...] = ()


@dataclass(frozen=True)
class Checked:
    """A message Bundle that passed `check_message`: its header and content hash."""

    bundle: dict[str, Any]
    header: dict[str, Any]
    digest: str


def check_message(bundle: dict[str, Any]) -> Checked:
    """What can be judged of a message without the database: the Bundle's shape (400) and
    its validity (422, one issue per problem). Pure: safe to run outside the transaction."""
    header = _header(bundle)
    issues = validate_message(bundle)
    if issues:
        raise InvalidResourceError(
            f"The message is not valid: {issues[0].diagnostics}"
            + (f" (and {len(issues) - 1} more problems)" if len(issues) > 1 else ""),
            issues=issues)
    return Checked(bundle, header, _content_hash(bundle))


def _content_hash(bundle: dict[str, Any]) -> str:
    """A hash of what the message says (its meta is transport detail and left out)."""
    body = {k: v for k, v in bundle.items() if k != "meta"}
    canonical = canonical_bytes(body)
    return hashlib.sha256(canonical).hexdigest()


def _header(bundle: dict[str, Any]) -> dict[str, Any]:
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "message":
        raise BadRequestError("$process-message takes a Bundle of type message.",
                              expression="Bundle.type")
    entries = bundle.get("entry")
    first = entries[0].get("resource") if isinstance(entries, list) and entries and isinstance(
        entries[0], dict) else None
    if not isinstance(first, dict) or first.get("resourceType") != "MessageHeader":
        raise BadRequestError("The first entry of a message Bundle must be its MessageHeader.",
                              expression="Bundle.entry[0].resource")
    return first


def _sender_refused(header: dict[str, Any], subject: Subject) -> str:
    """Why a message's sender is not the caller, in words (never a Python None)."""
    you = (f"you act for Organization/{subject.organization_id}"
           if subject.organization_id else "you act for no organisation")
    named = header.get("sender")
    reference = named.get("reference") if isinstance(named, dict) else None
    if not isinstance(reference, str) or not reference:
        return (f"The MessageHeader names no sender; {you}, so name it as the sender "
                "(MessageHeader.sender). Messages without a sender are the hub's own "
                "notices, which only the hub sends.")
    return f"The MessageHeader's sender is {reference[:100]}, but {you}; send only as yourself."


def process_message(session: Session, subject: Subject, settings: Settings, *,
                    bundle: dict[str, Any], checked: Checked | None = None) -> Outcome:
    """Accept one message. Raises BadRequestError (400: not a message), InvalidResourceError
    (422, one issue per problem), ForbiddenError (403: sender is not the caller's
    organisation), ConflictError (409: same MessageHeader.id, other content).
    `checked`: `check_message(bundle)` of this very bundle, already run by the caller."""
    if checked is None or checked.bundle is not bundle:
        checked = check_message(bundle)
    header = checked.header
    sender = refs.org_id(header.get("sender"))
    if subject.organization_id is None or sender != subject.organization_id:
        raise ForbiddenError(_sender_refused(header, subject),
                             expression="Bundle.entry[0].resource.sender")
    for entry in bundle.get("entry", []):  # a message writes every type it carries
        resource = entry.get("resource") if isinstance(entry, dict) else None
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        if isinstance(rtype, str) and rtype != "MessageHeader":
            scopes.require(subject, rtype, "write")
    header_id = str(header.get("id") or "")
    if not header_id:
        raise InvalidResourceError("The MessageHeader needs an id: the hub recognises a "
                                   "message sent twice by it.",
                                   expression="Bundle.entry[0].resource.id")
    digest = checked.digest
    event = str(header["eventCoding"]["code"])
    if header.get("response"):
        earlier = _earlier(session, sender, header_id, digest)
        return earlier or _acknowledgement(session, subject, settings, bundle, header, event)
    # Claim (sender, MessageHeader.id) first: the claim finds a message sent before (or a
    # twin, which PostgreSQL makes it wait for) without a lookup of its own; the row's
    # patient and content types are written with the response, once placed.
    message = MessageRow(
        sender_org=sender, header_id=header_id, event=event, content_hash=digest,
        bundle_id=str(uuid.uuid4()), received_at=utcnow(), response=b"")
    conn = session.connection()
    claimed = _CLAIM[conn.dialect.name].rows(conn, {
        "sender_org": sender, "header_id": header_id, "event": event, "content_hash": digest,
        "patient_ref": None, "content_types": None, "bundle_id": message.bundle_id,
        "received_at": message.received_at, "response": b""})
    message_id = claimed[0][0] if claimed else None
    if message_id is None:
        # Sent before, or a twin holds the key (PostgreSQL waited for it to commit): answer
        # as the first did (or 409 when the same id says something else).
        again = _earlier(session, sender, header_id, digest)
        if again is None:  # pragma: no cover - the key exists, so the row does
            raise ConflictError(f"MessageHeader.id {header_id} is being accepted; send again.")
        return again
    message.id = message_id
    # The message writes as its sender: ownership and the consent gate apply as to REST.
    writer = subject
    entries = [e for e in bundle.get("entry", []) if isinstance(e, dict)]
    # Identities are matched across the hub (one Patient per fødselsnummer); who may write a
    # match is decided when it is written.
    placements = identity.place_entries(session, Subject.hub_itself(), entries,
                                        settings.fhir_base, sender)
    patient_id = next((p.resource_id for p in placements if p.resource_type == "Patient"), None)
    message.patient_ref = f"Patient/{patient_id}" if patient_id else None
    message.content_types = ",".join(
        sorted({p.resource_type for p in placements} | {"MessageHeader"}))
    return _accept(session, settings, bundle, header, event, writer, entries, placements,
                   message)


M = cast(Table, MessageRow.__table__)
_EARLIER = select(M.c.content_hash, M.c.response).where(
    M.c.sender_org == bindparam("sender"), M.c.header_id == bindparam("header_id"))
# Claims (sender, MessageHeader.id); no row back when a twin has it. No savepoint needed:
# the conflict is not an error, so the transaction goes on.
_CLAIM = {"sqlite": Direct(sqlite_insert(M).on_conflict_do_nothing().returning(M.c.id)),
          "postgresql": Direct(postgresql_insert(M).on_conflict_do_nothing().returning(M.c.id))}
_RESPONSE = Direct(update(M).where(M.c.id == bindparam("message_id")).values(
    response=bindparam("answer"), patient_ref=bindparam("patient"),
    content_types=bindparam("types")))
F = cast(Table, MessageFullUrlRow.__table__)
_FULL_URL_TARGETS = select(F.c.full_url, F.c.target).where(
    F.c.full_url.in_(bindparam("urls", expanding=True)))
_INSERT_FULL_URLS = {"sqlite": Direct(sqlite_insert(F).on_conflict_do_nothing()),
                     "postgresql": Direct(postgresql_insert(F).on_conflict_do_nothing())}


def _earlier(session: Session, sender: str, header_id: str, digest: str) -> Outcome | None:
    row = session.connection().execute(
        _EARLIER, {"sender": sender, "header_id": header_id}).first()
    if row is None:
        return None
    if row.content_hash != digest:
        raise ConflictError(
            f"A different message with MessageHeader.id {header_id} was already accepted from "
            f"Organization/{sender}; give a new message a new id.",
            expression="Bundle.entry[0].resource.id")
    return Outcome(loads(row.response), replayed=True)


def _accept(session: Session, settings: Settings, bundle: dict[str, Any],
            header: dict[str, Any], event: str, writer: Subject, entries: list[dict[str, Any]],
            placements: list[identity.Placement], message: MessageRow) -> Outcome:
    own = {str(entries[p.index].get("fullUrl")): f"{p.resource_type}/{p.resource_id}"
           for p in placements if entries[p.index].get("fullUrl")}
    refs = {**_earlier_full_urls(session, bundle, own), **own}
    issues: list[Issue] = []
    written: list[StoredResource | None] = []  # per placement; None: new, stored below
    unchanged: set[str] = set()  # sent again as stored: no new version written
    new: list[service.New] = []
    for p in placements:
        where = f"Bundle.entry[{p.index}].resource"
        body = identity.resolve_references(session, Subject.hub_itself(),
                                           entries[p.index]["resource"], refs, where, issues,
                                           message.sender_org)
        body["id"] = p.resource_id
        # Validated whole as a message above; references rewritten since (ids only).
        if not p.exists:  # a fresh uuid: nothing can be stored under it yet
            try:
                isolation.check_create(writer, body)
            except (ForbiddenError, InvalidResourceError) as err:
                raise InvalidResourceError(
                    f"Bundle.entry[{p.index}]: {err.diagnostics}",
                    expression=f"Bundle.entry[{p.index}]") from None
            new.append(service.New(writer, body, p.resource_id))
            written.append(None)
            continue
        if p.resource_type == "Patient" and service.owner_of(
                session, resource_type="Patient", resource_id=p.resource_id) != message.sender_org:
            # The person is one Patient: another organisation's message links to it and
            # leaves it as its owner wrote it (CONTRACT section 3).
            linked = service.read(session, Subject.hub_itself(), resource_type="Patient",
                                  resource_id=p.resource_id)
            written.append(linked)
            unchanged.add(linked.relative_url)
            continue
        try:
            result = service.update(session, writer, resource_type=p.resource_type,
                                    resource_id=p.resource_id, resource=body,
                                    already_valid=True, keep_unchanged=True)
        except (ForbiddenError, ConflictError):
            raise InvalidResourceError(
                f"Bundle.entry[{p.index}] would change the {p.resource_type} "
                f"{_matched_by(p)}, which another organisation owns: only its owner changes "
                "it (and the organisations a Task names, its status only).",
                expression=f"Bundle.entry[{p.index}]") from None
        written.append(result.stored)
        if result.unchanged:
            unchanged.add(result.stored.relative_url)
    if issues:
        raise InvalidResourceError(issues[0].diagnostics, issues=issues)
    # The new resources and the message itself, one insert per table.
    created = iter(service.create_many(
        session, [*new, service.New(Subject.hub_itself(), bundle, message.bundle_id)]))
    stored: dict[str, dict[str, Any]] = {}
    for done in written:
        version = done if done is not None else next(created)
        assert version.body is not None
        stored[version.relative_url] = version.body
    kept = next(created)
    _remember_full_urls(session, own)
    focus = [refs.get(str(f.get("reference")), str(f.get("reference")))
             for f in header.get("focus", []) if isinstance(f, dict)]
    patient_id = message.patient_ref.split("/", 1)[1] if message.patient_ref else None
    # Handlers get the row as an ORM object, as if loaded: what they change is flushed.
    make_transient_to_detached(message)
    session.add(message)
    accepted = Accepted(settings, event, message.sender_org, message, patient_id, stored, focus,
                        entries={f"{p.resource_type}/{p.resource_id}": p.index
                                 for p in placements}, unchanged=frozenset(unchanged))
    run_handlers(session, accepted)
    destinations = _route(session, settings, accepted, header)
    response = _response(settings, header, event, destinations, accepted.notes,
                         accepted.warnings)
    _RESPONSE.run(session.connection(), {
        "message_id": message.id, "answer": dumps_bytes(response),
        "patient": message.patient_ref, "types": message.content_types})
    return Outcome(response, False, (*stored, kept.relative_url),
                   (message.patient_ref,) if message.patient_ref else ())


def _matched_by(p: identity.Placement) -> str:
    return "named by its fullUrl" if p.by_full_url else "matched by its identifier"


def _urns(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref.startswith("urn:uuid:"):
            yield ref
        for value in node.values():
            yield from _urns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _urns(value)


def _earlier_full_urls(session: Session, bundle: dict[str, Any],
                       own: dict[str, str]) -> dict[str, str]:
    """Stored targets of urn:uuid references to entries of earlier messages."""
    wanted = {u for u in _urns(bundle.get("entry", [])) if u not in own}
    if not wanted:
        return {}
    rows = session.connection().execute(_FULL_URL_TARGETS, {"urls": sorted(wanted)})
    return {full_url: target for full_url, target in rows}


def _remember_full_urls(session: Session, own: dict[str, str]) -> None:
    """Keep where this message's urn:uuid fullUrls went; one already kept stays as it was."""
    rows = [{"full_url": u, "target": t} for u, t in own.items() if u.startswith("urn:uuid:")]
    if rows:
        conn = session.connection()
        _INSERT_FULL_URLS[conn.dialect.name].run_many(conn, rows)


def _route(session: Session, settings: Settings, accepted: Accepted, header: dict[str, Any]
           ) -> list[tuple[str, bool, str]]:
    """One delivery per destination; (receiver, queued?, why) for the response."""
    out = []
    receivers = _receivers(header.get("destination", []))
    for receiver in receivers:
        if not service.exists(session, Subject.hub_itself(), resource_type="Organization",
                              resource_id=receiver):
            raise InvalidResourceError(
                f"The destination Organization/{receiver} is not registered with the hub.",
                expression="Bundle.entry[0].resource.destination")
        verdict = queue_delivery(session, settings, message_id=accepted.message.id,
                                 question=accepted.question(receiver),
                                 patient_ref=accepted.message.patient_ref,
                                 resources=sorted(accepted.stored))
        queued = verdict.decision != "deny"
        out.append((receiver, queued, verdict.reason))
    return out


def _receivers(destinations: Iterable[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for d in destinations:
        org = refs.org_id(d.get("receiver")) if isinstance(d, dict) else None
        if org is None:
            raise InvalidResourceError(
                "Every MessageHeader.destination needs receiver = Organization/<id>.",
                expression="Bundle.entry[0].resource.destination")
        seen[org] = None
    return list(seen)


def _response(settings: Settings, header: dict[str, Any], event: str,
              destinations: list[tuple[str, bool, str]], notes: list[str],
              warnings: Iterable[str] = ()) -> dict[str, Any]:
    outcome_id = str(uuid.uuid4())
    issues = [{"severity": "information", "code": "informational",
               "diagnostics": (f"Queued for Organization/{org}. {why}" if queued else
                               f"Withheld from Organization/{org}: {why}"),
               "expression": [f"MessageHeader.destination[{i}]"]}
              for i, (org, queued, why) in enumerate(destinations)]
    issues += [{"severity": "information", "code": "informational", "diagnostics": n}
               for n in notes]
    issues += [{"severity": "warning", "code": "business-rule", "diagnostics": w}
               for w in warnings]
    source = header.get("source")  # validated; still, never a 500 while answering
    endpoint = source.get("endpoint") if isinstance(source, dict) else None
    response_header = {
        "resourceType": "MessageHeader", "id": str(uuid.uuid4()),
        "eventCoding": {"system": EVENT_SYSTEM, "code": event},
        "destination": [{"endpoint": endpoint if isinstance(endpoint, str) else "unknown",
                         "receiver": header.get("sender")}],
        "source": {"name": "CareHub", "endpoint": settings.fhir_base},
        "response": {"identifier": header["id"], "code": "ok",
                     "details": {"reference": f"urn:uuid:{outcome_id}"}},
    }
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "message",
            "timestamp": format_instant(utcnow()),
            "entry": [{"fullUrl": f"urn:uuid:{response_header['id']}",
                       "resource": response_header},
                      {"fullUrl": f"urn:uuid:{outcome_id}",
                       "resource": {"resourceType": "OperationOutcome", "id": outcome_id,
                                    "issue": issues}}]}


def _acknowledgement(session: Session, subject: Subject, settings: Settings,
                     bundle: dict[str, Any], header: dict[str, Any], event: str) -> Outcome:
    """A receiver's response message: recorded against its delivery (CONTRACT section 4)."""
    from hub.delivery.service import record_ack

    response = header["response"]
    record_ack(session, subject, response_identifier=str(response.get("identifier", "")),
               code=str(response.get("code", "")))
    return Outcome(_response(settings, header, event, [], [
        f"Acknowledgement {response.get('code')} recorded for message "
        f"{response.get('identifier')}."]), replayed=False)

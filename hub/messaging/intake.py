"""$process-message (CONTRACT section 4): check, store, route, answer, in one transaction.

Order of work, all in the caller's transaction: parse and validate (nothing stored on any
problem); the sender must be the caller's organisation; claim (sender, MessageHeader.id) in
`messages` (a twin waits on the unique key and then returns the first answer); place every
entry (new resource or new version, by identity); rewrite references to stored ids; store;
run the event's handler; decide and queue one delivery per destination; store the response.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.auth import scopes
from hub.auth.subject import Subject
from hub.config import Settings
from hub.consent.gate import decision_item, log_decision
from hub.db.types import utcnow
from hub.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InvalidResourceError,
    Issue,
)
from hub.fhir.jsonio import dumps_bytes, loads
from hub.fhir.validation import validate_message
from hub.messaging import identity
from hub.messaging.handlers import Accepted, run_handlers
from hub.messaging.models import DeliveryRow, MessageFullUrlRow, MessageRow
from hub.messaging.routing import decide_delivery
from hub.store import service
from hub.store.dates import format_instant

EVENT_SYSTEM = "http://carehub.example/fhir/CodeSystem/message-event"


@dataclass(frozen=True)
class Outcome:
    """The answer to one $process-message call."""

    response: dict[str, Any]
    replayed: bool  # True: a duplicate; this is the first call's stored answer
    resources: tuple[str, ...] = ()  # what it stored ("Type/id"), for the audit trail
    patients: tuple[str, ...] = ()


def _content_hash(bundle: dict[str, Any]) -> str:
    """A hash of what the message says (its meta is transport detail and left out)."""
    body = {k: v for k, v in bundle.items() if k != "meta"}
    canonical = dumps_bytes(_sorted(body))
    return hashlib.sha256(canonical).hexdigest()


def _sorted(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _sorted(node[k]) for k in sorted(node)}
    if isinstance(node, list):
        return [_sorted(v) for v in node]
    return node


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


def _org_id(ref: Any) -> str | None:
    target = identity.reference_target(ref)
    return target[1] if target and target[0] == "Organization" else None


def process_message(session: Session, subject: Subject, settings: Settings, *,
                    bundle: dict[str, Any]) -> Outcome:
    """Accept one message. Raises BadRequestError (400: not a message), InvalidResourceError
    (422, one issue per problem), ForbiddenError (403: sender is not the caller's
    organisation), ConflictError (409: same MessageHeader.id, other content)."""
    header = _header(bundle)
    issues = validate_message(bundle)
    if issues:
        raise InvalidResourceError(
            f"The message is not valid: {issues[0].diagnostics}"
            + (f" (and {len(issues) - 1} more problems)" if len(issues) > 1 else ""),
            issues=issues)
    sender = _org_id(header.get("sender"))
    if subject.organization_id is None or sender != subject.organization_id:
        raise ForbiddenError(
            f"MessageHeader.sender is {header.get('sender', {}).get('reference')}, but you act "
            f"for Organization/{subject.organization_id}; send only as yourself.",
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
    digest = _content_hash(bundle)
    earlier = _earlier(session, sender, header_id, digest)
    if earlier is not None:
        return earlier
    event = str(header["eventCoding"]["code"])
    if header.get("response"):
        return _acknowledgement(session, subject, settings, bundle, header, event)
    try:
        with session.begin_nested():
            message_id = session.execute(insert(MessageRow).values(
                sender_org=sender, header_id=header_id, event=event, content_hash=digest,
                patient_ref=None, content_types=None, bundle_id="", received_at=utcnow(),
                response=b"").returning(MessageRow.id)).scalar_one()
    except IntegrityError:
        # A twin committed first (its insert held the key until then): answer as it did.
        again = _earlier(session, sender, header_id, digest)
        if again is None:  # pragma: no cover - the key exists, so the row does
            raise
        return again
    return _accept(session, subject, settings, bundle, header, event, sender, message_id)


def _earlier(session: Session, sender: str, header_id: str, digest: str) -> Outcome | None:
    row = session.execute(select(MessageRow.content_hash, MessageRow.response).where(
        MessageRow.sender_org == sender, MessageRow.header_id == header_id)).first()
    if row is None:
        return None
    if row.content_hash != digest:
        raise ConflictError(
            f"A different message with MessageHeader.id {header_id} was already accepted from "
            f"Organization/{sender}; give a new message a new id.",
            expression="Bundle.entry[0].resource.id")
    return Outcome(loads(row.response), replayed=True)


def _accept(session: Session, subject: Subject, settings: Settings, bundle: dict[str, Any],
            header: dict[str, Any], event: str, sender: str, message_id: int) -> Outcome:
    # The hub stores as itself, but what it creates belongs to the sender's organisation.
    writer = Subject("system", f"messaging:{sender}", sender, frozenset({"system/*.*"}))
    entries = [e for e in bundle.get("entry", []) if isinstance(e, dict)]
    placements = identity.place_entries(session, writer, entries, settings.fhir_base)
    refs = {str(entries[p.index].get("fullUrl")): f"{p.resource_type}/{p.resource_id}"
            for p in placements if entries[p.index].get("fullUrl")}
    refs = {**_earlier_full_urls(session, bundle, refs), **refs}
    issues: list[Issue] = []
    stored: dict[str, dict[str, Any]] = {}
    for p in placements:
        where = f"Bundle.entry[{p.index}].resource"
        body = identity.resolve_references(session, writer, entries[p.index]["resource"], refs,
                                           where, issues)
        body["id"] = p.resource_id
        # Validated whole as a message above; references rewritten since (ids only).
        result = service.update(session, writer, resource_type=p.resource_type,
                                resource_id=p.resource_id, resource=body, already_valid=True)
        assert result.stored.body is not None
        stored[result.stored.relative_url] = result.stored.body
    if issues:
        raise InvalidResourceError(issues[0].diagnostics, issues=issues)
    _remember_full_urls(session, refs)
    patient_id = next((ref.split("/", 1)[1] for ref in stored if ref.startswith("Patient/")),
                      None)
    focus = [refs.get(str(f.get("reference")), str(f.get("reference")))
             for f in header.get("focus", []) if isinstance(f, dict)]
    content_types = frozenset(ref.split("/", 1)[0] for ref in stored)
    kept = service.create(session, Subject.hub_itself(), resource=bundle,
                          already_valid=True).stored
    message = session.get_one(MessageRow, message_id)
    message.patient_ref = f"Patient/{patient_id}" if patient_id else None
    message.content_types = ",".join(sorted(content_types | {"MessageHeader"}))
    message.bundle_id = kept.id
    accepted = Accepted(settings, event, sender, message, patient_id, stored, focus,
                        entries={f"{p.resource_type}/{p.resource_id}": p.index
                                 for p in placements})
    run_handlers(session, accepted)
    destinations = _route(session, settings, accepted, header, content_types, stored)
    response = _response(settings, header, event, destinations, accepted.notes,
                         accepted.warnings)
    session.execute(update(MessageRow).where(MessageRow.id == message_id).values(
        response=dumps_bytes(response)))
    return Outcome(response, False, (*stored, kept.relative_url),
                   (message.patient_ref,) if message.patient_ref else ())


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
    rows = session.execute(select(MessageFullUrlRow.full_url, MessageFullUrlRow.target).where(
        MessageFullUrlRow.full_url.in_(sorted(wanted))))
    return {full_url: target for full_url, target in rows}


def _remember_full_urls(session: Session, refs: dict[str, str]) -> None:
    new = {u: t for u, t in refs.items() if u.startswith("urn:uuid:")}
    if not new:
        return
    known = set(session.execute(select(MessageFullUrlRow.full_url).where(
        MessageFullUrlRow.full_url.in_(sorted(new)))).scalars())
    rows = [{"full_url": u, "target": t} for u, t in new.items() if u not in known]
    if rows:
        session.execute(insert(MessageFullUrlRow), rows)


def _route(session: Session, settings: Settings, accepted: Accepted, header: dict[str, Any],
           content_types: frozenset[str], stored: dict[str, dict[str, Any]]
           ) -> list[tuple[str, bool, str]]:
    """One delivery per destination; (receiver, queued?, why) for the response."""
    consent = next((body for ref, body in stored.items()
                    if ref in accepted.focus and ref.startswith("Consent/")), None)
    now = utcnow()
    out = []
    receivers = _receivers(header.get("destination", []))
    for receiver in receivers:
        if not service.exists(session, Subject.hub_itself(), resource_type="Organization",
                              resource_id=receiver):
            raise InvalidResourceError(
                f"The destination Organization/{receiver} is not registered with the hub.",
                expression="Bundle.entry[0].resource.destination")
        verdict = decide_delivery(session, settings, event=accepted.event,
                                  patient_id=accepted.patient_id,
                                  content_types=content_types | {"MessageHeader"},
                                  receiver_org=receiver, consent=consent)
        queued = verdict.decision != "deny"
        session.execute(insert(DeliveryRow).values(
            message_id=accepted.message.id, receiver_org=receiver,
            patient_ref=accepted.message.patient_ref,
            status="queued" if queued else "withheld", decision=verdict.decision,
            basis=verdict.basis, reason=verdict.reason, attempts=0,
            next_attempt_at=now if queued else None, created_at=now))
        log_decision(session, decision_item(
            recipient=f"Organization/{receiver}", patient=accepted.message.patient_ref,
            resources=sorted(stored), verdict=verdict))
        out.append((receiver, queued, verdict.reason))
    return out


def _receivers(destinations: Iterable[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for d in destinations:
        org = _org_id(d.get("receiver")) if isinstance(d, dict) else None
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
    response_header = {
        "resourceType": "MessageHeader", "id": str(uuid.uuid4()),
        "eventCoding": {"system": EVENT_SYSTEM, "code": event},
        "destination": [{"endpoint": header.get("source", {}).get("endpoint", "unknown"),
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

"""What people and clients do with deliveries (CONTRACT 4 and 6): ask how a message fared
(`delivery_status`), acknowledge one (`record_ack`), pull their messages (`pull`), replay dead
letters (`replay`), and list them (`list_deliveries`, for the CLI and the UI).

Every function takes the session and the acting Subject first and flushes, never commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hub.audit.events import agent_name
from hub.audit.recorder import Auditor
from hub.auth import scopes
from hub.auth.subject import Subject
from hub.config import Settings
from hub.consent.policy import Verdict
from hub.db.types import utcnow
from hub.delivery import content
from hub.delivery.scheduled import expect_ack
from hub.delivery.steps import record_step
from hub.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InvalidResourceError,
    NotFoundError,
)
from hub.messaging.models import DeliveryRow, MessageRow
from hub.store.dates import format_instant

D, M = DeliveryRow, MessageRow
ACK_CODES = ("ok", "transient-error", "fatal-error")
STATUSES = ("queued", "delivered", "acknowledged", "withheld", "dead-letter")
COORDINATOR = "coordinator"
_UNDELIVERED = ("queued", "dead-letter")


# --- $delivery-status ------------------------------------------------------------------------


def destination(delivery: DeliveryRow) -> dict[str, Any]:
    """One `destination` part of $delivery-status (CONTRACT 6)."""
    parts: list[dict[str, Any]] = [
        {"name": "receiver",
         "valueReference": {"reference": f"Organization/{delivery.receiver_org}"}},
        {"name": "status", "valueCode": delivery.status},
        {"name": "attempts", "valueInteger": delivery.attempts},
    ]
    if delivery.last_error:
        parts.append({"name": "last-error", "valueString": delivery.last_error})
    return {"name": "destination", "part": parts}


def delivery_status(session: Session, subject: Subject, header_id: str) -> dict[str, Any]:
    """Parameters with one `destination` per receiver of the message the subject's
    organisation sent with this MessageHeader.id. Raises NotFoundError for anyone else's
    message (whether or not it exists)."""
    org = subject.organization_id
    message = None if org is None else session.scalars(
        select(M).where(M.sender_org == org, M.header_id == header_id)).one_or_none()
    if message is None:
        raise NotFoundError(f"No message with MessageHeader.id {header_id} from your "
                            "organisation is known here.")
    deliveries = session.scalars(select(D).where(D.message_id == message.id)
                                 .order_by(D.id)).all()
    return {"resourceType": "Parameters", "parameter": [destination(d) for d in deliveries]}


# --- acknowledgements ------------------------------------------------------------------------


def record_ack(session: Session, subject: Subject, *, response_identifier: str, code: str,
               sender_org: str | None = None, now: datetime | None = None
               ) -> list[DeliveryRow]:
    """A receiver acknowledges the message whose MessageHeader.id is `response_identifier`
    with `code` (ok | transient-error | fatal-error): the delivery of it to the subject's
    organisation becomes `acknowledged` (ack_code, acknowledged_at; delivered_at too if the
    pull or push had not been recorded yet). A fatal-error stays `delivered`, with its
    ack_code. Header ids are unique per sender only: `sender_org` narrows; without it every
    such message sent to the organisation is acknowledged. Raises InvalidResourceError (bad
    code), ForbiddenError (no organisation), NotFoundError (no such delivery)."""
    if code not in ACK_CODES:
        raise InvalidResourceError(f"An acknowledgement's response.code is one of "
                                   f"{', '.join(ACK_CODES)}, not '{code}'.",
                                   expression="MessageHeader.response.code")
    org = subject.organization_id
    if org is None:
        raise ForbiddenError("Only an organisation that received a message acknowledges it.")
    # The message first, by its header id (an index), then its delivery to this receiver:
    # a join lets SQLite start from every delivery of the receiver instead.
    acked = select(M.id).where(M.header_id == response_identifier)
    if sender_org is not None:
        acked = acked.where(M.sender_org == sender_org)
    query = (select(D).where(D.message_id.in_(acked), D.receiver_org == org,
                             D.status != "withheld").order_by(D.id).with_for_update(of=D))
    rows = list(session.scalars(query))
    if not rows:
        raise NotFoundError(f"No message {response_identifier} went to Organization/{org}; "
                            "there is nothing to acknowledge.",
                            expression="MessageHeader.response.identifier")
    at = now or utcnow()
    for row in rows:
        row.ack_code, row.acknowledged_at = code, at
        row.delivered_at = row.delivered_at or at
        row.status = "delivered" if code == "fatal-error" else "acknowledged"
        row.next_attempt_at = None
    session.flush()
    return rows


# --- pull ------------------------------------------------------------------------------------


def pull(session: Session, subject: Subject, settings: Settings, *, since: datetime | None,
         count: int, receiver_org: str | None = None
         ) -> list[tuple[DeliveryRow, dict[str, Any]]]:
    """The receiver's published messages with published_at > `since`, oldest first, at most
    `count`, each the stored Bundle with meta.lastUpdated = its published_at (pass the last
    one back as `_lastUpdated=gt...` for the next page; fewer than `count` means none are
    left for now).

    Each delivery is decided again (CONTRACT 5): one not yet made that may no longer go
    becomes `withheld`, an earlier one is no longer handed out; redactions apply. What is
    handed out and still `queued` (or dead-lettered by push) becomes `delivered`.
    Only a client of the receiver itself pulls (the hub may name `receiver_org`)."""
    org = _puller(subject, receiver_org)
    out: list[tuple[DeliveryRow, dict[str, Any]]] = []
    cursor = since
    at = utcnow()
    while len(out) < count:
        want = count - len(out)
        batch = _published(session, org, after=cursor, limit=want)
        for row, message in batch:
            assert row.published_at is not None
            cursor = row.published_at
            bundle = content.message_bundle(session, message)
            verdict = content.verdict_now(session, settings, message, row, bundle)
            content.log_disclosure(session, row, message, verdict)
            if verdict.decision == "deny":
                session.execute(update(D).where(D.id == row.id, D.status.in_(_UNDELIVERED))
                                .values(status="withheld", decision="deny", basis=verdict.basis,
                                        reason=f"Withheld before the pull: {verdict.reason}",
                                        next_attempt_at=None))
                continue
            handed = session.execute(update(D).where(D.id == row.id,
                                                     D.status.in_(_UNDELIVERED))
                                     .values(status="delivered", delivered_at=at,
                                             next_attempt_at=None))
            if handed.rowcount:  # type: ignore[attr-defined]
                expect_ack(session, settings, row.id, at)
            out.append((row, _as_handed_out(row, bundle, verdict)))
        if len(batch) < want:
            break
    return out


def _as_handed_out(row: DeliveryRow, bundle: dict[str, Any],
                   verdict: Verdict) -> dict[str, Any]:
    """The message Bundle as its receiver gets it (redacted, minimum necessary) with
    meta.lastUpdated = when it was published to it."""
    assert row.published_at is not None
    body = content.redacted(bundle, verdict)
    return {**body, "meta": {**(body.get("meta") or {}),
                             "lastUpdated": format_instant(row.published_at)}}


def delivered_bundle(session: Session, subject: Subject, settings: Settings, *,
                     bundle_id: str) -> tuple[DeliveryRow, dict[str, Any]]:
    """Bundle/`bundle_id` as the pull hands it to `subject`'s organisation: a message
    published to it and not withheld, decided again now (the decision logged for the audit
    trail as the pull logs it), redacted as the pull redacts it. A read changes nothing:
    it marks nothing delivered or withheld. NotFoundError for anything else, the same
    whether the message does not exist, is another's or is now denied (no trace of what is
    hidden); ForbiddenError without Bundle read scope."""
    scopes.require(subject, "Bundle", "read")
    gone = NotFoundError(f"Bundle/{bundle_id[:64]} is not known here.")
    if subject.organization_id is None:
        raise gone
    found = session.execute(
        select(D, M).join(M, M.id == D.message_id)
        .where(M.bundle_id == bundle_id, D.receiver_org == subject.organization_id,
               D.published_at.is_not(None), D.status != "withheld")
        .order_by(D.published_at).limit(1)).first()
    if found is None:
        raise gone
    row, message = found
    bundle = content.message_bundle(session, message)
    verdict = content.verdict_now(session, settings, message, row, bundle)
    content.log_disclosure(session, row, message, verdict)
    if verdict.decision == "deny":
        raise gone
    return row, _as_handed_out(row, bundle, verdict)


def pull_total(session: Session, subject: Subject, settings: Settings, *,
               since: datetime | None, receiver_org: str | None = None) -> int:
    """How many messages `pull` from `since` on would hand out, were it asked for them all
    now: each delivery decided again as `pull` decides it, those it would withhold not
    counted (no trace of what is hidden). Changes nothing: a count marks no delivery
    delivered or withheld. Raises as `pull`."""
    org = _puller(subject, receiver_org)
    total, cursor = 0, since
    while True:
        batch = _published(session, org, after=cursor, limit=_TOTAL_BATCH)
        for row, message in batch:
            cursor = row.published_at
            bundle = content.message_bundle(session, message)
            verdict = content.verdict_now(session, settings, message, row, bundle)
            total += verdict.decision != "deny"
        if len(batch) < _TOTAL_BATCH:
            return total


_TOTAL_BATCH = 500


def _puller(subject: Subject, receiver_org: str | None) -> str:
    """The organisation whose messages `subject` pulls; ForbiddenError for anyone else's."""
    org = receiver_org or subject.organization_id
    if org is None or (subject.kind != "system" and org != subject.organization_id):
        raise ForbiddenError("A receiver pulls only its own messages "
                             f"(message.receiver=Organization/{subject.organization_id}).")
    scopes.require(subject, "Bundle", "read")
    return org


def _published(session: Session, org: str, *, after: datetime | None,
               limit: int) -> Sequence[Any]:
    """(delivery, message) rows published to `org` after `after`, not withheld, oldest
    first, at most `limit`."""
    query = (select(D, M).join(M, M.id == D.message_id)
             .where(D.receiver_org == org, D.published_at.is_not(None),
                    D.status != "withheld")
             .order_by(D.published_at).limit(limit))
    if after is not None:
        query = query.where(D.published_at > after)
    return session.execute(query).all()


# --- dead letters ----------------------------------------------------------------------------


def _may_replay(subject: Subject, message: MessageRow, delivery: DeliveryRow) -> bool:
    if subject.kind == "system":
        return True
    return (subject.kind == "user" and subject.role == COORDINATOR
            and subject.organization_id in (message.sender_org, delivery.receiver_org))


def replay(session: Session, subject: Subject, *, delivery_ids: Iterable[int] = (),
           message_header_id: str | None = None, sender_org: str | None = None,
           now: datetime | None = None, auditor: Auditor | None = None) -> list[DeliveryRow]:
    """Queue dead letters again: by delivery id, or every dead-lettered delivery of the
    message with this MessageHeader.id (`sender_org` narrows, as header ids are unique per
    sender only). Attempts start again from 0, and the delivery gets a fresh max-age window
    from now: its `created_at` becomes the replay time (the acceptance time stays in
    messages.received_at); `last_error` stays until the next attempt's outcome replaces it.
    With `auditor`, each replayed delivery leaves a record of what it was before (status,
    attempts, last error, since when), so the failure stays in the trail (hub.delivery.steps).
    Consent is decided again before the next attempt, as always.

    Allowed to the hub itself (the CLI) and to coordinators of the sender or receiver
    organisation. Raises ForbiddenError (anyone else), NotFoundError (unknown, or not the
    subject's), ConflictError (named deliveries that are not dead letters, or a message
    without any), BadRequestError (nothing named)."""
    if subject.kind != "system" and not (subject.kind == "user" and subject.role == COORDINATOR):
        raise ForbiddenError("Dead letters are replayed by coordinators of the sender or "
                             "receiver (and by the hub's CLI).")
    ids = sorted(set(delivery_ids))
    beyond = [i for i in ids if not -2**63 <= i < 2**63]  # no column holds one: none is known
    if beyond:
        raise NotFoundError(f"No delivery {', '.join(map(str, beyond))} is known to you.")
    if not ids and not message_header_id:
        raise BadRequestError("Name the deliveries to replay, or the message (its "
                              "MessageHeader.id).")
    query = select(D, M).join(M, M.id == D.message_id).order_by(D.id).with_for_update(of=D)
    if ids:
        query = query.where(D.id.in_(ids))
    if message_header_id:  # through the header index first, as in record_ack
        named = select(M.id).where(M.header_id == message_header_id)
        if sender_org:
            named = named.where(M.sender_org == sender_org)
        query = query.where(D.message_id.in_(named))
    elif sender_org:
        query = query.where(M.sender_org == sender_org)
    visible = [(d, m) for d, m in session.execute(query).all() if _may_replay(subject, m, d)]
    if ids:
        missing = sorted(set(ids) - {d.id for d, _ in visible})
        if missing:
            raise NotFoundError(f"No delivery {', '.join(map(str, missing))} is known to you.")
        busy = [d for d, _ in visible if d.status != "dead-letter"]
        if busy:
            raise ConflictError("Only dead letters are replayed; "
                                + ", ".join(f"delivery {d.id} is {d.status}" for d in busy)
                                + ".")
    elif not visible:
        raise NotFoundError(f"No message with MessageHeader.id {message_header_id} is known "
                            "to you.")
    dead = [d for d, _ in visible if d.status == "dead-letter"]
    if not dead:
        raise ConflictError(f"The message {message_header_id} has no dead letters to replay.")
    at = now or utcnow()
    messages = {d.id: m for d, m in visible}
    for d in dead:
        record_step(session, auditor, d, messages[d.id],
                    f"Replayed by {agent_name(subject)}: queued again after {d.attempts} "
                    f"attempt(s) since {format_instant(d.created_at)}, the last error "
                    f"being: {d.last_error or 'none'}", subject=subject)
        d.status, d.attempts = "queued", 0
        d.next_attempt_at, d.created_at = at, at
    session.flush()
    return dead


@dataclass(frozen=True)
class Listed:
    """A delivery and its message, for lists of deliveries."""

    delivery: DeliveryRow
    message: MessageRow


def list_deliveries(session: Session, subject: Subject, *, statuses: Sequence[str] = (),
                    organization: str | None = None, limit: int = 200) -> list[Listed]:
    """Deliveries, newest first: all of them for the hub; for a person, those of messages
    their organisation sent or received. `statuses` and `organization` (sender or receiver)
    narrow."""
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise BadRequestError(f"A delivery status is one of {', '.join(STATUSES)}, not "
                              f"{', '.join(bad)}.")
    query = select(D, M).join(M, M.id == D.message_id).order_by(D.id.desc()).limit(limit)
    if statuses:
        query = query.where(D.status.in_(list(statuses)))
    orgs = [o for o in (organization,
                        None if subject.kind == "system" else subject.organization_id) if o]
    if subject.kind != "system" and not orgs:
        raise ForbiddenError("Only people of an organisation see its deliveries.")
    for org in orgs:
        query = query.where((M.sender_org == org) | (D.receiver_org == org))
    return [Listed(d, m) for d, m in session.execute(query).all()]

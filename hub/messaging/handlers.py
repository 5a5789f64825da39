"""One handler per event code: what an accepted message does beyond being stored and routed.

The generic path (hub/messaging/intake.py) validates, stores every resource, and routes one
delivery per destination. Handlers add the event's own effects in the same transaction, in
the order they registered: the care-coordination rules of hub/workflows/ and the timed checks
each flow starts beside them. A handler that finds a rule broken raises InvalidResourceError
(422) and the whole message, with everything stored for it, is rolled back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from hub.config import Settings
from hub.consent.gate import REPLY, MessageQuestion, decision_item, log_decision
from hub.consent.policy import PLAN_CONSENT_MISSING
from hub.db.types import utcnow
from hub.errors import InvalidResourceError
from hub.fhir.vocab import EVENTS, is_individual_plan
from hub.messaging.models import DeliveryRow, MessageRow
from hub.messaging.outbound import content_owner
from hub.messaging.routing import decide_delivery


@dataclass
class Accepted:
    """What the generic path hands a handler: the stored message and its resources."""

    settings: Settings
    event: str
    sender_org: str
    message: MessageRow
    patient_id: str | None
    stored: dict[str, dict[str, Any]]  # "Type/id" -> stored body, for every entry
    focus: list[str]  # "Type/id" of the focus resources
    notes: list[str] = field(default_factory=list)
    # What the sender should act on although the message was accepted (severity warning).
    warnings: list[str] = field(default_factory=list)
    entries: dict[str, int] = field(default_factory=dict)  # "Type/id" -> its Bundle.entry index
    # "Type/id" sent exactly as already stored: no new version was written, so its `stored`
    # body is the current version, which is also the version this message replaces.
    unchanged: frozenset[str] = frozenset()
    # The organisations whose message this one answers (set by the flows: the meeting's
    # organiser, a Task's requester, ...): it goes back to them under the legal basis reply.
    replying_to: set[str] = field(default_factory=set)

    def where(self, ref: str, path: str = "") -> str:
        """The expression of an element of a stored entry in the message (`Bundle.entry[2].
        resource.expressedBy`), or of the stored resource when the message did not carry it."""
        index = self.entries.get(ref)
        base = f"Bundle.entry[{index}].resource" if index is not None else ref.split("/", 1)[0]
        return f"{base}.{path}" if path else base

    def question(self, receiver: str) -> MessageQuestion:
        """The routing question of this message going to Organization/`receiver`: what
        routing asks (hub/messaging/intake.py) and what a flow asks before it tells that
        organisation something the message says."""
        return MessageQuestion(
            event=self.event, sender_org=self.sender_org, patient_id=self.patient_id,
            content_types=frozenset(r.split("/", 1)[0] for r in self.stored) | {"MessageHeader"},
            receiver_org=receiver,
            consent=next((body for ref, body in self.stored.items()
                          if ref in self.focus and ref.startswith("Consent/")), None),
            individual_plan=any(is_individual_plan(body) for body in self.stored.values()),
            replying_to=frozenset(self.replying_to))


Handler = Callable[[Session, Accepted], None]

# Every event code a sender may post; an event with no handler is stored and routed only.
HANDLERS: dict[str, list[Handler]] = {event: [] for event in EVENTS}


def handles(*events: str, first: bool = False) -> Callable[[Handler], Handler]:
    """Register a handler for events. Handlers of an event run in registration order;
    `first` puts this one before those registered so far (a rule every other handler may
    rely on having been checked, such as who may change a Task's status)."""

    def register(fn: Handler) -> Handler:
        for event in events:
            if event not in HANDLERS:
                raise ValueError(f"{event} is not an event senders may post")
            if fn in HANDLERS[event]:
                continue
            HANDLERS[event].insert(0 if first else len(HANDLERS[event]), fn)
        return fn

    return register


def run_handlers(session: Session, accepted: Accepted) -> None:
    """Everything the accepted message's event does beyond storing and routing. The flows
    register their handlers when hub.workflows is imported (hub/wiring.py does, for every
    process); without them a message would be stored without its rules, so that refuses."""
    if not HANDLERS["care-plan-shared"]:
        raise RuntimeError("The care-coordination rules are not loaded: import hub.wiring "
                           "before accepting messages.")
    handlers = HANDLERS.get(accepted.event)
    if handlers is None:  # a notice only the hub sends (hub/messaging/outbound.py)
        raise InvalidResourceError(
            f"{accepted.event} is a notice the hub itself sends; no organisation sends it.",
            expression="Bundle.entry[0].resource.eventCoding")
    for handler in handlers:
        handler(session, accepted)


@handles("consent-changed")
def consent_changed(session: Session, accepted: Accepted) -> None:
    """A consent (or its revocation) applies from now on: every delivery about this patient
    not yet made is decided again and withheld where it is no longer permitted, and what was
    withheld for lack of a consent that is now recorded is released (CONTRACT section 5)."""
    if accepted.patient_id is None:
        return
    pending = session.execute(
        select(DeliveryRow, MessageRow).join(MessageRow, MessageRow.id == DeliveryRow.message_id)
        .where(DeliveryRow.patient_ref == f"Patient/{accepted.patient_id}",
               or_(DeliveryRow.status == "queued",
                   and_(DeliveryRow.status == "withheld",
                        DeliveryRow.withheld_for.is_not(None))),
               DeliveryRow.message_id != accepted.message.id)
        .order_by(DeliveryRow.id)
    ).all()
    owners: dict[int, str | None] = {}  # per message: a notice's Bundle read once
    for delivery, message in pending:
        if message.id not in owners:
            owners[message.id] = content_owner(session, message)
        question = MessageQuestion(
            event=message.event, sender_org=owners[message.id],
            patient_id=accepted.patient_id,
            content_types=frozenset((message.content_types or "").split(",")),
            receiver_org=delivery.receiver_org,
            individual_plan=delivery.withheld_for == PLAN_CONSENT_MISSING or (
                "CarePlan" in (message.content_types or "")
                and message.event == "care-plan-shared"),
            replying_to=frozenset({delivery.receiver_org} if delivery.basis == REPLY else ()))
        verdict = decide_delivery(session, accepted.settings, question)
        receiver = f"Organization/{delivery.receiver_org}"
        if delivery.status == "queued" and verdict.decision == "deny":
            session.execute(update(DeliveryRow).where(DeliveryRow.id == delivery.id).values(
                status="withheld", decision="deny", basis=verdict.basis,
                reason=f"Withdrawn after consent change: {verdict.reason}",
                withheld_for=verdict.withheld_for, next_attempt_at=None))
            accepted.notes.append(f"withdrew the {message.event} message of "
                                  f"{message.received_at:%Y-%m-%d} to {receiver}")
        elif delivery.status == "withheld" and verdict.decision != "deny":
            session.execute(update(DeliveryRow).where(DeliveryRow.id == delivery.id).values(
                status="queued", decision=verdict.decision, basis=verdict.basis,
                reason=f"Released after consent change: {verdict.reason}",
                withheld_for=None, next_attempt_at=utcnow()))
            log_decision(session, decision_item(
                recipient=receiver, patient=delivery.patient_ref,
                resources=[f"Bundle/{message.bundle_id}"], verdict=verdict,
                event=message.event))
            accepted.notes.append(f"released the {message.event} message of "
                                  f"{message.received_at:%Y-%m-%d} to {receiver}, withheld "
                                  "until this consent")

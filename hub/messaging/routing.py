"""May a message of this event about this patient go to that organisation? (CONTRACT 5)

Asked when a message is accepted and again just before each delivery attempt, so a consent
revoked in between stops queued retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from hub.config import Settings
from hub.consent import bases
from hub.consent.gate import MessageQuestion, decision_item, log_decision
from hub.consent.policy import Verdict
from hub.db.direct import Direct
from hub.db.types import utcnow
from hub.messaging.models import DeliveryRow


def decide_delivery(session: Session, settings: Settings, question: MessageQuestion) -> Verdict:
    """The verdict for one destination (hub.consent.gate.Gate.message_verdict)."""
    return bases.gate(session, settings).message_verdict(question)


_INSERT_DELIVERY = Direct(insert(cast(Table, DeliveryRow.__table__)))


def queue_delivery(
    session: Session,
    settings: Settings,
    *,
    message_id: int,
    question: MessageQuestion,
    patient_ref: str | None,
    resources: Sequence[str],
) -> Verdict:
    """Decide one destination of an accepted message and record it: a delivery row (queued,
    or withheld with the reason) and the disclosure decision for the audit trail of the
    caller's transaction. Every message the hub takes on, posted or its own notice, is routed
    here."""
    verdict = decide_delivery(session, settings, question)
    queued = verdict.decision != "deny"
    now = utcnow()
    _INSERT_DELIVERY.run(session.connection(), {
        "message_id": message_id, "receiver_org": question.receiver_org,
        "patient_ref": patient_ref, "status": "queued" if queued else "withheld",
        "decision": verdict.decision, "basis": verdict.basis, "reason": verdict.reason,
        "withheld_for": verdict.withheld_for, "attempts": 0,
        "next_attempt_at": now if queued else None, "created_at": now})
    log_decision(session, decision_item(recipient=f"Organization/{question.receiver_org}",
                                        patient=patient_ref, resources=list(resources),
                                        verdict=verdict, event=question.event))
    return verdict

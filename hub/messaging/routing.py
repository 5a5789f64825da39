"""May a message of this event about this patient go to that organisation? (CONTRACT 5)

Asked when a message is accepted and again just before each delivery attempt, so a consent
revoked in between stops queued retries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.config import Settings
from hub.consent.gate import (
    PLAN_WITHOUT_CONSENT,
    Gate,
    decision_item,
    has_plan_consent,
    log_decision,
)
from hub.consent.policy import (
    DEFAULT_LEGAL_BASES,
    STATUTORY_NOTIFICATION,
    DisclosureRequest,
    LegalBasis,
    Verdict,
    consent_message_verdict,
    decide,
)
from hub.db.types import utcnow
from hub.messaging.models import DeliveryRow


def legal_bases(settings: Settings) -> tuple[LegalBasis, ...]:
    """The statutory bases in force: the default one, limited to the configured events, and
    the basis of the hub's own notices (HUB_FOLLOW_UP_LEGAL_BASIS) when one is configured."""
    events = frozenset(e.strip() for e in settings.legal_basis_events.split(",") if e.strip())
    bases = DEFAULT_LEGAL_BASES if events == STATUTORY_NOTIFICATION.events else (
        LegalBasis(STATUTORY_NOTIFICATION.code, events, STATUTORY_NOTIFICATION.resource_types,
                   STATUTORY_NOTIFICATION.text),)
    return (*bases, *hub_notice_bases(settings))


HUB_NOTICE_TYPES = frozenset({"MessageHeader", "Patient", "Task", "Encounter", "Consent",
                              "Communication"})
"""What the hub's own notices carry: the overdue Task, the expiring Consent (to its own
custodian), a Communication about an unacknowledged delivery (to its own sender)."""


def hub_notice_bases(settings: Settings) -> tuple[LegalBasis, ...]:
    """The legal basis of the hub's own notices (empty setting: none, consent only)."""
    code = settings.follow_up_legal_basis.strip()
    events = frozenset(e.strip() for e in settings.notice_legal_basis_events.split(",")
                       if e.strip())
    if not code or not events:
        return ()
    return (LegalBasis(code, events, HUB_NOTICE_TYPES, (
        "the duty to give cooperating health personnel the information needed for the "
        "patient's follow-up (helsepersonelloven § 45) and the centre's and municipality's "
        "duty to cooperate on it (spesialisthelsetjenesteloven § 2-1e, helse- og "
        "omsorgstjenesteloven § 3-4); administrative content only")),)


def decide_delivery(
    session: Session,
    settings: Settings,
    *,
    event: str,
    patient_id: str | None,
    content_types: frozenset[str],
    receiver_org: str,
    consent: Mapping[str, Any] | None = None,
) -> Verdict:
    """The verdict for one destination. A consent-changed message is its own basis (it
    reaches the organisations it names also when it revokes); otherwise the patient's stored
    consents and the configured legal bases decide."""
    recipient = f"Organization/{receiver_org}"
    if event == "consent-changed" and consent is not None:
        return consent_message_verdict(consent, recipient)
    consents = Gate(session, Subject.hub_itself()).consents_of(patient_id) if patient_id else []
    now = utcnow()
    verdict = decide(consents, DisclosureRequest(recipient=recipient,
                                                 resource_types=content_types, event=event,
                                                 now=now),
                     legal_bases=legal_bases(settings))
    if ("CarePlan" in content_types and verdict.decision != "deny"
            and "CarePlan" not in verdict.redact and not has_plan_consent(consents, now)):
        if event == "care-plan-shared":
            return Verdict("deny", None, PLAN_WITHOUT_CONSENT)
        return Verdict("permit-with-redaction", verdict.basis,
                       f"{verdict.reason} {PLAN_WITHOUT_CONSENT}",
                       verdict.redact | {"CarePlan"})
    return verdict


_INSERT_DELIVERY = insert(cast(Table, DeliveryRow.__table__))


def queue_delivery(
    session: Session,
    settings: Settings,
    *,
    message_id: int,
    event: str,
    patient_ref: str | None,
    content_types: frozenset[str],
    receiver_org: str,
    resources: Sequence[str],
    consent: Mapping[str, Any] | None = None,
) -> Verdict:
    """Decide one destination of an accepted message and record it: a delivery row (queued,
    or withheld with the reason) and the disclosure decision for the audit trail of the
    caller's transaction. Every message the hub takes on, posted or its own notice, is routed
    here."""
    patient_id = patient_ref.split("/", 1)[1] if patient_ref else None
    verdict = decide_delivery(session, settings, event=event, patient_id=patient_id,
                              content_types=content_types, receiver_org=receiver_org,
                              consent=consent)
    queued = verdict.decision != "deny"
    now = utcnow()
    session.connection().execute(_INSERT_DELIVERY, {
        "message_id": message_id, "receiver_org": receiver_org, "patient_ref": patient_ref,
        "status": "queued" if queued else "withheld", "decision": verdict.decision,
        "basis": verdict.basis, "reason": verdict.reason, "attempts": 0,
        "next_attempt_at": now if queued else None, "created_at": now})
    log_decision(session, {**decision_item(recipient=f"Organization/{receiver_org}",
                                           patient=patient_ref, resources=list(resources),
                                           verdict=verdict), "event": event})
    return verdict

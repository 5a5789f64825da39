"""Consent operations for callers: $disclosure-check (CONTRACT section 5)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.config import Settings
from hub.consent import bases
from hub.consent.events import EVENT_CONTENT
from hub.consent.gate import MessageQuestion
from hub.consent.policy import Verdict, explain, organization_ref
from hub.errors import BadRequestError
from hub.store import service


def disclosure_check(session: Session, subject: Subject, settings: Settings, *,
                     patient_id: str, recipient: str, event: str | None) -> dict[str, Any]:
    """Would a message of `event` (default: one carrying only the Patient) about
    Patient/patient_id, sent by the caller's organisation, reach `recipient` now? Asks the
    very decision routing asks (hub.consent.gate.Gate.message_verdict), for a message that
    answers nothing (a reply's basis depends on the message it answers) and carries what
    the event's MessageDefinition lists. A FHIR Parameters (decision, basis, reason).
    NotFoundError when the caller cannot see the patient; BadRequestError for an unknown
    event or a recipient that is not an Organization."""
    service.read(session, subject, resource_type="Patient", resource_id=patient_id)
    org = organization_ref(recipient)
    if org is None:
        raise BadRequestError(f"recipient must be Organization/<id>, not '{recipient}'.")
    if event is not None and event not in EVENT_CONTENT:
        raise BadRequestError(f"Unknown event '{event}'; known events: "
                              f"{', '.join(sorted(EVENT_CONTENT))}.")
    gate = bases.gate(session, settings)
    receiver = org.split("/", 1)[1]
    verdict: Verdict
    if event == "consent-changed":
        # The Consent it would carry: one the caller's organisation recorded (it sends it).
        mine = gate.consents_by(patient_id, subject.organization_id)
        verdicts = [gate.message_verdict(MessageQuestion(
            event=event, sender_org=subject.organization_id, patient_id=patient_id,
            content_types=EVENT_CONTENT[event], receiver_org=receiver, consent=c))
            for c in mine]
        verdict = next((v for v in verdicts if v.decision == "permit"), Verdict(
            "deny", None, f"No consent of Patient/{patient_id} recorded by your organisation "
                          f"names {org} as custodian or as one it permits."))
    else:
        verdict = gate.message_verdict(MessageQuestion(
            event=event, sender_org=subject.organization_id, patient_id=patient_id,
            content_types=EVENT_CONTENT[event] if event else frozenset({"Patient"}),
            receiver_org=receiver,
            individual_plan=event == "care-plan-shared"))
    return explain(verdict)

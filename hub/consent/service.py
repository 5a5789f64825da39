"""Consent operations for callers: $disclosure-check (CONTRACT section 5)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.consent.events import EVENT_CONTENT
from hub.consent.gate import Gate
from hub.consent.policy import (
    DisclosureRequest,
    Verdict,
    consent_message_verdict,
    decide,
    explain,
    organization_ref,
)
from hub.db.types import utcnow
from hub.errors import BadRequestError
from hub.store import service


def disclosure_check(session: Session, subject: Subject, *, patient_id: str, recipient: str,
                     event: str | None) -> dict[str, Any]:
    """Would a message of `event` about Patient/patient_id reach `recipient` now? A FHIR
    Parameters (decision, basis, reason). NotFoundError when the caller cannot see the patient;
    BadRequestError for an unknown event or a recipient that is not an Organization."""
    service.read(session, subject, resource_type="Patient", resource_id=patient_id)
    org = organization_ref(recipient)
    if org is None:
        raise BadRequestError(f"recipient must be Organization/<id>, not '{recipient}'.")
    if event is not None and event not in EVENT_CONTENT:
        raise BadRequestError(f"Unknown event '{event}'; known events: "
                              f"{', '.join(sorted(EVENT_CONTENT))}.")
    consents = Gate(session, Subject.hub_itself()).consents_of(patient_id)
    verdict: Verdict
    if event == "consent-changed":
        verdicts = [consent_message_verdict(c, org) for c in consents]
        verdict = next((v for v in verdicts if v.decision == "permit"), Verdict(
            "deny", None, f"No consent of Patient/{patient_id} names {org}."))
    else:
        types = EVENT_CONTENT[event] if event else frozenset({"Patient"})
        verdict = decide(consents, DisclosureRequest(recipient=org, resource_types=types,
                                                     event=event, now=utcnow()))
    return explain(verdict)

"""Our code systems and the facts about them that several packages need, written once.

Canonical base `http://carehub.example/fhir` (CONTRACT section 4); the CodeSystems themselves
are data in fhir_profiles/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BASE = "http://carehub.example/fhir"
EVENT_SYSTEM = f"{BASE}/CodeSystem/message-event"
TASK_CODE_SYSTEM = f"{BASE}/CodeSystem/task-code"
TASK_BUSINESS_STATUS_SYSTEM = f"{BASE}/CodeSystem/task-business-status"
CONSENT_CATEGORY_SYSTEM = f"{BASE}/CodeSystem/consent-category"
CARE_PLAN_CATEGORY_SYSTEM = f"{BASE}/CodeSystem/care-plan-category"
EXTENSION_BASE = f"{BASE}/StructureDefinition"

INDIVIDUAL_PLAN_CONSENT = (CONSENT_CATEGORY_SYSTEM, "individual-plan")
"""A Consent with this category is the patient's consent to the individual plan."""
INDIVIDUAL_PLAN = (CARE_PLAN_CATEGORY_SYSTEM, "individual-plan")
"""A CarePlan with this category (or the text 'individuell plan') is the individual plan."""

EVENTS = ("consent-changed", "care-plan-shared", "admission-notice", "self-admission-agreement",
          "self-admission-request", "self-admission-response", "meeting-invitation",
          "meeting-response", "ready-for-discharge", "ready-for-discharge-withdrawn",
          "discharge-readiness-response", "discharge-notice", "follow-up-contact",
          "admission-cancelled", "discharge-cancelled", "patient-updated")
"""Every event code an organisation may post (the last three come from HL7 v2 ADT: A11, A13,
A08, adapters/mllp)."""
HUB_EVENTS = ("follow-up-overdue", "discharge-readiness-overdue", "meeting-reminder",
              "consent-expiring", "delivery-unacknowledged")
"""The notices only the hub sends."""

REPLY_EVENTS = ("meeting-response", "discharge-readiness-response", "self-admission-response",
                "self-admission-request", "follow-up-contact")
"""Events that answer what the receiver sent (legal basis `reply`, CONTRACT section 5)."""

def codes(concepts: Any) -> set[tuple[Any, Any]]:
    """(system, code) of every coding in a CodeableConcept or a list of them."""
    items = concepts if isinstance(concepts, list) else [concepts]
    return {(c.get("system"), c.get("code")) for cc in items if isinstance(cc, Mapping)
            for c in cc.get("coding") or [] if isinstance(c, Mapping)}


def is_individual_plan(plan: Mapping[str, Any]) -> bool:
    """Whether a CarePlan is an individual plan (by its category, as cip-1 requires)."""
    if plan.get("resourceType") not in (None, "CarePlan"):
        return False
    for category in plan.get("category") or []:
        if not isinstance(category, Mapping):
            continue
        words = str(category.get("text") or "").strip().lower()
        if INDIVIDUAL_PLAN in codes(category) or words in ("individuell plan", "individual plan"):
            return True
    return False


def is_plan_consent(consent: Mapping[str, Any]) -> bool:
    """Whether a Consent carries the individual-plan category."""
    return INDIVIDUAL_PLAN_CONSENT in codes(consent.get("category"))

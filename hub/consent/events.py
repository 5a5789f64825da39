"""What each message event carries, for consent decisions before a message exists.

The messaging issue derives this from the MessageDefinitions in fhir_profiles/; until then
this table is the source (CONTRACT section 4).
"""

from __future__ import annotations

EVENT_CONTENT: dict[str, frozenset[str]] = {
    event: frozenset({"MessageHeader", "Patient", *types}) for event, types in {
        "consent-changed": {"Consent"},
        "care-plan-shared": {"CarePlan", "Goal", "CareTeam"},
        "admission-notice": {"Encounter"},
        "self-admission-agreement": {"ServiceRequest", "Location"},
        "self-admission-request": {"Task"},
        "self-admission-response": {"Task"},
        "meeting-invitation": {"Appointment", "RelatedPerson", "Practitioner"},
        "meeting-response": {"AppointmentResponse"},
        "ready-for-discharge": {"Encounter", "Task"},
        "ready-for-discharge-withdrawn": {"Task"},
        "discharge-readiness-response": {"Task"},
        "discharge-notice": {"Encounter", "CarePlan", "Flag"},
        "follow-up-contact": {"Encounter"},
        "admission-cancelled": {"Encounter"},
        "discharge-cancelled": {"Encounter"},
        "patient-updated": set(),
        "follow-up-overdue": {"Task"},
    }.items()
}

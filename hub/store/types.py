"""Which resource types the store serves, and how."""

from __future__ import annotations

WRITABLE: frozenset[str] = frozenset({
    "Patient", "Organization", "Endpoint", "Practitioner", "PractitionerRole", "RelatedPerson",
    "CareTeam", "Consent", "CarePlan", "Goal", "Appointment", "AppointmentResponse", "Encounter",
    "Communication", "Task", "ServiceRequest", "Flag", "QuestionnaireResponse",
    "DocumentReference", "Location",
})
"""Types clients may create, update and delete."""

READ_ONLY: frozenset[str] = frozenset({"Bundle", "Provenance", "AuditEvent"})
"""Types only the hub writes (stored messages, provenance, audit); clients read and search."""

SERVED: frozenset[str] = WRITABLE | READ_ONLY

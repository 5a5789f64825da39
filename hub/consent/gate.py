"""The consent gate: the one path by which stored records reach an organisation.

Reads, vreads, history, searches and `_include`s of the store ask the gate what the acting
subject may see. An organisation sees what it wrote itself and the shared directory; of
another organisation's records about a patient, only what an active Consent of that patient
(or a legal basis) discloses to it (hub/consent/policy.py decides). Every decision about
another organisation's patient data is left in `session.info["disclosures"]`, where the
audit trail records it in the same transaction. The check runs at read time against the
consents stored now, so a revocation applies to everything not yet disclosed from the
moment it is stored.

Two stages keep searches cheap: an SQL pre-filter admits own records, the directory, and
records of patients with a consent naming the organisation as actor; the policy then
decides each admitted record of another organisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, or_, select
from sqlalchemy.orm import Session

from hub.auth.isolation import DIRECTORY_TYPES
from hub.auth.subject import Subject
from hub.consent.periods import check_period
from hub.consent.policy import DisclosureRequest, Verdict, consent_message_verdict, decide
from hub.db.types import utcnow
from hub.store.codec import decode_body
from hub.store.repository import INDEX_TABLES, Current, R
from hub.store.search_params import params_for
from hub.store.types import SERVED

T_REF = INDEX_TABLES[1]
# A patient's current Consents, built once (asked on every routing decision).
_CONSENTS_OF = select(R.c.body).where(
    R.c.pk.in_(select(T_REF.c.resource_pk).where(
        T_REF.c.resource_type == "Consent", T_REF.c.param == "patient",
        T_REF.c.target_type == "Patient", T_REF.c.target_id == bindparam("patient_id"))),
    R.c.deleted.is_(False)).order_by(R.c.pk)
# The types with a `patient` search parameter: naming them lets the reference index (which
# leads with the resource type) find a patient's records instead of scanning all references.
_ABOUT_PATIENT_TYPES = sorted(t for t in SERVED if params_for(t).get("patient") is not None)
DISCLOSURES = "disclosures"
INDIVIDUAL_PLAN = ("http://carehub.example/fhir/CodeSystem/consent-category", "individual-plan")
"""A Consent with this category is the patient's consent to making an individual plan."""


def _patients_consenting_to(org_id: str) -> Any:
    """Ids of patients with a stored Consent naming Organization/org_id as actor.

    A join from the Consents naming the organisation (the full reference index key) to their
    patient references (by resource): written as `pk IN (naming)` instead, SQLite read every
    Consent's patient reference in the database and filtered those."""
    naming, patient = T_REF.alias("naming"), T_REF.alias("consent_patient")
    return (select(patient.c.target_id)
            .select_from(naming.join(patient, patient.c.resource_pk == naming.c.resource_pk))
            .where(naming.c.resource_type == "Consent", naming.c.param == "actor",
                   naming.c.target_type == "Organization", naming.c.target_id == org_id,
                   patient.c.resource_type == "Consent", patient.c.param == "patient",
                   patient.c.target_type == "Patient"))


def decision_item(*, recipient: str, patient: str | None, resources: Sequence[str],
                  verdict: Verdict) -> dict[str, Any]:
    """One disclosure decision in the shape the audit trail records
    (hub.audit.recorder.Auditor.disclosures)."""
    return {"recipient": recipient, "patient": patient, "resources": list(resources),
            "decision": verdict.decision, "basis": verdict.basis, "reason": verdict.reason}


def log_decision(session: Session, item: dict[str, Any]) -> None:
    """Leave a decision in the session for the audit record of its transaction."""
    session.info.setdefault(DISCLOSURES, []).append(item)


def has_plan_consent(consents: Sequence[Mapping[str, Any]], now: datetime) -> bool:
    """Whether an active, in-period Consent of category individual-plan exists: the patient's
    consent to making the plan, which sharing the plan needs besides the consent to share."""
    for consent in consents:
        if consent.get("status") != "active":
            continue
        codes = {(c.get("system"), c.get("code")) for cat in consent.get("category", [])
                 for c in cat.get("coding", [])}
        period = (consent.get("provision") or {}).get("period")
        if INDIVIDUAL_PLAN in codes and check_period(period, now) == "in":
            return True
    return False


PLAN_WITHOUT_CONSENT = ("The individual plan is shared only when the patient has also "
                        "consented to making it (a Consent with category individual-plan); "
                        "there is none active.")


class Gate:
    """What one subject may see, decided against the consents stored now."""

    def __init__(self, session: Session, subject: Subject, *, purpose: str | None = None,
                 now: datetime | None = None) -> None:
        self.session = session
        self.subject = subject
        self.purpose = purpose
        self.now = now or utcnow()
        self._consents: dict[str, list[dict[str, Any]]] = {}

    @property
    def recipient(self) -> str | None:
        """The organisation data would be disclosed to."""
        org = self.subject.organization_id
        return f"Organization/{org}" if org else None

    def clause(self) -> ColumnElement[bool] | None:
        """SQL pre-filter on `resources` (None: no filter). Never admits less than allowed."""
        if self.subject.sees_everything:
            return None
        directory = R.c.resource_type.in_(sorted(DIRECTORY_TYPES))
        org = self.subject.organization_id
        if org is None:
            return directory
        candidates = _patients_consenting_to(org)
        about_candidates = R.c.pk.in_(select(T_REF.c.resource_pk).where(
            T_REF.c.resource_type.in_(_ABOUT_PATIENT_TYPES),
            T_REF.c.param == "patient", T_REF.c.target_type == "Patient",
            T_REF.c.target_id.in_(candidates)))
        named = R.c.pk.in_(select(T_REF.c.resource_pk).where(
            T_REF.c.resource_type == "Consent", T_REF.c.param.in_(("actor", "organization")),
            T_REF.c.target_type == "Organization", T_REF.c.target_id == org))
        return or_(R.c.owner_org == org, directory,
                   and_(R.c.resource_type == "Patient", R.c.logical_id.in_(candidates)),
                   about_candidates, named)

    def allows(self, rows: Sequence[Current]) -> list[bool]:
        """For each row, whether the subject may see it; logs each cross-organisation decision."""
        if self.subject.sees_everything:
            return [True] * len(rows)
        out = []
        foreign = [r for r in rows if not self._own_or_directory(r)]
        patients = self._patients_of([r.pk for r in foreign])
        for row in rows:
            out.append(self._own_or_directory(row) or self._decide(row, patients.get(row.pk)))
        return out

    def can_see(self, row: Current) -> bool:
        """Whether the subject may see this one row (deciding and logging as `allows`)."""
        return self.allows([row])[0]

    # -- internals ------------------------------------------------------------------------

    def _own_or_directory(self, row: Current) -> bool:
        org = self.subject.organization_id
        return row.resource_type in DIRECTORY_TYPES or (org is not None and row.owner_org == org)

    def _patients_of(self, pks: list[int]) -> dict[int, set[str]]:
        if not pks:
            return {}
        found: dict[int, set[str]] = {}
        for pk, target in self.session.execute(
                select(T_REF.c.resource_pk, T_REF.c.target_id).where(
                    T_REF.c.resource_pk.in_(pks), T_REF.c.param == "patient",
                    T_REF.c.target_type == "Patient")):
            found.setdefault(pk, set()).add(target)
        return found

    def consents_of(self, patient_id: str) -> list[dict[str, Any]]:
        """Current Consents of Patient/patient_id (read by the gate itself, unfiltered)."""
        if patient_id not in self._consents:
            bodies = self.session.execute(_CONSENTS_OF, {"patient_id": patient_id}).scalars()
            self._consents[patient_id] = [decode_body(b) for b in bodies if b is not None]
        return self._consents[patient_id]

    def _decide(self, row: Current, patients: set[str] | None) -> bool:
        recipient = self.recipient
        if recipient is None or row.body is None:
            return False
        ref = f"{row.resource_type}/{row.logical_id}"
        if row.resource_type == "Consent":
            consent = decode_body(row.body)
            verdict = consent_message_verdict(consent, recipient)
            patient = str((consent.get("patient") or {}).get("reference", "")) or None
            self._log(recipient, patient, ref, verdict)
            return verdict.decision == "permit"
        if row.resource_type == "Patient":
            patients = {row.logical_id}
        if not patients:
            return False  # another organisation's record about no patient: not disclosable
        allowed = True
        for patient_id in sorted(patients):
            verdict = self._verdict(patient_id, row.resource_type, recipient)
            self._log(recipient, f"Patient/{patient_id}", ref, verdict)
            allowed = allowed and verdict.decision == "permit"
        return allowed

    def _verdict(self, patient_id: str, resource_type: str, recipient: str) -> Verdict:
        consents = self.consents_of(patient_id)
        verdict = decide(consents, DisclosureRequest(
            recipient=recipient, resource_types=frozenset({resource_type}),
            purpose=self.purpose, now=self.now))
        if verdict.decision == "permit" and resource_type == "CarePlan" and not has_plan_consent(
                consents, self.now):
            return Verdict("deny", None, PLAN_WITHOUT_CONSENT)
        return verdict


    def _log(self, recipient: str, patient: str | None, ref: str, verdict: Verdict) -> None:
        log_decision(self.session, decision_item(recipient=recipient, patient=patient,
                                                 resources=[ref], verdict=verdict))

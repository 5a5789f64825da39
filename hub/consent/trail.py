"""$consent-trail (CONTRACT section 8): every version of a patient's consents and every
disclosure decision about the patient, in time order. A decision's record that cannot be read
(changed in the database after it was written) is an OperationOutcome in its place, for
auditors.

For auditors. The clients of an organisation that is custodian (Consent.organization) of
one of the patient's consents get the part that is theirs: the versions of the consents
their organisation recorded, and the decisions that named them or were about its own
records (a custodian of one consent learns nothing of the others). To anyone else the
patient is as if unknown (404).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from hub.audit import events
from hub.audit.queries import AuditQuery, search
from hub.auth.subject import Subject
from hub.consent.gate import Gate
from hub.db.types import utcnow
from hub.errors import NotFoundError
from hub.store import service
from hub.store.dates import format_instant

HUB = Subject.hub_itself()


def consent_trail(session: Session, subject: Subject, *, patient_id: str,
                  fhir_base: str) -> dict[str, Any]:
    """A collection Bundle of Consent versions and disclosure AuditEvents, oldest first.
    Raises NotFoundError when the caller is neither an auditor nor a custodian."""
    gate = Gate(session, HUB)
    auditor = (subject.kind == "user" and subject.role == "auditor") or subject.sees_everything
    consents = gate.consents_of(patient_id)
    if not auditor:
        consents = (gate.consents_by(patient_id, subject.organization_id)
                    if subject.kind == "client" else [])
        if not consents:
            raise NotFoundError(f"Patient/{patient_id} is not known here.")
    mine = {f"Consent/{c['id']}" for c in consents}
    timeline: list[tuple[str, int, dict[str, Any]]] = []
    for consent in consents:
        versions, more = service.history(session, HUB, resource_type="Consent",
                                         resource_id=str(consent["id"]), count=1000, offset=0)
        for v in versions:
            if v.body is not None:
                timeline.append((v.last_modified, 0, {
                    "fullUrl": f"{fhir_base}/Consent/{v.id}/_history/{v.version_id}",
                    "resource": v.body}))
        del more  # a consent with over 1000 versions is not a real case
    after = 0
    while True:
        page = search(session, AuditQuery(patients=((f"Patient/{patient_id}",),),
                                          subtypes=((events.DISCLOSE,),), count=500,
                                          after=after))
        for line in page.lines:
            if line.body is None:
                # Changed after it was written: an auditor sees where it stands and why it
                # cannot be shown; a custodian, for whom it cannot be told whether it is
                # theirs, does not.
                if auditor:
                    timeline.append((format_instant(line.recorded_at), 1, {
                        "resource": {"resourceType": "OperationOutcome",
                                     "issue": [line.issue()]}}))
                continue
            if not auditor and not _concerns(session, line.body, mine,
                                             subject.organization_id):
                continue
            timeline.append((format_instant(line.recorded_at), 1, {
                "fullUrl": f"{fhir_base}/AuditEvent/{line.body.get('id')}",
                "resource": line.body}))
        if page.next_after is None:
            break
        after = page.next_after
    timeline.sort(key=lambda t: (t[0], t[1]))
    return {"resourceType": "Bundle", "type": "collection",
            "timestamp": format_instant(utcnow()), "total": len(timeline),
            "entry": [entry for _, _, entry in timeline]}


def _concerns(session: Session, audit_event: dict[str, Any], consents: set[str],
              org: str | None) -> bool:
    """Whether a disclosure AuditEvent is the custodian's business: it names one of its
    consents (as basis or in its reason), or it decided on records its organisation owns."""
    text = json.dumps(audit_event)
    if any(f"{c}\"" in text or f"{c} " in text or f"{c}," in text for c in consents):
        return True
    for entity in audit_event.get("entity", []):
        ref = str((entity.get("what") or {}).get("reference") or "")
        rtype, _, rid = ref.partition("/")
        if rid and rtype != "Patient" and org is not None and service.owner_of(
                session, resource_type=rtype, resource_id=rid) == org:
            return True
    return False

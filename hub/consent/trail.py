"""$consent-trail (CONTRACT section 8): every version of a patient's consents and every
disclosure decision about the patient, in time order.

For auditors, and for the clients of an organisation that is custodian (Consent.organization)
of one of the patient's consents; to anyone else the patient is as if unknown (404).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from hub.audit import events
from hub.audit.queries import AuditQuery, search
from hub.auth.subject import Subject
from hub.consent.gate import Gate
from hub.consent.policy import organization_ref
from hub.db.types import utcnow
from hub.errors import NotFoundError
from hub.store import service
from hub.store.dates import format_instant

HUB = Subject.hub_itself()


def _custodian(consents: list[dict[str, Any]], org_id: str | None) -> bool:
    if org_id is None:
        return False
    mine = f"Organization/{org_id}"
    return any(organization_ref(o.get("reference")) == mine
               for c in consents for o in c.get("organization", []) if isinstance(o, dict))


def consent_trail(session: Session, subject: Subject, *, patient_id: str,
                  fhir_base: str) -> dict[str, Any]:
    """A collection Bundle of Consent versions and disclosure AuditEvents, oldest first.
    Raises NotFoundError when the caller is neither an auditor nor a custodian."""
    consents = Gate(session, HUB).consents_of(patient_id)
    auditor = subject.kind == "user" and subject.role == "auditor"
    custodian = subject.kind == "client" and _custodian(consents, subject.organization_id)
    if not (auditor or subject.sees_everything or custodian):
        raise NotFoundError(f"Patient/{patient_id} is not known here.")
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

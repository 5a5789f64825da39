"""Messages as the intake leaves them, for the delivery tests (and for the intake's own).

`accept` stores the message Bundle as the hub, and writes one MessageRow and one DeliveryRow
per receiver in one transaction, with the row shapes of hub.messaging.intake: status queued
(decision permit or permit-with-redaction, next_attempt_at = created_at = now) or withheld
(decision deny, next_attempt_at NULL, never sent); published_at NULL until the dispatcher
publishes it.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.config import Settings
from hub.consent.gate import MessageQuestion
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.fhir.identifiers import ORGNR_SYSTEM
from hub.fhir.jsonio import dumps_bytes
from hub.fhir.vocab import is_individual_plan
from hub.messaging.models import DeliveryRow, MessageRow
from hub.messaging.routing import decide_delivery
from hub.orgs.service import add_organization
from hub.store import service
from hub.store.dates import format_instant
from tests.factories import consent, fnr, patient

HUB = Subject.hub_itself()
SENDER = Subject.working_for("sender", "test")  # the custodian of the tests' consents
EVENT_SYSTEM = "http://carehub.example/fhir/CodeSystem/message-event"
_orgnr = iter(range(910000000, 999999999, 7))


def add_org(db: Database, org_id: str, endpoint: str | None = None) -> str:
    """Register Organization/org_id (with an hl7-fhir-msg Endpoint at `endpoint`)."""
    with db.session(write=True) as s:
        return add_organization(s, HUB, name=f"Organisation {org_id}", kind="other",
                                identifier=f"{ORGNR_SYSTEM}|{next(_orgnr)}", endpoint=endpoint,
                                org_id=org_id)


def set_endpoint_status(db: Database, org_id: str, status: str) -> None:
    """Mark the organisation's Endpoint active / off."""
    with db.session(write=True) as s:
        eid = f"{org_id}-msg"
        body = service.read(s, HUB, resource_type="Endpoint", resource_id=eid).body
        assert body is not None
        service.update(s, HUB, resource_type="Endpoint", resource_id=eid,
                       resource={**body, "status": status})


def add_patient(db: Database, n: int = 0, *, owner: str = "sender") -> str:
    """A stored Patient (a distinct fødselsnummer per `n`), written by Organization/owner;
    its id."""
    with db.session(write=True) as s:
        body = patient(fnr(date(1969, 11, 13), start=2 + n * 7), given=f"Kari{n}")
        return service.create(s, Subject.working_for(owner, "test"), resource=body).stored.id


def add_consent(db: Database, patient_id: str, recipient: str) -> str:
    """Store an active Consent permitting `recipient`, recorded by its custodian "sender";
    its id."""
    with db.session(write=True) as s:
        body = consent(patient_id, recipient, custodian="sender")
        return service.create(s, SENDER, resource=body).stored.id


def revoke_consent(db: Database, consent_id: str, patient_id: str, recipient: str) -> None:
    """A new version of the Consent with status inactive."""
    with db.session(write=True) as s:
        service.update(s, SENDER, resource_type="Consent", resource_id=consent_id,
                       resource={**consent(patient_id, recipient, status="inactive",
                                                   custodian="sender"),
                                 "id": consent_id})


@dataclass(frozen=True)
class Accepted:
    """One accepted message: its MessageHeader.id, row id, and delivery ids by receiver."""

    header_id: str
    message_id: int
    deliveries: dict[str, int]


def message_bundle(settings: Settings, *, header_id: str, event: str, sender: str,
                   receivers: list[str], patient_id: str,
                   extra: list[dict[str, Any]] | None = None,
                   focus_extra: bool = False) -> dict[str, Any]:
    """A message Bundle: MessageHeader, the Patient, an Encounter (+ `extra` resources); the
    focus is the Encounter, or with `focus_extra` the first extra resource."""
    enc_url = f"urn:uuid:{uuid.uuid4()}"
    extra_urls = [f"urn:uuid:{uuid.uuid4()}" for _ in extra or []]
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
            "resourceType": "MessageHeader", "id": header_id,
            "eventCoding": {"system": EVENT_SYSTEM, "code": event},
            "source": {"endpoint": f"urn:carehub:organization:{sender}"},
            "sender": {"reference": f"Organization/{sender}"},
            "destination": [{"endpoint": f"urn:carehub:organization:{r}",
                             "receiver": {"reference": f"Organization/{r}"}}
                            for r in receivers],
            "focus": [{"reference": extra_urls[0] if focus_extra else enc_url}]}},
        {"fullUrl": f"{settings.fhir_base}/Patient/{patient_id}",
         "resource": {"resourceType": "Patient", "id": patient_id}},
        {"fullUrl": enc_url, "resource": {
            "resourceType": "Encounter", "status": "in-progress",
            "identifier": [{"system": "urn:test", "value": header_id}],
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "IMP"},
            "subject": {"reference": f"Patient/{patient_id}"}}},
    ]
    entries += [{"fullUrl": url, "resource": r} for url, r in zip(extra_urls, extra or [],
                                                                   strict=True)]
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "message",
            "timestamp": format_instant(utcnow()), "entry": entries}


def accept(db: Database, settings: Settings, *, sender: str, receivers: list[str],
           patient_id: str, event: str = "admission-notice", header_id: str | None = None,
           extra: list[dict[str, Any]] | None = None, focus_extra: bool = False,
           consent: dict[str, Any] | None = None) -> Accepted:
    """Accept a message the way the intake does (bundle, message row, deliveries), in one
    committed transaction. The default event has a statutory basis (always permitted)."""
    with db.session(write=True) as s:
        return accept_in(s, settings, sender=sender, receivers=receivers,
                         patient_id=patient_id, event=event, header_id=header_id, extra=extra,
                         focus_extra=focus_extra, consent=consent)


def accept_in(s: Session, settings: Settings, *, sender: str, receivers: list[str],
              patient_id: str, event: str = "admission-notice", header_id: str | None = None,
              extra: list[dict[str, Any]] | None = None, focus_extra: bool = False,
              consent: dict[str, Any] | None = None) -> Accepted:
    """`accept` in the caller's transaction (to commit it late). `consent`: the stored
    Consent of a consent-changed message (routing's basis for it)."""
    header_id = header_id or str(uuid.uuid4())
    bundle = message_bundle(settings, header_id=header_id, event=event, sender=sender,
                            receivers=receivers, patient_id=patient_id, extra=extra,
                            focus_extra=focus_extra)
    types = frozenset(e["resource"]["resourceType"] for e in bundle["entry"])
    now = utcnow()
    kept = service.create(s, HUB, resource=bundle, already_valid=True).stored
    message_id = s.execute(insert(MessageRow).values(
        sender_org=sender, header_id=header_id, event=event,
        content_hash=hashlib.sha256(dumps_bytes(bundle)).hexdigest(),
        patient_ref=f"Patient/{patient_id}", content_types=",".join(sorted(types)),
        bundle_id=kept.id, received_at=now, response=b"{}",
    ).returning(MessageRow.id)).scalar_one()
    for receiver in receivers:
        verdict = decide_delivery(s, settings, MessageQuestion(
            event=event, sender_org=sender, patient_id=patient_id, content_types=types,
            receiver_org=receiver, consent=consent,
            individual_plan=any(is_individual_plan(e["resource"]) for e in bundle["entry"])))
        queued = verdict.decision != "deny"
        s.execute(insert(DeliveryRow).values(
            message_id=message_id, receiver_org=receiver,
            patient_ref=f"Patient/{patient_id}",
            status="queued" if queued else "withheld", decision=verdict.decision,
            basis=verdict.basis, reason=verdict.reason, attempts=0,
            next_attempt_at=now if queued else None, created_at=now))
    ids = dict(s.execute(select(DeliveryRow.receiver_org, DeliveryRow.id).where(
        DeliveryRow.message_id == message_id)).all())
    return Accepted(header_id, message_id, ids)


def deliveries(db: Database) -> list[DeliveryRow]:
    """Every delivery, by id."""
    with db.session(write=False) as s:
        return list(s.scalars(select(DeliveryRow).order_by(DeliveryRow.id)))


def delivery(db: Database, delivery_id: int) -> DeliveryRow:
    """One delivery as committed now."""
    with db.session(write=False) as s:
        return s.get_one(DeliveryRow, delivery_id)

"""What a delivery carries and where it goes: the stored message Bundle, the routing verdict
as it stands now, redaction, and the receiver's messaging Endpoint.

Shared by the push dispatcher and the pull; everything is read as the hub itself through the
store service (never the repository)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.config import Settings
from hub.consent import minimum
from hub.consent.gate import REPLY, MessageQuestion, decision_item, log_decision
from hub.consent.policy import Verdict
from hub.errors import HubError
from hub.fhir import vocab
from hub.messaging.models import DeliveryRow, MessageRow
from hub.messaging.outbound import content_owner
from hub.messaging.routing import decide_delivery
from hub.orgs.service import push_address
from hub.store import service

HUB = Subject.hub_itself()
HL7_FHIR_MSG = "hl7-fhir-msg"


def message_bundle(session: Session, message: MessageRow) -> dict[str, Any]:
    """The message Bundle as the hub stored it on acceptance."""
    stored = service.read(session, HUB, resource_type="Bundle", resource_id=message.bundle_id)
    assert stored.body is not None
    return stored.body


def _resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)]


def content_types(message: MessageRow, bundle: dict[str, Any]) -> frozenset[str]:
    """The resource types the message carries (as routing saw them on acceptance)."""
    if message.content_types:
        return frozenset(t for t in message.content_types.split(",") if t)
    return frozenset(str(r.get("resourceType")) for r in _resources(bundle))


def patient_id(message: MessageRow) -> str | None:
    """The id of the Patient the message is about."""
    ref = message.patient_ref
    return ref.split("/", 1)[1] if ref and ref.startswith("Patient/") else None


def _stored_consent(session: Session, settings: Settings,
                    bundle: dict[str, Any]) -> dict[str, Any] | None:
    """The stored Consent a consent-changed message carries (its focus): by the hub's own
    fullUrl, else by the identifier its sender gave it."""
    entries = [e for e in bundle.get("entry", []) if isinstance(e, dict)]
    header = entries[0].get("resource", {}) if entries else {}
    focus = {str(f.get("reference")) for f in header.get("focus", []) if isinstance(f, dict)}
    own = f"{settings.fhir_base}/Consent/"
    for entry in entries[1:]:
        body = entry.get("resource")
        url = str(entry.get("fullUrl") or "")
        if not isinstance(body, dict) or body.get("resourceType") != "Consent":
            continue
        if focus and url not in focus and f"Consent/{body.get('id')}" not in focus:
            continue
        try:
            if url.startswith(own):
                found = service.read(session, HUB, resource_type="Consent",
                                     resource_id=url[len(own):])
                return found.body
            idents = body.get("identifier")
            for ident in idents if isinstance(idents, list) else [idents]:
                if isinstance(ident, dict) and ident.get("value"):
                    matches = service.find_by_identifier(
                        session, HUB, system=ident.get("system"), value=str(ident["value"]),
                        resource_types=frozenset({"Consent"}))
                    if matches:
                        return matches[-1].body
        except HubError:
            return None
    return None


def verdict_now(session: Session, settings: Settings, message: MessageRow,
                delivery: DeliveryRow, bundle: dict[str, Any]) -> Verdict:
    """May this delivery go out now? The routing decision taken again (CONTRACT 5): a consent
    revoked since acceptance turns a queued delivery into a withheld one.

    A consent-changed message is its own basis; when its stored Consent cannot be found (it
    always can for messages the intake accepted), the decision taken on acceptance stands."""
    consent = None
    if message.event == "consent-changed":
        consent = _stored_consent(session, settings, bundle)
        if consent is None:
            return Verdict("deny" if delivery.decision == "deny" else "permit", delivery.basis,
                           delivery.reason)
    plan = any(vocab.is_individual_plan(r) for r in _resources(bundle))
    return decide_delivery(session, settings, MessageQuestion(
        event=message.event, sender_org=content_owner(session, message, bundle),
        patient_id=patient_id(message),
        content_types=content_types(message, bundle), receiver_org=delivery.receiver_org,
        consent=consent, individual_plan=plan,
        # a reply stays one: whom it answers does not change after acceptance
        replying_to=frozenset({delivery.receiver_org} if delivery.basis == REPLY else ())))


def redacted(bundle: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
    """The Bundle as the verdict lets its receiver have it: without the entries whose types
    it redacts (never the header), and, on a legal basis other than reply, trimmed to the
    event's administrative elements (hub.consent.minimum)."""
    if verdict.decision == "permit-with-redaction" and verdict.redact:
        entries = bundle.get("entry", [])
        kept = [e for i, e in enumerate(entries)
                if i == 0 or not isinstance(e, dict)
                or (e.get("resource") or {}).get("resourceType") not in verdict.redact]
        bundle = {**bundle, "entry": kept}
    if minimum.on_legal_basis(verdict):
        event = _event(bundle)
        if event is not None:
            bundle = minimum.trim_message(bundle, event)
    return bundle


def _event(bundle: dict[str, Any]) -> str | None:
    entries = bundle.get("entry") or []
    header = entries[0].get("resource") if entries and isinstance(entries[0], dict) else None
    code = ((header or {}).get("eventCoding") or {}).get("code")
    return code if isinstance(code, str) else None


def log_disclosure(session: Session, delivery: DeliveryRow, message: MessageRow,
                   verdict: Verdict) -> None:
    """Leave the decision for the audit trail (session.info, as the consent gate does)."""
    log_decision(session, decision_item(
        recipient=f"Organization/{delivery.receiver_org}", patient=message.patient_ref,
        resources=[f"Bundle/{message.bundle_id}"], verdict=verdict, event=message.event))


def endpoint_address(session: Session, org_id: str) -> str | None:
    """The address of the organisation's active hl7-fhir-msg Endpoint, with the credentials
    kept for it (hub/orgs/service.py), or None (pull only)."""
    try:
        org = service.read(session, HUB, resource_type="Organization", resource_id=org_id).body
    except HubError:
        return None
    for ref in (org or {}).get("endpoint", []):
        target = str((ref or {}).get("reference", "")) if isinstance(ref, dict) else ""
        kind, _, eid = target.partition("/")
        if kind != "Endpoint" or not eid:
            continue
        try:
            endpoint = service.read(session, HUB, resource_type="Endpoint",
                                    resource_id=eid).body or {}
        except HubError:
            continue
        conn = endpoint.get("connectionType") or {}
        if (endpoint.get("status") == "active" and conn.get("code") == HL7_FHIR_MSG
                and isinstance(endpoint.get("address"), str) and endpoint["address"]):
            return push_address(session, eid, str(endpoint["address"]))
    return None

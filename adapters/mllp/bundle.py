"""ADT -> the FHIR message the centre would have sent (CONTRACT sections 4 and 10).

- A01 admit -> `admission-notice`: the Encounter in progress (class IMP, `period.start` PV1-44).
- A03 discharge -> `discharge-notice`: the Encounter finished (`period.end` PV1-45) and a
  follow-up plan naming the municipality as responsible from the discharge on (ADT carries no
  plan; the hub's follow-up checks then run as for any discharge notice).
- A11 cancel admit -> `admission-cancelled`: the Encounter cancelled (it went where the
  admission notice went, on the same basis).
- A13 cancel discharge -> `discharge-cancelled`: the Encounter in progress again, without
  `period.end`; the hub cancels the follow-up checks of that discharge.
- A08 update patient information -> `patient-updated`: the Patient (a new version only where
  the sender owns it; CONTRACT section 3, "The person").

Every message is built only from what the ADT message says, with ids derived from the sending
organisation and MSH-10: the same ADT message sent again is the same FHIR message, which
`$process-message` answers with its first response and nothing new. The stay is the Encounter
with identifier `urn:carehub:pas-visit:<sender>|<PV1-19>`, so every message of one stay is a
version of one Encounter.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from adapters.mllp.adt import Adt
from hub.store.dates import format_instant

EVENT_SYSTEM = "http://carehub.example/fhir/CodeSystem/message-event"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_NS = uuid.UUID("6f1c7a52-3a5e-4c1b-9f0e-0d6a3c1e8b21")  # the MLLP adapter's uuid5 namespace


def visit_system(sender: str) -> str:
    """The identifier system of the stays a sender's PAS numbers (PV1-19)."""
    return f"urn:carehub:pas-visit:{sender}"


def follow_up_plan_system(sender: str) -> str:
    """The identifier system of the follow-up plans made from a sender's A03s."""
    return f"urn:carehub:pas-follow-up-plan:{sender}"


def header_id(sender: str, control_id: str) -> str:
    """MessageHeader.id of the ADT message `control_id` (MSH-10) from `sender`."""
    return str(uuid.uuid5(_NS, f"{sender}|{control_id}"))


def event_of(adt: Adt) -> str:
    """The FHIR event an ADT trigger becomes; ValueError when it has none (yet)."""
    event = {"A01": "admission-notice", "A03": "discharge-notice",
             "A11": "admission-cancelled", "A13": "discharge-cancelled",
             "A08": "patient-updated"}.get(adt.trigger)
    if event is None:
        raise ValueError(f"ADT^{adt.trigger} has no FHIR event yet")
    return event


def message(adt: Adt, *, sender: str, receiver: str) -> dict[str, Any]:
    """The FHIR message Bundle of `adt` from Organization/`sender` to Organization/`receiver`."""
    event = event_of(adt)
    hid = header_id(sender, adt.header.control_id)

    def url(role: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_NS, f'{hid}|{role}')}"

    patient_url, encounter_url, plan_url = url("patient"), url("encounter"), url("plan")
    if adt.trigger == "A08":
        return _envelope(adt, hid, url, event, sender, receiver, [{"reference": patient_url}],
                         [{"fullUrl": patient_url, "resource": _patient(adt)}])
    status = {"A03": "finished", "A11": "cancelled"}.get(adt.trigger, "in-progress")
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "identifier": [{"system": visit_system(sender), "value": adt.visit_number}],
        "status": status,
        "class": {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
        "subject": {"reference": patient_url},
        "period": {"start": _instant(adt.admitted_at)},
        "serviceProvider": {"reference": f"Organization/{sender}"},
    }
    focus = [{"reference": encounter_url}]
    entries = [{"fullUrl": encounter_url, "resource": encounter}]
    if adt.trigger == "A03":
        encounter["period"]["end"] = _instant(adt.discharged_at)
        entries.append({"fullUrl": plan_url, "resource": _follow_up_plan(
            adt, sender=sender, receiver=receiver, patient_url=patient_url)})
        focus.append({"reference": plan_url})
    entries.append({"fullUrl": patient_url, "resource": _patient(adt)})
    return _envelope(adt, hid, url, event, sender, receiver, focus, entries)


def _envelope(adt: Adt, hid: str, url: Callable[[str], str], event: str, sender: str,
              receiver: str, focus: list[dict[str, Any]],
              entries: list[dict[str, Any]]) -> dict[str, Any]:
    header = {
        "resourceType": "MessageHeader", "id": hid,
        "eventCoding": {"system": EVENT_SYSTEM, "code": event},
        "source": {"name": f"HL7 v2 ADT^{adt.trigger} {adt.header.control_id}",
                   "endpoint": f"urn:carehub:organization:{sender}"},
        "sender": {"reference": f"Organization/{sender}"},
        "destination": [{"endpoint": f"urn:carehub:organization:{receiver}",
                         "receiver": {"reference": f"Organization/{receiver}"}}],
        "focus": focus,
    }
    return {"resourceType": "Bundle", "id": str(uuid.uuid5(_NS, f"{hid}|bundle")),
            "type": "message", "timestamp": _instant(adt.sent_at),
            "entry": [{"fullUrl": url("header"), "resource": header}, *entries]}


def _instant(when: datetime | None) -> str:
    assert when is not None  # adt.parse requires the times each trigger needs
    return format_instant(when.astimezone(UTC))


def _patient(adt: Adt) -> dict[str, Any]:
    p = adt.person
    patient: dict[str, Any] = {"resourceType": "Patient",
                               "identifier": [{"system": p.system, "value": p.value}]}
    name: dict[str, Any] = {}
    if p.family:
        name["family"] = p.family
    if p.given:
        name["given"] = p.given
    if name:
        patient["name"] = [name]
    if p.gender:
        patient["gender"] = p.gender
    if p.birth_date:
        patient["birthDate"] = p.birth_date.isoformat()
    address: dict[str, Any] = {}
    if p.lines:
        address["line"] = p.lines
    if p.city:
        address["city"] = p.city
    if p.postal_code:
        address["postalCode"] = p.postal_code
    if p.kommunenummer:
        address["district"] = p.kommunenummer
    if address:
        patient["address"] = [{"use": "home", **address}]
    return patient


def _follow_up_plan(adt: Adt, *, sender: str, receiver: str,
                    patient_url: str) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "identifier": [{"system": follow_up_plan_system(sender), "value": adt.visit_number}],
        "status": "active", "intent": "plan",
        "category": [{"text": "follow-up plan after discharge"}],
        "title": "Oppfølging etter utskrivning",
        "subject": {"reference": patient_url},
        "author": {"reference": f"Organization/{sender}"},
        "activity": [{"detail": {
            "status": "scheduled",
            "description": "Oppfølging fra utskrivning; første kontakt avtales med kommunen "
                           "(meldt fra pasientadministrativt system, ADT^A03).",
            "scheduledPeriod": {"start": _instant(adt.discharged_at)},
            "performer": [{"reference": f"Organization/{receiver}"}]}}],
    }

"""Realistic Norwegian test resources (synthetic people, valid check digits)."""

from __future__ import annotations

from datetime import date
from typing import Any

from hub.fhir.identifiers import FNR_SYSTEM, KOMMUNENUMMER_SYSTEM, ORGNR_SYSTEM, make_fodselsnummer


def fnr(birth: date = date(1969, 11, 13), start: int = 2) -> str:
    """A valid fødselsnummer for `birth` (the first individual number from `start` that works)."""
    for individual in range(start, 500):
        try:
            return make_fodselsnummer(birth, individual)
        except ValueError:
            continue
    raise AssertionError("no valid fødselsnummer")


def patient(number: str | None = None, family: str = "Nordmann", given: str = "Kari",
            **extra: Any) -> dict[str, Any]:
    """A Patient identified by fødselsnummer, living in Time kommune."""
    return {
        "resourceType": "Patient",
        "identifier": [{"system": FNR_SYSTEM, "value": number or fnr()}],
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1969-11-13",
        "address": [{"line": ["Storgata 1"], "city": "Bryne", "postalCode": "4340",
                     "district": "Time", "use": "home"}],
        **extra,
    }


def organization(orgnr: str = "964969590", name: str = "Time kommune") -> dict[str, Any]:
    """A municipality Organization with organisasjonsnummer and kommunenummer."""
    return {
        "resourceType": "Organization",
        "identifier": [{"system": ORGNR_SYSTEM, "value": orgnr},
                       {"system": KOMMUNENUMMER_SYSTEM, "value": "1121"}],
        "active": True,
        "name": name,
    }


def practitioner(hpr: str = "9144889", family: str = "Lege") -> dict[str, Any]:
    """A Practitioner with an HPR-nummer."""
    return {"resourceType": "Practitioner", "active": True,
            "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": hpr}],
            "name": [{"family": family, "given": ["Lise"]}]}


def encounter(patient_ref: str, start: str = "2026-11-01T10:00:00+01:00",
              status: str = "in-progress") -> dict[str, Any]:
    """An inpatient Encounter at the centre."""
    return {
        "resourceType": "Encounter",
        "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.2.55555", "value": "enc-1"}],
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": patient_ref},
        "period": {"start": start},
    }


def task(patient_ref: str, focus_ref: str, status: str = "requested") -> dict[str, Any]:
    """A discharge-readiness Task."""
    return {
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": "http://carehub.example/fhir/CodeSystem/task-code",
                             "code": "discharge-readiness"}]},
        "for": {"reference": patient_ref},
        "focus": {"reference": focus_ref},
        "authoredOn": "2026-11-20T09:00:00+01:00",
    }


IRCP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP"}]}


def consent(patient_id: str, recipient: str, *, status: str = "active",
            classes: list[str] | None = None, end: str | None = None,
            category: str | None = None, custodian: str = "jaeren-dps") -> dict[str, Any]:
    """An active (or `status`) patient-privacy Consent of the patient permitting `recipient`
    (an Organization id), from 2026 on: all data, or the resource types in `classes`; with
    `end`, until then; `category` adds one of our consent-category codes."""
    provision: dict[str, Any] = {
        "type": "permit", "period": {"start": "2026-01-01T00:00:00Z", **({"end": end} if end
                                                                          else {})},
        "actor": [{"role": IRCP, "reference": {"reference": f"Organization/{recipient}"}}]}
    if classes:
        provision["class"] = [{"system": "http://hl7.org/fhir/resource-types", "code": c}
                              for c in classes]
    body: dict[str, Any] = {
        "resourceType": "Consent", "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": "2026-01-01T00:00:00Z",
        "organization": [{"reference": f"Organization/{custodian}"}],
        "provision": provision}
    if category:
        body["category"].append({"coding": [{
            "system": "http://carehub.example/fhir/CodeSystem/consent-category",
            "code": category}]})
    return body

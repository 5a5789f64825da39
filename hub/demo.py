"""`hub demo`: seed a small, realistic Norwegian setting through the store, idempotently.

Seeds the organisations of shared/examples (Jæren DPS and Time kommune, plus Klepp kommune)
and a few synthetic patients. The care-coordination scenario is added with the workflow issue.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.fhir.identifiers import FNR_SYSTEM, KOMMUNENUMMER_SYSTEM, ORGNR_SYSTEM, make_fodselsnummer
from hub.store import service

ORGANIZATIONS: list[dict[str, Any]] = [
    {"id": "jaeren-dps", "name": "Jæren DPS", "orgnr": "983974791", "kind": "prov"},
    {"id": "time-kommune", "name": "Time kommune", "orgnr": "964969590", "kind": "govt",
     "kommunenummer": "1121"},
    {"id": "klepp-kommune", "name": "Klepp kommune", "orgnr": "964979022", "kind": "govt",
     "kommunenummer": "1120"},
]

PATIENTS = [
    ("Kari", "Nordmann", date(1969, 11, 13), "female", "Bryne"),
    ("Ola", "Hansen", date(1988, 4, 2), "male", "Kleppe"),
    ("Ingrid", "Løvås", date(1995, 8, 21), "female", "Bryne"),
]


def _fnr(birth: date) -> str:
    for individual in range(2, 500):
        try:
            return make_fodselsnummer(birth, individual)
        except ValueError:
            continue
    raise ValueError(f"no fødselsnummer for {birth}")


def _organization(o: dict[str, Any]) -> dict[str, Any]:
    ident = [{"system": ORGNR_SYSTEM, "value": o["orgnr"]}]
    if "kommunenummer" in o:
        ident.append({"system": KOMMUNENUMMER_SYSTEM, "value": o["kommunenummer"]})
    return {"resourceType": "Organization", "id": o["id"], "identifier": ident, "active": True,
            "name": o["name"],
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                            "organization-type", "code": o["kind"]}]}]}


def seed(session: Session) -> list[str]:
    """Create the demo organisations and patients unless present; their references."""
    me = Subject.hub_itself()
    made = []
    for o in ORGANIZATIONS:
        if not service.exists(session, me, resource_type="Organization", resource_id=o["id"]):
            service.update(session, me, resource_type="Organization", resource_id=o["id"],
                           resource=_organization(o))
        made.append(f"Organization/{o['id']}")
    for given, family, birth, gender, city in PATIENTS:
        number = _fnr(birth)
        resource = {"resourceType": "Patient",
                    "identifier": [{"system": FNR_SYSTEM, "value": number}],
                    "name": [{"family": family, "given": [given]}], "gender": gender,
                    "birthDate": birth.isoformat(),
                    "address": [{"city": city, "use": "home"}],
                    "managingOrganization": {"reference": "Organization/jaeren-dps"}}
        res = service.create(session, me, resource=resource,
                             if_none_exist=f"identifier={FNR_SYSTEM}|{number}")
        made.append(res.stored.relative_url)
    return made

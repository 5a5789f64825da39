"""Messages of user-controlled admission, admission and the ready-for-discharge dialogue, in
the shapes of CONTRACT section 4 (shared/examples 03, 06-12), built fresh for each test, and
the parties that send them: Jæren DPS, Time kommune (1121) and Klepp kommune (1120)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.engine import Database
from hub.fhir.identifiers import FNR_SYSTEM
from hub.orgs.service import add_organization
from tests.access_clients import other_client
from tests.factories import fnr
from tests.messaging.test_story import ORGNR

CENTRE, TIME, KLEPP = "jaeren-dps", "time-kommune", "klepp-kommune"
BASE = "http://carehub.example/fhir"
EVENT_SYSTEM = f"{BASE}/CodeSystem/message-event"
TASK_CODE = f"{BASE}/CodeSystem/task-code"
URI = "urn:ietf:rfc:3986"
Clients = dict[str, TestClient]

# Three synthetic people with valid fødselsnummer.
KARI = fnr(date(1969, 11, 13))
OLA = fnr(date(1958, 3, 2))
INGRID = fnr(date(1990, 7, 21))
NAMES = {KARI: ("Nordmann", "Kari"), OLA: ("Hansen", "Ola"), INGRID: ("Berg", "Ingrid")}


@pytest.fixture
def parties(settings: Settings, database: Database) -> Iterator[Clients]:
    """A fresh hub with Jæren DPS, Time kommune and Klepp kommune, one client each."""
    with database.session(write=True) as s:
        hub = Subject.hub_itself()
        add_organization(s, hub, name="Jæren DPS", kind="mental-health-centre",
                         identifier=f"{ORGNR}|983974791", org_id=CENTRE)
        add_organization(s, hub, name="Time kommune", kind="municipality",
                         identifier=f"{ORGNR}|964969590", org_id=TIME)
        add_organization(s, hub, name="Klepp kommune", kind="municipality",
                         identifier=f"{ORGNR}|964977631", org_id=KLEPP)
    with other_client(settings, database, CENTRE) as dps, \
            other_client(settings, database, TIME) as time, \
            other_client(settings, database, KLEPP) as klepp:
        yield {CENTRE: dps, TIME: time, KLEPP: klepp}


def post(clients: Clients, message: dict[str, Any]) -> Any:
    """POST the message to $process-message as its sender."""
    sender = message["entry"][0]["resource"]["sender"]["reference"].split("/")[1]
    return clients[sender].post("/fhir/$process-message", json=message)


def issues(response: Any) -> list[dict[str, Any]]:
    """The issues of a 422's OperationOutcome, or of an accepted message's response."""
    body = response.json()
    if body["resourceType"] == "OperationOutcome":
        return list(body["issue"])
    return list(body["entry"][1]["resource"]["issue"])


def said(response: Any, severity: str | None = None) -> str:
    """Every diagnostics of the answer (of one severity), joined."""
    return " ".join(i["diagnostics"] for i in issues(response)
                    if severity is None or i["severity"] == severity)


def urn() -> str:
    """A fresh fullUrl."""
    return f"urn:uuid:{uuid.uuid4()}"


def ident(value: str) -> list[dict[str, str]]:
    """A sender-chosen identifier."""
    return [{"system": URI, "value": value}]


def by_ident(rtype: str, value: str) -> dict[str, Any]:
    """A reference to a stored resource by the identifier it was sent with."""
    return {"type": rtype, "identifier": {"system": URI, "value": value}}


def org(org_id: str) -> dict[str, str]:
    """An Organization reference."""
    return {"reference": f"Organization/{org_id}"}


def message(event: str, sender: str, receivers: tuple[str, ...], person: str,
            focus: list[tuple[str, dict[str, Any]]],
            others: list[tuple[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    """A message Bundle: header, the focus entries (fullUrl, resource), the others, and the
    Patient (whose fullUrl the resources name as `person`'s urn)."""
    family, given = NAMES[person]
    header = {
        "resourceType": "MessageHeader", "id": str(uuid.uuid4()),
        "eventCoding": {"system": EVENT_SYSTEM, "code": event},
        "source": {"endpoint": f"urn:carehub:organization:{sender}"},
        "sender": org(sender),
        "destination": [{"endpoint": f"urn:carehub:organization:{r}", "receiver": org(r)}
                        for r in receivers],
        "focus": [{"reference": full_url} for full_url, _ in focus],
    }
    patient = {"resourceType": "Patient", "identifier": [{"system": FNR_SYSTEM,
                                                          "value": person}],
               "name": [{"family": family, "given": [given]}]}
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "message",
            "timestamp": "2026-11-23T19:48:40+00:00",
            "entry": [{"fullUrl": urn(), "resource": header},
                      *({"fullUrl": u, "resource": r} for u, r in [*focus, *(others or [])]),
                      {"fullUrl": patient_urn(person), "resource": patient}]}


_PATIENT_URNS: dict[str, str] = {}


def patient_urn(person: str) -> str:
    """The fullUrl of `person`'s Patient entry in the message being built."""
    return _PATIENT_URNS.setdefault(person, urn())


# --- user-controlled admission --------------------------------------------------------------

def agreement(person: str, *, name: str, unit: str = "unit-jaeren", beds: int = 2,
              start: str = "2026-01-01T00:00:00+01:00",
              end: str | None = "2026-12-31T23:59:59+01:00",
              max_days: int | None = 5, min_days: int | None = 14, status: str = "active",
              sender: str = CENTRE, to: tuple[str, ...] = (TIME,),
              unit_manager: str = CENTRE) -> dict[str, Any]:
    """A self-admission-agreement (a ServiceRequest named `name`) with its unit."""
    unit_urn = urn()
    terms = [{"url": key, "valueInteger": value}
             for key, value in (("maxDaysPerStay", max_days), ("minDaysBetweenStays", min_days))
             if value is not None]
    period = {"start": start, **({"end": end} if end else {})}
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest", "identifier": ident(name), "status": status,
        "intent": "order",
        "code": {"coding": [{"system": f"{BASE}/CodeSystem/service-code",
                             "code": "user-controlled-admission"}],
                 "text": "brukerstyrt innleggelse"},
        "subject": {"reference": patient_urn(person)}, "occurrencePeriod": period,
        "requester": org(sender), "performer": [org(sender)],
        "locationReference": [{"reference": unit_urn}],
    }
    if terms:
        request["extension"] = [{"url": f"{BASE}/StructureDefinition/self-admission-terms",
                                 "extension": terms}]
    location = {"resourceType": "Location", "identifier": ident(unit), "status": "active",
                "name": "Døgnenhet, Jæren DPS", "managingOrganization": org(unit_manager),
                "extension": [{"url": f"{BASE}/StructureDefinition/user-controlled-beds",
                               "valueInteger": beds}]}
    return message("self-admission-agreement", sender, to, person,
                   [(urn(), request), (unit_urn, location)])


def _self_admission_task(person: str, *, name: str, agreement_name: str, start: str, end: str,
                         status: str, requester: str, owner: str) -> dict[str, Any]:
    return {"resourceType": "Task", "identifier": ident(name), "status": status,
            "intent": "order",
            "code": {"coding": [{"system": TASK_CODE, "code": "self-admission-request"}]},
            "focus": by_ident("ServiceRequest", agreement_name),
            "for": {"reference": patient_urn(person)},
            "authoredOn": "2026-11-23T19:48:40+00:00",
            "requester": org(requester), "owner": org(owner),
            "restriction": {"period": {"start": start, "end": end}}}


def request(person: str, *, name: str, agreement_name: str, start: str, end: str,
            sender: str = TIME, owner: str = CENTRE) -> dict[str, Any]:
    """A self-admission-request for the stay start..end."""
    task = _self_admission_task(person, name=name, agreement_name=agreement_name, start=start,
                                end=end, status="requested", requester=sender, owner=owner)
    return message("self-admission-request", sender, (owner,), person, [(urn(), task)])


def response(person: str, *, name: str, agreement_name: str, start: str, end: str,
             status: str = "accepted", arrival: str | None = None, reason: str | None = None,
             requester: str = TIME, sender: str = CENTRE, owner: str = CENTRE
             ) -> dict[str, Any]:
    """The centre's self-admission-response: accepted (arrival: `arrival` or the start) or
    rejected (with `reason`)."""
    task = _self_admission_task(person, name=name, agreement_name=agreement_name, start=start,
                                end=end, status=status, requester=requester, owner=owner)
    if status == "accepted":
        task["output"] = [{"type": {"text": "arrival"}, "valueDateTime": arrival or start}]
    else:
        task["statusReason"] = {"text": reason or "Ingen ledig seng."}
    return message("self-admission-response", sender, (requester,), person, [(urn(), task)])


# --- admission and the ready-for-discharge dialogue -----------------------------------------

def _stay(person: str, name: str, start: str, provider: str) -> dict[str, Any]:
    return {"resourceType": "Encounter", "identifier": ident(name), "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "IMP", "display": "inpatient encounter"},
            "subject": {"reference": patient_urn(person)}, "period": {"start": start},
            "serviceProvider": org(provider)}


def admission(person: str, *, stay: str, start: str = "2026-11-03T19:48:40+00:00",
              sender: str = CENTRE, provider: str = CENTRE,
              to: tuple[str, ...] = (TIME,)) -> dict[str, Any]:
    """An admission-notice: the Encounter `stay`, in progress."""
    return message("admission-notice", sender, to, person,
                   [(urn(), _stay(person, stay, start, provider))])


def _readiness_task(person: str, *, name: str, focus: dict[str, Any], status: str,
                    planned: str, requester: str, owner: str) -> dict[str, Any]:
    return {"resourceType": "Task", "identifier": ident(name), "status": status,
            "intent": "order",
            "code": {"coding": [{"system": TASK_CODE, "code": "discharge-readiness"}]},
            "focus": focus, "for": {"reference": patient_urn(person)},
            "authoredOn": "2026-11-23T19:48:40+00:00", "requester": org(requester),
            "owner": org(owner), "restriction": {"period": {"start": planned}}}


def ready(person: str, *, stay: str, name: str, planned: str = "2026-11-13T19:48:40+00:00",
          owner: str = TIME, to: tuple[str, ...] = (TIME,), sender: str = CENTRE,
          start: str = "2026-11-03T19:48:40+00:00") -> dict[str, Any]:
    """A ready-for-discharge: the stay and the question (Task `name`) to `owner`."""
    stay_urn = urn()
    task = _readiness_task(person, name=name, focus={"reference": stay_urn},
                           status="requested", planned=planned, requester=sender, owner=owner)
    return message("ready-for-discharge", sender, to, person,
                   [(stay_urn, _stay(person, stay, start, sender)), (urn(), task)])


def withdrawn(person: str, *, stay: str, name: str, planned: str = "2026-11-13T19:48:40+00:00",
              sender: str = CENTRE, requester: str = CENTRE, owner: str = TIME
              ) -> dict[str, Any]:
    """A ready-for-discharge-withdrawn: Task `name`, cancelled."""
    task = _readiness_task(person, name=name, focus=by_ident("Encounter", stay),
                           status="cancelled", planned=planned, requester=requester,
                           owner=owner)
    return message("ready-for-discharge-withdrawn", sender, (owner,), person,
                   [(urn(), task)])


def readiness_answer(person: str, *, stay: str, name: str, status: str = "accepted",
                     when: str | None = "2026-11-14T12:00:00+01:00",
                     reason: str | None = None, sender: str = TIME,
                     requester: str = CENTRE, owner: str = TIME,
                     planned: str = "2026-11-13T19:48:40+00:00") -> dict[str, Any]:
    """A discharge-readiness-response: accepted (from `when`) or rejected (`reason`)."""
    task = _readiness_task(person, name=name, focus=by_ident("Encounter", stay), status=status,
                           planned=planned, requester=requester, owner=owner)
    if when is not None:
        task["output"] = [{"type": {"text": "can receive from"}, "valueDateTime": when}]
    if reason is not None:
        task["statusReason"] = {"text": reason}
    return message("discharge-readiness-response", sender, (requester,), person,
                   [(urn(), task)])

"""Messages of the individual-plan and meeting flows, in the shapes of CONTRACT section 4 and
the shared examples: consents, individual plans, meeting invitations and answers about one
synthetic person living in Time kommune (kommunenummer 1121)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.engine import Database
from hub.fhir.identifiers import ORGNR_SYSTEM
from hub.orgs.service import add_organization
from tests.access_clients import other_client
from tests.factories import fnr, patient

JSON = dict[str, Any]
BASE = "http://carehub.example/fhir"
EVENT_SYSTEM = f"{BASE}/CodeSystem/message-event"
IRCP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP"}]}
PARTICIPATION = f"{BASE}/StructureDefinition/plan-participation"
REVISION = f"{BASE}/StructureDefinition/plan-revision-date"
KARI = fnr()  # Kari Nordmann, born 13.11.1969
OLA = fnr(start=int(KARI[6:9]) + 1)  # her twin brother Ola
KLEPP_ORGNR = "964969817"  # synthetic, valid check digit


def person(number: str) -> JSON:
    """The Patient of a fødselsnummer used here (Kari, or her twin Ola)."""
    return patient(number, given="Ola", gender="male") if number == OLA else patient(number)


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def ident(sender: str, kind: str, value: str) -> list[JSON]:
    """A sender-chosen identifier (how the hub recognises a resource sent again)."""
    return [{"system": f"https://{sender}.example.no/fhir/id/{kind}", "value": value}]


def message(event: str, sender: str, receivers: list[str], focus: str,
            entries: list[tuple[str, JSON]]) -> JSON:
    """A message Bundle: its MessageHeader, then (fullUrl, resource) entries."""
    header = {
        "resourceType": "MessageHeader", "id": str(uuid.uuid4()),
        "eventCoding": {"system": EVENT_SYSTEM, "code": event},
        "source": {"name": sender, "endpoint": f"urn:carehub:organization:{sender}"},
        "sender": {"reference": f"Organization/{sender}"},
        "destination": [{"endpoint": f"urn:carehub:organization:{r}",
                         "receiver": {"reference": f"Organization/{r}"}} for r in receivers],
        "focus": [{"reference": focus}],
    }
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "message",
            "timestamp": "2026-11-23T10:00:00+01:00",
            "entry": [{"fullUrl": urn(), "resource": header},
                      *({"fullUrl": u, "resource": r} for u, r in entries)]}


def resource(bundle: JSON, rtype: str, n: int = 0) -> JSON:
    """The n-th resource of a type in a message (to change it in a test)."""
    found: list[JSON] = [e["resource"] for e in bundle["entry"]
                         if e["resource"]["resourceType"] == rtype]
    return found[n]


def full_url(bundle: JSON, rtype: str, n: int = 0) -> str:
    found = [e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]
    return str(found[n])


def again(bundle: JSON) -> JSON:
    """The same content as a new message (a new MessageHeader.id)."""
    out = copy.deepcopy(bundle)
    out["entry"][0]["resource"]["id"] = str(uuid.uuid4())
    return out


def consent(*, number: str = KARI, recipients: tuple[str, ...] = ("time-kommune",),
            making: bool = True, sender: str = "jaeren-dps", key: str = "c-1",
            status: str = "active") -> JSON:
    """consent-changed: the patient's consent to sharing with `recipients` (IRCP actors), and
    with `making` also to making an individual plan (category individual-plan)."""
    pat, cid = urn(), urn()
    category = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]
    if making:
        category.append({"coding": [{"system": f"{BASE}/CodeSystem/consent-category",
                                     "code": "individual-plan"}]})
    body = {
        "resourceType": "Consent", "identifier": ident(sender, "consent", key),
        "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": category, "patient": {"reference": pat},
        "dateTime": "2026-11-20T10:00:00+01:00", "performer": [{"reference": pat}],
        "organization": [{"reference": f"Organization/{sender}"}],
        "provision": {"type": "permit", "period": {"start": "2026-11-20T10:00:00+01:00"},
                      "actor": [{"role": IRCP, "reference": {"reference": f"Organization/{r}"}}
                                for r in recipients]},
    }
    return message("consent-changed", sender, list(recipients), cid,
                   [(cid, body), (pat, person(number))])


def plan(*, number: str = KARI, key: str = "ip-1", status: str = "active",
         sender: str = "jaeren-dps", receivers: tuple[str, ...] = ("time-kommune",)) -> JSON:
    """care-plan-shared: Kari's individual plan, made with her: two goals of her own, a
    home-help activity of Time kommune, the care team with Time kommune's coordinator."""
    pat, plan_url, team, goal1, goal2 = urn(), urn(), urn(), urn(), urn()

    def goal(kind: str, area: str, text: str, n: str) -> JSON:
        return {"resourceType": "Goal", "identifier": ident(sender, "goal", f"{key}-{n}"),
                "lifecycleStatus": "active",
                "category": [{"coding": [
                    {"system": f"{BASE}/CodeSystem/goal-category", "code": kind},
                    {"system": f"{BASE}/CodeSystem/goal-category", "code": area}]}],
                "description": {"text": text}, "subject": {"reference": pat},
                "expressedBy": {"reference": pat}}

    care_plan = {
        "resourceType": "CarePlan", "identifier": ident(sender, "plan", key),
        "extension": [{"url": PARTICIPATION, "valueCode": "took-part"},
                      {"url": REVISION, "valueDate": "2027-05-01"}],
        "status": status, "intent": "plan",
        "category": [{"coding": [{"system": f"{BASE}/CodeSystem/care-plan-category",
                                  "code": "individual-plan"}], "text": "individuell plan"}],
        "title": "Individuell plan", "subject": {"reference": pat},
        "period": {"start": "2026-11-22T10:00:00+01:00", "end": "2027-11-22"},
        "created": "2026-11-22T10:00:00+01:00",
        "author": {"reference": f"Organization/{sender}"},
        "careTeam": [{"reference": team}],
        "goal": [{"reference": goal1}, {"reference": goal2}],
        "activity": [{"detail": {
            "status": "scheduled", "description": "Hjemmetjeneste to ganger i uken",
            "performer": [{"reference": "Organization/time-kommune"}]}}],
    }
    care_team = {
        "resourceType": "CareTeam", "identifier": ident(sender, "team", key),
        "status": "active", "subject": {"reference": pat},
        "participant": [
            {"role": [{"coding": [{"system": f"{BASE}/CodeSystem/care-team-role",
                                   "code": "coordinator"}]}],
             "member": {"reference": "Organization/time-kommune"}},
            {"role": [{"text": "behandler"}], "member": {"reference": f"Organization/{sender}"}},
        ],
    }
    return message("care-plan-shared", sender, list(receivers), plan_url, [
        (plan_url, care_plan), (pat, person(number)),
        (goal1, goal("life-goal", "relational", "Ha god kontakt med søsteren min", "1")),
        (goal2, goal("recovery-objective", "occupational", "Tilbake i deltidsjobb", "2")),
        (team, care_team)])


def meeting(*, kind: str = "network", number: str = KARI, key: str = "m-1",
            status: str = "booked", sender: str = "jaeren-dps",
            receivers: tuple[str, ...] = ("time-kommune",), patient_required: str = "required",
            with_patient: bool = True) -> JSON:
    """meeting-invitation: a meeting about Kari with her sister and the two services."""
    pat, appt, sister = urn(), urn(), urn()
    participants = [
        {"actor": {"reference": sister}, "required": "optional", "status": "needs-action"},
        {"actor": {"reference": "Organization/time-kommune"}, "required": "required",
         "status": "needs-action"},
        {"actor": {"reference": f"Organization/{sender}"}, "required": "required",
         "status": "accepted"},
    ]
    if with_patient:
        participants.insert(0, {"actor": {"reference": pat}, "required": patient_required,
                                "status": "needs-action"})
    appointment = {
        "resourceType": "Appointment", "identifier": ident(sender, "meeting", key),
        "status": status,
        "serviceType": [{"coding": [{"system": f"{BASE}/CodeSystem/meeting-type",
                                     "code": kind}]}],
        "description": "Bolig og arbeid etter utskrivning",
        "start": "2026-12-03T13:00:00+01:00", "end": "2026-12-03T14:30:00+01:00",
        "participant": participants,
    }
    relative = {"resourceType": "RelatedPerson", "identifier": ident(sender, "relative", key),
                "patient": {"reference": pat},
                "relationship": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                    "code": "SIS"}]}],
                "name": [{"family": "Nordmann", "given": ["Ingrid"]}]}
    return message("meeting-invitation", sender, list(receivers), appt,
                   [(appt, appointment), (pat, person(number)), (sister, relative)])


def answer(*, status: str = "declined", number: str = KARI, meeting_key: str = "m-1",
           organiser: str = "jaeren-dps", sender: str = "time-kommune", key: str = "a-1",
           actor: str | None = None,
           comment: str | None = "Jeg vil at boligsituasjonen tas opp.") -> JSON:
    """meeting-response: an answer to the meeting `meeting_key` of `organiser`, by default
    the patient's, sent by Time kommune on her behalf."""
    pat, resp = urn(), urn()
    body: JSON = {
        "resourceType": "AppointmentResponse", "identifier": ident(sender, "answer", key),
        "appointment": {"type": "Appointment",
                        "identifier": ident(organiser, "meeting", meeting_key)[0]},
        "actor": {"reference": actor or pat}, "participantStatus": status,
    }
    if comment:
        body["comment"] = comment
    return message("meeting-response", sender, [organiser], resp,
                   [(resp, body), (pat, person(number))])


# --- the hub ------------------------------------------------------------------------------


@pytest.fixture
def hub3(settings: Settings, database: Database) -> Iterator[dict[str, TestClient]]:
    """The story's two organisations and Klepp kommune (kommunenummer 1120), a client each."""
    with database.session(write=True) as s:
        for org_id, name, kind, orgnr in (
                ("jaeren-dps", "Jæren DPS", "mental-health-centre", "983974791"),
                ("time-kommune", "Time kommune", "municipality", "964969590"),
                ("klepp-kommune", "Klepp kommune", "municipality", KLEPP_ORGNR)):
            add_organization(s, Subject.hub_itself(), name=name, kind=kind,
                             identifier=f"{ORGNR_SYSTEM}|{orgnr}", org_id=org_id)
    with other_client(settings, database, "jaeren-dps") as dps, \
            other_client(settings, database, "time-kommune") as time, \
            other_client(settings, database, "klepp-kommune") as klepp:
        yield {"jaeren-dps": dps, "time-kommune": time, "klepp-kommune": klepp}


def post(hub: dict[str, TestClient], bundle: JSON) -> Any:
    """POST a message with a token of its sender's organisation."""
    sender = bundle["entry"][0]["resource"]["sender"]["reference"].split("/")[1]
    return hub[sender].post("/fhir/$process-message", json=bundle)


def accepted(hub: dict[str, TestClient], bundle: JSON) -> str:
    """POST a message that must be accepted; the response's diagnostics as one text."""
    r = post(hub, bundle)
    assert r.status_code == 200, r.text
    return " ".join(i["diagnostics"] for i in r.json()["entry"][1]["resource"]["issue"])


def refused(hub: dict[str, TestClient], bundle: JSON) -> list[JSON]:
    """POST a message that must be refused with 422; the OperationOutcome's issues."""
    r = post(hub, bundle)
    assert r.status_code == 422, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issues: list[JSON] = outcome["issue"]
    assert all(i["diagnostics"] and i["severity"] == "error" for i in issues)
    return issues


def found(hub: dict[str, TestClient], org: str, rtype: str, **params: str) -> list[JSON]:
    """What `org` finds of a type (its own records, and what consent discloses to it)."""
    r = hub[org].get(f"/fhir/{rtype}", params=params)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]

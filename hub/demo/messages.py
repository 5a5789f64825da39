"""Message Bundles in the shapes of CONTRACT section 4 (as in shared/examples 01-14).

Everything is deterministic given the story's anchor: ids are uuid5 of a name, times are
offsets from the anchor. So a second run of the demo builds byte-for-byte the same messages,
and the hub answers them as the repeats they are.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from hub.fhir.identifiers import FNR_SYSTEM, make_fodselsnummer
from hub.store.dates import format_instant

CS = "http://carehub.example/fhir/CodeSystem/"
SD = "http://carehub.example/fhir/StructureDefinition/"
URI = "urn:ietf:rfc:3986"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "http://carehub.example/demo")
IRCP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP"}]}
IMP = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP",
       "display": "inpatient encounter"}
ORG_NAMES = {"jaeren-dps": "Jæren DPS", "time-kommune": "Time kommune",
             "klepp-kommune": "Klepp kommune"}

Resource = dict[str, Any]


def uid(name: str) -> str:
    """A uuid that is always the same for `name`."""
    return str(uuid.uuid5(_NAMESPACE, name))


def ident(name: str) -> list[dict[str, str]]:
    """The sender's identifier of the resource called `name` in the story."""
    return [{"system": URI, "value": f"urn:uuid:{uid(name)}"}]


def by_identifier(rtype: str, name: str) -> dict[str, Any]:
    """A reference to a stored resource by the identifier it was first sent with."""
    return {"type": rtype, "identifier": ident(name)[0]}


def org(org_id: str) -> dict[str, str]:
    """A reference to a registered organisation."""
    return {"reference": f"Organization/{org_id}"}


@dataclass(frozen=True)
class Person:
    """A (synthetic) patient of the demo."""

    key: str
    given: str
    family: str
    birth: date
    gender: str
    line: str
    postal_code: str
    city: str
    municipality: str  # the organisation id of their home municipality

    @property
    def fnr(self) -> str:
        """A valid synthetic fødselsnummer (Skatteetaten's Tenor test range: month + 80)."""
        for individual in range(100, 500):
            try:
                return make_fodselsnummer(self.birth, individual, month_offset=80)
            except ValueError:
                continue
        raise ValueError(f"no fødselsnummer for {self.birth}")  # pragma: no cover

    @property
    def name(self) -> str:
        """Given and family name."""
        return f"{self.given} {self.family}"

    def resource(self) -> Resource:
        """The Patient, as every message carries it."""
        return {"resourceType": "Patient",
                "identifier": [{"system": FNR_SYSTEM, "value": self.fnr}],
                "name": [{"family": self.family, "given": [self.given]}],
                "gender": self.gender, "birthDate": self.birth.isoformat(),
                "address": [{"line": [self.line], "city": self.city,
                             "postalCode": self.postal_code,
                             "district": ORG_NAMES[self.municipality].split()[0],
                             "use": "home"}]}


class Clock:
    """Times of the story, relative to its anchor (a midnight, UTC)."""

    def __init__(self, anchor: datetime) -> None:
        self.anchor = anchor

    def at(self, days: float = 0, hours: float = 8) -> str:
        """The instant `days` from the anchor (negative: before), at `hours` UTC (by default
        08:00, the morning in Norway)."""
        return format_instant(self.anchor + timedelta(days=days, hours=hours))


class Message:
    """One message Bundle being built: a MessageHeader, then the entries added."""

    def __init__(self, name: str, event: str, sender: str, receivers: list[str],
                 sent: str) -> None:
        self.name = name
        self.entries: list[dict[str, Any]] = []
        self.focus: list[dict[str, str]] = []
        self.header: Resource = {
            "resourceType": "MessageHeader", "id": uid(f"{name}/header"),
            "eventCoding": {"system": f"{CS}message-event", "code": event},
            "source": {"name": ORG_NAMES[sender],
                       "endpoint": f"urn:carehub:organization:{sender}"},
            "sender": org(sender),
            "destination": [{"endpoint": f"urn:carehub:organization:{r}", "receiver": org(r)}
                            for r in receivers]}
        self.sent = sent

    def add(self, key: str, resource: Resource, *, focus: bool = False) -> dict[str, str]:
        """Add an entry; a reference to it (its fullUrl)."""
        url = f"urn:uuid:{uid(f'{self.name}/{key}')}"
        self.entries.append({"fullUrl": url, "resource": resource})
        if focus:
            self.focus.append({"reference": url})
        return {"reference": url}

    @property
    def header_id(self) -> str:
        """MessageHeader.id."""
        return str(self.header["id"])

    def bundle(self) -> Resource:
        """The message Bundle."""
        header = {**self.header, "focus": self.focus}
        return {"resourceType": "Bundle", "id": uid(f"{self.name}/bundle"), "type": "message",
                "timestamp": self.sent,
                "entry": [{"fullUrl": f"urn:uuid:{uid(f'{self.name}/header-entry')}",
                           "resource": header}, *self.entries]}


# --- resources ------------------------------------------------------------------------------

def consent(name: str, patient: dict[str, str], *, recipients: list[str], start: str,
            plan: bool = False) -> Resource:
    """A consent to share with `recipients` (plan: the consent to make an individual plan)."""
    category = [{"coding": [{"system": "http://loinc.org", "code": "59284-0",
                             "display": "Patient Consent"}]}]
    if plan:
        category.append({"coding": [{"system": f"{CS}consent-category",
                                     "code": "individual-plan"}]})
    return {"resourceType": "Consent", "identifier": ident(name), "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": category, "patient": patient, "dateTime": start,
            "performer": [patient], "organization": [org("jaeren-dps")],
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                       "code": "OPTIN"}]},
            "provision": {"type": "permit", "period": {"start": start},
                          "actor": [{"role": IRCP, "reference": org(r)} for r in recipients],
                          "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                 "v3-ActReason", "code": "TREAT"}]}}


def goal(name: str, patient: dict[str, str], text: str, *codes: str) -> Resource:
    """A goal the patient expressed, categorised (life-goal / recovery-objective and area)."""
    return {"resourceType": "Goal", "identifier": ident(name), "lifecycleStatus": "active",
            "category": [{"coding": [{"system": f"{CS}goal-category", "code": c}
                                     for c in codes], "text": ": ".join(codes)}],
            "description": {"text": text}, "subject": patient, "expressedBy": patient}


def encounter(name: str, patient: dict[str, str], *, start: str, end: str | None = None,
              provider: str = "jaeren-dps") -> Resource:
    """The inpatient stay at the centre (in progress, or finished at `end`)."""
    body: Resource = {"resourceType": "Encounter", "identifier": ident(name),
                      "status": "finished" if end else "in-progress", "class": IMP,
                      "subject": patient, "period": {"start": start, **({"end": end} if end
                                                                         else {})},
                      "serviceProvider": org(provider)}
    if end:
        body["hospitalization"] = {"dischargeDisposition": {"text": "home, municipal follow-up"}}
    return body


def task(name: str, code: str, patient: dict[str, str], *, status: str, focus: dict[str, Any],
         requester: str, owner: str, authored: str, period: dict[str, str],
         output: list[dict[str, Any]] | None = None, reason: str | None = None) -> Resource:
    """A Task of the discharge dialogue or a self-admission request."""
    body: Resource = {"resourceType": "Task", "identifier": ident(name), "status": status,
                      "intent": "order",
                      "code": {"coding": [{"system": f"{CS}task-code", "code": code}]},
                      "focus": focus, "for": patient, "authoredOn": authored,
                      "requester": org(requester), "owner": org(owner),
                      "restriction": {"period": period}}
    if reason:
        body["statusReason"] = {"text": reason}
    if output:
        body["output"] = output
    return body


def meeting(name: str, kind: str, theme: str, *, start: str, end: str,
            participants: list[tuple[dict[str, str], str, str]]) -> Resource:
    """A booked meeting; participants are (actor, required, status)."""
    return {"resourceType": "Appointment", "identifier": ident(name), "status": "booked",
            "serviceType": [{"coding": [{"system": f"{CS}meeting-type", "code": kind}]}],
            "description": theme, "start": start, "end": end,
            "participant": [{"actor": a, "required": r, "status": s}
                            for a, r, s in participants]}

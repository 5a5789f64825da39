"""The demo's story, told as the centre's and the municipalities' systems would tell it.

Four (synthetic) people, all dates relative to the anchor T (the midnight before the demo was
first seeded), so the coordinators' pending lists always look current:

- Kari Nordmann (Time kommune) consents to sharing with Time kommune and Jæren DPS and to an
  individual plan, which is shared with her own goals. She has a user-controlled admission
  place (self-admission agreement); she used it about six weeks ago, and her municipality has
  just asked for a new stay in two days (pending at the centre). A network meeting about work
  and daily life is booked in six days; she accepts and says what she wants raised.
- Ingrid Løvås (Time kommune) was admitted three weeks ago. The centre said she was ready for
  discharge, withdrew it when she got worse, asked again, and Time kommune accepted. She was
  discharged four days ago with suicide risk flagged and a first home visit agreed two days
  after; no contact has been reported, so her first follow-up check is overdue (due 48 h
  after discharge) and the 7- and 30-day checks are pending.
- Ola Hansen (Klepp kommune) consents to sharing with Klepp kommune; admitted ten days ago,
  the centre has just said he is ready for discharge in two days: Klepp must answer.
- Jonas Berg (Klepp kommune) has not consented: his admission notice goes to Klepp kommune on
  its statutory basis, but the invitation to a cooperation meeting is withheld.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from hub.demo.messages import (
    CS,
    SD,
    Clock,
    Message,
    Person,
    by_identifier,
    consent,
    encounter,
    goal,
    ident,
    meeting,
    org,
    task,
)

DPS, TIME, KLEPP = "jaeren-dps", "time-kommune", "klepp-kommune"

KARI = Person("kari", "Kari", "Nordmann", date(1969, 11, 13), "female", "Storgata 1", "4340",
              "Bryne", TIME)
INGRID = Person("ingrid", "Ingrid", "Løvås", date(1995, 8, 21), "female", "Hetlandsgata 12",
                "4340", "Bryne", TIME)
OLA = Person("ola", "Ola", "Hansen", date(1988, 4, 2), "male", "Kleppevegen 30", "4353",
             "Kleppe", KLEPP)
JONAS = Person("jonas", "Jonas", "Berg", date(1979, 2, 17), "male", "Orstadvegen 5", "4352",
               "Kleppe", KLEPP)
PEOPLE = (KARI, INGRID, OLA, JONAS)


@dataclass(frozen=True)
class Step:
    """One message of the story and what the hub must do with each destination."""

    sender: str
    bundle: dict[str, Any]
    expect: dict[str, str]  # receiver -> "queued" | "withheld"

    @property
    def header_id(self) -> str:
        """The message's MessageHeader.id."""
        return str(self.bundle["entry"][0]["resource"]["id"])

    @property
    def event(self) -> str:
        """The message's event code."""
        return str(self.bundle["entry"][0]["resource"]["eventCoding"]["code"])


def _msg(t: Clock, name: str, event: str, sender: str, receivers: list[str],
         days: float) -> Message:
    return Message(name, event, sender, receivers, t.at(days))


def _consent(t: Clock, who: Person, name: str, recipients: list[str], days: float, *,
             plan: bool = False) -> Message:
    m = _msg(t, name, "consent-changed", DPS, [r for r in recipients if r != DPS], days)
    p = m.add("patient", who.resource())
    m.add("consent", consent(name, p, recipients=recipients, start=t.at(days), plan=plan),
          focus=True)
    return m


def kari(t: Clock) -> Iterator[tuple[Message, dict[str, str]]]:
    """Consents, the individual plan, the self-admission place and stays, a network meeting."""
    both = {TIME: "queued"}
    yield _consent(t, KARI, "kari/consent", [TIME, DPS], -65), both
    yield _consent(t, KARI, "kari/plan-consent", [TIME, DPS], -25, plan=True), both

    m = _msg(t, "kari/plan", "care-plan-shared", DPS, [TIME], -21)
    p = m.add("patient", KARI.resource())
    goals = [m.add("goal-work", goal("kari/goal-work", p, "Komme tilbake i deltidsjobb i "
                                     "butikken innen sommeren", "recovery-objective",
                                     "occupational")),
             m.add("goal-sister", goal("kari/goal-sister", p, "Ha kontakt med søsteren min "
                                       "hver uke", "recovery-objective", "relational")),
             m.add("goal-home", goal("kari/goal-home", p, "Bo for meg selv og klare "
                                     "hverdagen", "life-goal", "personal"))]
    team = m.add("team", {
        "resourceType": "CareTeam", "identifier": ident("kari/team"), "status": "active",
        "subject": p,
        "participant": [{"role": [{"text": "koordinator"}], "member": org(TIME)},
                        {"role": [{"text": "behandler"}], "member": org(DPS)}]})
    m.add("plan", {
        "resourceType": "CarePlan", "identifier": ident("kari/plan"),
        "extension": [{"url": f"{SD}plan-participation", "valueCode": "took-part"}],
        "status": "active", "intent": "plan", "category": [{"text": "individuell plan"}],
        "title": "Individuell plan", "subject": p,
        "period": {"start": t.at(-21), "end": t.at(344)}, "created": t.at(-21),
        "author": org(DPS), "goal": goals, "careTeam": [team],
        "activity": [
            {"detail": {"status": "in-progress", "description": "Samtaler med behandler "
                        "annenhver uke", "performer": [org(DPS)]}},
            {"detail": {"status": "scheduled", "description": "Arbeidstrening via NAV, "
                        "avtalt med kommunens koordinator", "performer": [org(TIME)]}}],
        "note": [{"text": f"Revideres innen {t.at(160)[:10]}."}]}, focus=True)
    yield m, both

    m = _msg(t, "kari/agreement", "self-admission-agreement", DPS, [TIME], -60)
    p = m.add("patient", KARI.resource())
    unit = m.add("unit", {
        "resourceType": "Location", "identifier": ident("dps/unit"), "status": "active",
        "name": "Døgnenhet, Jæren DPS", "managingOrganization": org(DPS),
        "extension": [{"url": f"{SD}user-controlled-beds", "valueInteger": 2}]})
    m.add("agreement", {
        "resourceType": "ServiceRequest", "identifier": ident("kari/agreement"),
        "extension": [{"url": f"{SD}self-admission-terms", "extension": [
            {"url": "maxDaysPerStay", "valueInteger": 5},
            {"url": "minDaysBetweenStays", "valueInteger": 14}]}],
        "status": "active", "intent": "order",
        "code": {"coding": [{"system": f"{CS}service-code", "code": "user-controlled-admission"}],
                 "text": "brukerstyrt innleggelse"},
        "subject": p, "occurrencePeriod": {"start": t.at(-60), "end": t.at(305)},
        "authoredOn": t.at(-60), "requester": org(DPS), "performer": [org(DPS)],
        "locationReference": [unit]}, focus=True)
    yield m, both

    agreement = by_identifier("ServiceRequest", "kari/agreement")
    stay = {"start": t.at(-41, 10), "end": t.at(-38, 10)}
    yield (_self_admission(t, "kari/stay-1", "requested", stay, agreement, sent=-42, asked=-42),
           {DPS: "queued"})
    yield (_self_admission(t, "kari/stay-1", "accepted", stay, agreement, sent=-41.75,
                           asked=-42), both)

    m = _msg(t, "kari/meeting", "meeting-invitation", DPS, [TIME], -3)
    p = m.add("patient", KARI.resource())
    sister = m.add("sister", {
        "resourceType": "RelatedPerson", "identifier": ident("kari/sister"), "patient": p,
        "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "v3-RoleCode", "code": "SIS",
                                      "display": "sister"}]}],
        "name": [{"family": "Nordmann", "given": ["Marit"]}]})
    m.add("meeting", meeting("kari/meeting", "network",
                             "Nettverksmøte: arbeid og hverdag etter oppholdet",
                             start=t.at(6, 10), end=t.at(6, 11.5),
                             participants=[(p, "required", "needs-action"),
                                           (sister, "optional", "needs-action"),
                                           (org(DPS), "required", "accepted")]), focus=True)
    yield m, both

    m = _msg(t, "kari/meeting-answer", "meeting-response", TIME, [DPS], -2)
    p = m.add("patient", KARI.resource())
    m.add("answer", {
        "resourceType": "AppointmentResponse", "identifier": ident("kari/meeting-answer"),
        "appointment": by_identifier("Appointment", "kari/meeting"), "actor": p,
        "participantStatus": "accepted",
        "comment": "Jeg kommer, og søsteren min blir med. Jeg vil snakke om å begynne å "
                   "jobbe igjen."}, focus=True)
    yield m, {DPS: "queued"}

    stay = {"start": t.at(2, 10), "end": t.at(5, 10)}
    yield (_self_admission(t, "kari/stay-2", "requested", stay, agreement, sent=-0.75,
                           asked=-0.75), {DPS: "queued"})


def _self_admission(t: Clock, name: str, status: str, stay: dict[str, str],
                    agreement: dict[str, Any], *, sent: float, asked: float) -> Message:
    """The municipality's request for a stay (requested) or the centre's answer (accepted)."""
    requested = status == "requested"
    event = "self-admission-request" if requested else "self-admission-response"
    sender, receiver = (TIME, DPS) if requested else (DPS, TIME)
    m = _msg(t, f"{name}/{status}", event, sender, [receiver], sent)
    p = m.add("patient", KARI.resource())
    output = None if requested else [{"type": {"text": "arrival"},
                                      "valueDateTime": stay["start"]}]
    m.add("task", task(name, "self-admission-request", p, status=status, focus=agreement,
                       requester=TIME, owner=DPS, authored=t.at(asked), period=stay,
                       output=output), focus=True)
    return m


def _discharge_dialogue(t: Clock, who: Person, name: str, municipality: str, *,
                        planned: float, sent: float, status: str = "requested",
                        reason: str | None = None) -> Message:
    """ready-for-discharge (requested), its withdrawal (cancelled), or the municipality's
    answer (accepted / rejected)."""
    events = {"requested": "ready-for-discharge", "cancelled": "ready-for-discharge-withdrawn"}
    event = events.get(status, "discharge-readiness-response")
    from_centre = status in events
    sender, receiver = (DPS, municipality) if from_centre else (municipality, DPS)
    m = _msg(t, f"{name}/{status}", event, sender, [receiver], sent)
    p = m.add("patient", who.resource())
    stay = f"{who.key}/stay"
    focus: dict[str, Any] = by_identifier("Encounter", stay)
    if status == "requested":
        focus = m.add("encounter", encounter(stay, p, start=t.at(_ADMITTED[who.key])),
                      focus=True)
    output = ([{"type": {"text": "can receive from"}, "valueDateTime": t.at(planned)}]
              if status == "accepted" else None)
    authored = sent if status == "requested" else _ASKED[name]
    m.add("task", task(name, "discharge-readiness", p, status=status, focus=focus,
                       requester=DPS, owner=municipality, authored=t.at(authored),
                       period={"start": t.at(planned)}, output=output, reason=reason),
          focus=True)
    return m


_ADMITTED = {"ingrid": -21.0, "ola": -10.0, "jonas": -3.0}
_ASKED = {"ingrid/ready-1": -9.0, "ingrid/ready-2": -7.0, "ola/ready": -0.75}


def _admission(t: Clock, who: Person, municipality: str) -> Message:
    m = _msg(t, f"{who.key}/admission", "admission-notice", DPS, [municipality],
             _ADMITTED[who.key])
    p = m.add("patient", who.resource())
    m.add("encounter", encounter(f"{who.key}/stay", p, start=t.at(_ADMITTED[who.key])),
          focus=True)
    return m


def ingrid(t: Clock) -> Iterator[tuple[Message, dict[str, str]]]:
    """Admission, the discharge dialogue (withdrawn once), discharge with follow-up."""
    to_time, to_dps = {TIME: "queued"}, {DPS: "queued"}
    yield _consent(t, INGRID, "ingrid/consent", [TIME, DPS], -25), to_time
    yield _admission(t, INGRID, TIME), to_time
    yield _discharge_dialogue(t, INGRID, "ingrid/ready-1", TIME, planned=-6, sent=-9), to_time
    yield _discharge_dialogue(t, INGRID, "ingrid/ready-1", TIME, planned=-6, sent=-8,
                              status="cancelled"), to_time
    yield _discharge_dialogue(t, INGRID, "ingrid/ready-2", TIME, planned=-4, sent=-7), to_time
    yield _discharge_dialogue(t, INGRID, "ingrid/ready-2", TIME, planned=-4, sent=-6.75,
                              status="accepted"), to_dps

    discharged = -4.0
    m = _msg(t, "ingrid/discharge", "discharge-notice", DPS, [TIME], discharged)
    p = m.add("patient", INGRID.resource())
    m.add("encounter", encounter("ingrid/stay", p, start=t.at(_ADMITTED["ingrid"]),
                                 end=t.at(discharged)), focus=True)
    m.add("follow-up", {
        "resourceType": "CarePlan", "identifier": ident("ingrid/follow-up"),
        "status": "active", "intent": "plan",
        "category": [{"text": "follow-up plan after discharge"}],
        "title": "Oppfølgingsplan etter utskrivning", "subject": p,
        "period": {"start": t.at(discharged)}, "created": t.at(discharged - 1),
        "author": org(DPS),
        "activity": [{"detail": {"status": "scheduled", "description": "Første hjemmebesøk "
                                 "av psykisk helsetjeneste i Time kommune",
                                 "scheduledPeriod": {"start": t.at(discharged + 2)},
                                 "performer": [org(TIME)]}}]}, focus=True)
    m.add("flag", {
        "resourceType": "Flag", "identifier": ident("ingrid/suicide-risk"), "status": "active",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                            "flag-category", "code": "clinical",
                                  "display": "Clinical"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "225444004",
                             "display": "At risk for suicide"}], "text": "suicide risk"},
        "subject": p, "period": {"start": t.at(discharged)}, "author": org(DPS)}, focus=True)
    yield m, to_time


def ola(t: Clock) -> Iterator[tuple[Message, dict[str, str]]]:
    """Consent, admission, and a ready-for-discharge Klepp kommune has yet to answer."""
    to_klepp = {KLEPP: "queued"}
    yield _consent(t, OLA, "ola/consent", [KLEPP, DPS], -12), to_klepp
    yield _admission(t, OLA, KLEPP), to_klepp
    yield _discharge_dialogue(t, OLA, "ola/ready", KLEPP, planned=2, sent=-0.75), to_klepp


def jonas(t: Clock) -> Iterator[tuple[Message, dict[str, str]]]:
    """No consent: the admission goes on its statutory basis, the meeting does not."""
    yield _admission(t, JONAS, KLEPP), {KLEPP: "queued"}
    m = _msg(t, "jonas/meeting", "meeting-invitation", DPS, [KLEPP], -1)
    p = m.add("patient", JONAS.resource())
    m.add("meeting", meeting("jonas/meeting", "cooperation",
                             "Samarbeidsmøte: bolig og oppfølging etter utskrivning",
                             start=t.at(4, 13), end=t.at(4, 14),
                             participants=[(p, "required", "needs-action"),
                                           (org(DPS), "required", "accepted")]), focus=True)
    yield m, {KLEPP: "withheld"}


CHAPTERS: tuple[Callable[[Clock], Iterator[tuple[Message, dict[str, str]]]], ...] = (
    kari, ingrid, ola, jonas)


def story(anchor: datetime) -> list[Step]:
    """Every message of the story, in the order the systems send them."""
    t = Clock(anchor)
    steps = [Step(str(m.header["sender"]["reference"]).split("/")[1], m.bundle(), expect)
             for chapter in CHAPTERS for m, expect in chapter(t)]
    return sorted(steps, key=lambda s: str(s.bundle["timestamp"]))

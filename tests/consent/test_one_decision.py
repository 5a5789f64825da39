"""One decision (CONTRACT section 5): for any consents, denies, periods, custodians, events
and receivers, `$disclosure-check`, routing and reads give the same answer.

Hypothesis draws the patient's consents (recorded by the centre or by another organisation,
permits and opt-outs, nested denies, classes, periods past, present and future, the
individual-plan category) and a question; the three ways in are asked against the same
stored consents, in one transaction that is rolled back after each example.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.auth.subject import Subject
from hub.config import Settings
from hub.consent import service as consent_service
from hub.consent.events import EVENT_CONTENT
from hub.consent.gate import Gate, MessageQuestion
from hub.db.engine import Database
from hub.messaging.routing import decide_delivery
from hub.store import service
from tests.factories import encounter, fnr, patient

CENTRE, TIME, KLEPP = "jaeren-dps", "time-kommune", "klepp-kommune"
IRCP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP"}]}
PERIODS = {"none": None, "now": {"start": "2020-01-01T00:00:00Z"},
           "past": {"start": "2020-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"},
           "future": {"start": "2999-01-01T00:00:00Z"}}
TYPES = ["Encounter", "Patient", "CarePlan", "Task", "Appointment"]
EVENTS = sorted(e for e in EVENT_CONTENT if e not in ("consent-changed", "follow-up-overdue"))


class _RollbackError(Exception):
    """Leave nothing of one example behind."""


def _actors(orgs: list[str]) -> dict[str, Any]:
    """A provision's `actor` naming `orgs`; none at all for no organisation (FHIR JSON has
    no empty arrays)."""
    if not orgs:
        return {}
    return {"actor": [{"role": IRCP, "reference": {"reference": f"Organization/{o}"}}
                      for o in orgs]}


@st.composite
def consents(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["permit", "deny"]))
    provision: dict[str, Any] = {"type": kind, **_actors(draw(st.lists(st.sampled_from(
        [TIME, KLEPP, CENTRE]), max_size=2, unique=True)))}
    period = PERIODS[draw(st.sampled_from(sorted(PERIODS)))]
    if period:
        provision["period"] = period
    if draw(st.booleans()):
        provision["class"] = [{"system": "http://hl7.org/fhir/resource-types", "code": t}
                              for t in draw(st.lists(st.sampled_from(TYPES), min_size=1,
                                                     max_size=3, unique=True))]
    if kind == "permit" and draw(st.booleans()):
        nested: dict[str, Any] = {"type": "deny", **_actors(draw(st.lists(
            st.sampled_from([TIME, KLEPP]), max_size=1)))}
        if draw(st.booleans()):
            nested["class"] = [{"system": "http://hl7.org/fhir/resource-types",
                                "code": draw(st.sampled_from(TYPES))}]
        provision["provision"] = [nested]
    category = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]
    if draw(st.booleans()):
        category.append({"coding": [{
            "system": "http://carehub.example/fhir/CodeSystem/consent-category",
            "code": "individual-plan"}]})
    return {
        "custodian": draw(st.sampled_from([CENTRE, CENTRE, KLEPP])),
        "status": draw(st.sampled_from(["active", "active", "inactive"])),
        "dateTime": f"2026-0{draw(st.integers(1, 9))}-01T00:00:00Z",
        "category": category, "provision": provision}


def _store_consent(s: Any, patient_id: str, drawn: dict[str, Any]) -> None:
    custodian = drawn["custodian"]
    body = {"resourceType": "Consent", "status": drawn["status"],
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                            "consentscope", "code": "patient-privacy"}]},
            "category": drawn["category"], "patient": {"reference": f"Patient/{patient_id}"},
            "dateTime": drawn["dateTime"],
            "organization": [{"reference": f"Organization/{custodian}"}],
            "provision": drawn["provision"]}
    service.create(s, Subject.working_for(custodian, "test"), resource=body)


def _permits(decision: str) -> bool:
    return decision != "deny"


@pytest.fixture
def records(database: Database) -> dict[str, str]:
    """The centre's patient, a stay and an individual plan, stored once per test."""
    centre = Subject.working_for(CENTRE, "test")
    with database.session(write=True) as s:
        pid = service.create(s, centre, resource=patient(fnr(date(1969, 11, 13)))).stored.id
        enc = service.create(s, centre, resource=encounter(f"Patient/{pid}")).stored.id
        plan = service.create(s, centre, resource={
            "resourceType": "CarePlan", "status": "active", "intent": "plan",
            "category": [{"text": "individuell plan"}],
            "subject": {"reference": f"Patient/{pid}"}}).stored.id
    return {"patient": pid, "encounter": enc, "plan": plan}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(drawn=st.lists(consents(), max_size=3),
       event=st.sampled_from([*EVENTS, None]),
       receiver=st.sampled_from([TIME, KLEPP]))
def test_disclosure_check_routing_and_reads_agree(
        database: Database, settings: Settings, records: dict[str, str],
        drawn: list[dict[str, Any]], event: str | None, receiver: str) -> None:
    with pytest.raises(_RollbackError):
        _ask(database, settings, records, drawn, event, receiver)


def _ask(database: Database, settings: Settings, records: dict[str, str],
         drawn: list[dict[str, Any]], event: str | None, receiver: str) -> None:
    """Store the drawn consents, ask the three ways, compare; roll it all back."""
    pid = records["patient"]
    sender = Subject("client", "centre-ehr", CENTRE, frozenset({"system/*.*"}))
    reader = Subject("client", f"{receiver}-ehr", receiver, frozenset({"system/*.*"}))
    with database.session(write=True) as s:
        for c in drawn:
            _store_consent(s, pid, c)
        types = EVENT_CONTENT[event] if event else frozenset({"Patient"})
        routed = decide_delivery(s, settings, MessageQuestion(
            event=event, sender_org=CENTRE, patient_id=pid, content_types=types,
            receiver_org=receiver, individual_plan=event == "care-plan-shared"))
        checked = consent_service.disclosure_check(
            s, sender, settings, patient_id=pid, recipient=f"Organization/{receiver}",
            event=event)
        said = next(p["valueCode"] for p in checked["parameter"] if p["name"] == "decision")
        assert said == ("deny" if routed.decision == "deny" else "permit"), (routed, checked)
        # reads: the receiver reading the centre's records, as routing decides a message
        # that carries just that record and no event
        gate = Gate(s, reader)
        for rtype, rid, plan in (("Encounter", records["encounter"], False),
                                 ("CarePlan", records["plan"], True),
                                 ("Patient", pid, False)):
            alone = decide_delivery(s, settings, MessageQuestion(
                event=None, sender_org=CENTRE, patient_id=pid,
                content_types=frozenset({rtype}), receiver_org=receiver,
                individual_plan=plan))
            can_read = _readable(s, reader, rtype, rid)
            assert can_read == _permits(alone.decision), (rtype, alone, drawn)
            assert can_read == gate.can_see(_row(s, rtype, rid))
        raise _RollbackError


def _readable(s: Any, who: Subject, rtype: str, rid: str) -> bool:
    from hub.errors import NotFoundError
    try:
        service.read(s, who, resource_type=rtype, resource_id=rid)
    except NotFoundError:
        return False
    return True


def _row(s: Any, rtype: str, rid: str) -> Any:
    from hub.store import repository
    return repository.get_current(s, rtype, rid)

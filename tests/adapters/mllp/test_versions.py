"""A11, A13 and A08 over MLLP: new versions of the stay and of the person, by the rules of
the FHIR events they become (admission-cancelled, discharge-cancelled, patient-updated)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from adapters.mllp.bundle import visit_system
from adapters.mllp.simulator import adt
from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.fhir.datetimes import parse
from hub.fhir.identifiers import FNR_SYSTEM, ORGNR_SYSTEM
from hub.orgs.service import add_organization
from hub.store import service
from hub.store.query import SearchRequest
from tests.adapters.mllp.acks import read
from tests.adapters.mllp.conftest import FNR, Listener, stay

HUB = Subject.hub_itself()
Listen = Callable[..., Listener]


def _search(database: Database, rtype: str, *params: tuple[str, str]) -> list[Any]:
    with database.session(write=False) as s:
        found, _, _ = service.search(s, HUB, request=SearchRequest(rtype, list(params),
                                                                   count=50))
    return found


def _stay(database: Database, visit: str) -> Any:
    found = _search(database, "Encounter", ("identifier", f"{visit_system('jaeren-dps')}|{visit}"))
    assert len(found) == 1
    return found[0]


def _checks(database: Database) -> dict[str, tuple[str, Any]]:
    out = {}
    for task in _search(database, "Task", ("code", "follow-up-check")):
        body = task.body or {}
        due = parse(body["restriction"]["period"]["end"])
        assert due is not None
        out[body["identifier"][0]["value"].rsplit("/", 1)[1]] = (body["status"], due.low)
    return out


def test_a13_cancels_the_discharge_and_its_checks_and_a_new_a03_schedules_them_again(
        listen: Listen, database: Database) -> None:
    the_stay = stay("V13", days=2)
    listener = listen()
    with listener.pas() as pas:
        assert read(pas.send(adt(the_stay, "A01", "V13-1"))).code == "AA"
        assert read(pas.send(adt(the_stay, "A03", "V13-2"))).code == "AA"
        assert {s for s, _ in _checks(database).values()} == {"requested"}
        ack = read(pas.send(adt(the_stay, "A13", "V13-3")))
        assert ack.code == "AA", ack.text
        encounter = _stay(database, "V13")
        assert (encounter.version_id, encounter.body["status"]) == (3, "in-progress")
        assert "end" not in encounter.body["period"]
        assert {s for s, _ in _checks(database).values()} == {"cancelled"}
        # discharged again a day later: the checks count from the new discharge
        later = replace(the_stay, discharged=the_stay.discharged + timedelta(days=1))
        assert read(pas.send(adt(later, "A03", "V13-4"))).code == "AA"
    checks = _checks(database)
    assert checks["first-contact"] == ("requested", later.discharged + timedelta(hours=72))
    assert {s for s, _ in checks.values()} == {"requested"}


def test_a11_cancels_the_admission_and_goes_where_the_admission_went(
        listen: Listen, database: Database) -> None:
    the_stay = stay("V11")
    listener = listen()
    with listener.pas() as pas:
        assert read(pas.send(adt(the_stay, "A01", "V11-1"))).code == "AA"
        ack = read(pas.send(adt(the_stay, "A11", "V11-2")))
    assert (ack.code, ack.text) == ("AA", "Accepted: 1 queued, 0 withheld.")
    encounter = _stay(database, "V11")
    assert (encounter.version_id, encounter.body["status"]) == (2, "cancelled")


def test_a08_from_the_owner_updates_the_patient(listen: Listen, database: Database) -> None:
    the_stay = stay("V8")
    listener = listen()
    with listener.pas() as pas:
        assert read(pas.send(adt(the_stay, "A01", "V8-1"))).code == "AA"
        ack = read(pas.send(adt(replace(the_stay, street="Nygata 3"), "A08", "V8-2")))
    assert ack.code == "AA", ack.text
    assert _address(database) == ["Nygata 3"]


def test_a08_from_another_centre_leaves_the_patient_unchanged(
        listen: Listen, database: Database) -> None:
    with database.session(write=True) as s:
        add_organization(s, HUB, name="Sola DPS", kind="mental-health-centre",
                         identifier=f"{ORGNR_SYSTEM}|974633574", org_id="sola-dps")
    the_stay = stay("V8")
    listener = listen()
    with listener.pas() as pas:
        assert read(pas.send(adt(the_stay, "A01", "V8-1"))).code == "AA"
        other = read(pas.send(adt(replace(the_stay, facility="974633574", street="Feil 9"),
                                  "A08", "SOLA-1")))
    assert other.code == "AA"
    assert _address(database) == ["Storgata 1"]


def _address(database: Database) -> list[str]:
    patients = _search(database, "Patient", ("identifier", f"{FNR_SYSTEM}|{FNR}"))
    assert len(patients) == 1
    return list(patients[0].body["address"][0]["line"])

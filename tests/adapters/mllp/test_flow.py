"""A stay from the PAS simulator through the hub: the A01 reaches the municipality's
receiving system as an admission-notice, the A03 schedules the follow-up checks exactly as
a FHIR discharge-notice does, and a hub without its database answers AR."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from adapters.mllp.bundle import visit_system
from adapters.mllp.intake import Intake
from adapters.mllp.simulator import adt
from hub.audit.models import AuditRecordRow
from hub.audit.recorder import Auditor
from hub.audit.signing import Signer
from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.engine import Database
from hub.delivery.dispatcher import sweep
from hub.fhir.datetimes import parse
from hub.store import service
from hub.store.query import SearchRequest
from tests.adapters.mllp.acks import kept, read
from tests.adapters.mllp.conftest import Listener, register, stay
from tests.delivery.conftest import wait_for
from tests.delivery.receivers import Receiver

HUB = Subject.hub_itself()
EVENT = "http://carehub.example/fhir/CodeSystem/message-event"


@pytest.fixture
def municipality() -> Iterator[Receiver]:
    r = Receiver("time-kommune").start()
    yield r
    r.stop()


@pytest.fixture
def hub_with_receiver(settings: Settings, database: Database,
                      municipality: Receiver) -> Iterator[Listener]:
    register(database, endpoint=municipality.url)
    intake = Intake(database, settings, Auditor(Signer.from_file(settings.audit_key_file),
                                                base_url=settings.fhir_base))
    listener = Listener(intake)
    yield listener
    listener.stop()


def test_an_a01_reaches_the_municipality_as_an_admission_notice(
        hub_with_receiver: Listener, municipality: Receiver, settings: Settings,
        database: Database) -> None:
    the_stay = stay("STAY-1")
    with hub_with_receiver.pas() as pas:
        ack = read(pas.send(adt(the_stay, "A01", "ADMIT-1")))
    assert ack.code == "AA", ack.text
    wait_for(lambda: (sweep(database, settings), bool(municipality.accepted))[1],
             what="the admission notice to reach Time kommune")
    got = municipality.accepted[0].bundle
    header = got["entry"][0]["resource"]
    assert header["eventCoding"] == {"system": EVENT, "code": "admission-notice"}
    assert header["sender"] == {"reference": "Organization/jaeren-dps"}
    resources = {e["resource"]["resourceType"]: e["resource"] for e in got["entry"][1:]}
    encounter = resources["Encounter"]
    assert encounter["status"] == "in-progress"
    assert encounter["identifier"] == [{"system": visit_system("jaeren-dps"),
                                        "value": "STAY-1"}]
    assert parse(encounter["period"]["start"]).low == the_stay.admitted  # type: ignore[union-attr]
    assert resources["Patient"]["identifier"][0]["value"] == the_stay.fnr
    # audited as the centre's $process-message, like the API route
    with database.session(write=False) as s:
        agents = set(s.scalars(select(AuditRecordRow.agent)))
    assert "Client/mllp:983974791" in agents


def test_an_a03_schedules_the_follow_up_checks_of_a_discharge_notice(
        hub_with_receiver: Listener, database: Database) -> None:
    the_stay = stay("STAY-2")
    with hub_with_receiver.pas() as pas:
        assert read(pas.send(adt(the_stay, "A01", "ADMIT-2"))).code == "AA"
        ack = read(pas.send(adt(the_stay, "A03", "DISCHARGE-2")))
    assert ack.code == "AA", ack.text
    with database.session(write=False) as s:
        tasks, _, _ = service.search(s, HUB, request=SearchRequest(
            "Task", [("code", "follow-up-check")], count=10))
        encounters, _, _ = service.search(s, HUB, request=SearchRequest(
            "Encounter", [("identifier", f"{visit_system('jaeren-dps')}|STAY-2")], count=5))
    assert len(encounters) == 1  # the A01 and the A03 are versions of one stay
    encounter = encounters[0]
    assert encounter.version_id == 2
    assert (encounter.body or {})["status"] == "finished"
    assert discharged_checks(tasks) == [the_stay.discharged + timedelta(hours=72),
                                        the_stay.discharged + timedelta(days=7),
                                        the_stay.discharged + timedelta(days=30)]
    for task in tasks:
        body = task.body or {}
        # no consent of the patient names Time kommune, so the discharge is withheld from it
        # and the checks are the centre's own (hub/workflows/discharge.py)
        assert body["owner"] == {"reference": "Organization/jaeren-dps"}
        assert body["focus"] == {"reference": f"Encounter/{encounter.id}"}


def discharged_checks(tasks: list[object]) -> list[object]:
    dues = []
    for task in tasks:
        body = getattr(task, "body", None) or {}
        found = parse(body["restriction"]["period"]["end"])
        assert found is not None
        dues.append(found.low)
    return sorted(dues)


def _unreachable(settings: Settings) -> str:
    if settings.database_url.startswith("sqlite"):
        return "sqlite:////nonexistent-carehub-dir/hub.db"
    return "postgresql+psycopg://carehub@127.0.0.1:1/carehub"


def test_without_its_database_the_hub_answers_ar_and_later_takes_the_message(
        settings: Settings, database: Database, listen: Callable[..., Listener]) -> None:
    """AR means "not now": the same message sent again once the database is back is taken."""
    down = Database.connect(settings, _unreachable(settings))
    auditor = Auditor(Signer.from_file(settings.audit_key_file), base_url=settings.fhir_base)
    listener = Listener(Intake(down, settings, auditor))
    message = adt(stay(), "A01", "WHILE-DOWN")
    try:
        with listener.pas() as pas:
            ack = read(pas.send(message))
    finally:
        listener.stop()
        down.dispose()
    assert (ack.code, ack.control_id, ack.error) == ("AR", "WHILE-DOWN", "207")
    assert "send the message again later" in ack.text
    up = listen()  # the same hub with its database (the `listen` fixture registered the orgs)
    with up.pas() as pas:
        assert read(pas.send(message)).code == "AA"
    assert kept(database).messages == 1

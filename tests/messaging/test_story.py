"""The shared example story (shared/examples 01-15), posted in order to a fresh hub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.engine import Database
from hub.orgs.service import add_organization
from tests.access_clients import other_client
from tests.conftest import SHARED

EXAMPLES = sorted((SHARED / "examples").glob("[0-9][0-9]-*.json"))
ORGNR = "urn:oid:2.16.578.1.12.4.1.4.101"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def register_story_organizations(database: Database, *, time_endpoint: str | None = None,
                                 klepp: bool = False) -> None:
    """The two organisations of the examples' README (Time kommune with an Endpoint at
    `time_endpoint`), and with `klepp` a third municipality named in nothing."""
    with database.session(write=True) as s:
        add_organization(s, Subject.hub_itself(), name="Jæren DPS",
                         kind="mental-health-centre", identifier=f"{ORGNR}|983974791",
                         org_id="jaeren-dps")
        add_organization(s, Subject.hub_itself(), name="Time kommune", kind="municipality",
                         identifier=f"{ORGNR}|964969590", org_id="time-kommune",
                         endpoint=time_endpoint)
        if klepp:
            add_organization(s, Subject.hub_itself(), name="Klepp kommune",
                             kind="municipality", identifier=f"{ORGNR}|964969591",
                             org_id="klepp-kommune")


@pytest.fixture
def hub(settings: Settings, database: Database) -> Iterator[dict[str, TestClient]]:
    """A fresh hub with the two organisations of the examples' README, one client each."""
    register_story_organizations(database)
    with other_client(settings, database, "jaeren-dps") as dps, \
            other_client(settings, database, "time-kommune") as time:
        yield {"jaeren-dps": dps, "time-kommune": time}


def post(hub: dict[str, TestClient], message: dict[str, Any]) -> Any:
    sender = message["entry"][0]["resource"]["sender"]["reference"].split("/")[1]
    return hub[sender].post("/fhir/$process-message", json=message)


def test_examples_are_numbered_1_to_16() -> None:
    assert [p.name[:2] for p in EXAMPLES] == [f"{i:02d}" for i in range(1, 17)]


def test_story_is_accepted_in_order(hub: dict[str, TestClient]) -> None:
    for path in EXAMPLES[:15]:
        message = load(path)
        r = post(hub, message)
        assert r.status_code == 200, f"{path.name}: {r.text}"
        answer = r.json()
        header = answer["entry"][0]["resource"]
        assert header["resourceType"] == "MessageHeader"
        assert header["response"]["identifier"] == message["entry"][0]["resource"]["id"]
        assert header["response"]["code"] == "ok"
        outcome = answer["entry"][1]["resource"]
        assert outcome["resourceType"] == "OperationOutcome"
        if not message["entry"][0]["resource"].get("response"):
            n = len(message["entry"][0]["resource"]["destination"])
            per_destination = [i for i in outcome["issue"] if "Organization/" in i["diagnostics"]
                               and ("Queued" in i["diagnostics"]
                                    or "Withheld" in i["diagnostics"])]
            assert len(per_destination) == n, outcome


def test_story_effects(hub: dict[str, TestClient]) -> None:
    answers = {p.name[:2]: post(hub, load(p)).json() for p in EXAMPLES[:15]}

    def said(number: str) -> str:
        return " ".join(i["diagnostics"] for i in answers[number]["entry"][1]["resource"]["issue"])

    # Every message of the story reaches its receivers (CONTRACT section 5)
    for number in [f"{n:02d}" for n in range(1, 15)]:
        assert "Withheld" not in said(number), (number, said(number))
    # 01: the consent names Time kommune: delivered on the consent itself
    assert "Queued for Organization/time-kommune" in said("01")
    # 02: the individual plan: 01 is the patient's consent to it (category individual-plan),
    # recorded by the plan's author, and it permits Time kommune
    assert "Queued for Organization/time-kommune" in said("02")
    # 03: the admission notice has a statutory basis
    assert "Queued for Organization/time-kommune" in said("03")
    # 05, 07, 12, 14: the municipality's answers go back to the centre under `reply`,
    # although no consent names the centre as receiver
    for number in ("05", "07", "12", "14"):
        assert "Queued for Organization/jaeren-dps" in said(number), said(number)
        assert "legal basis reply" in said(number)
    # one Patient, matched by fødselsnummer across all messages and both senders
    dps = hub["jaeren-dps"]
    patients = dps.get("/fhir/Patient", params={
        "identifier": "urn:oid:2.16.578.1.12.4.1.4.1|13116900216"}).json()["entry"]
    assert len(patients) == 1
    # the discharge-readiness Task was sent 3 times (09, 10, 11 is a new one; 12 answers 11)
    tasks = dps.get("/fhir/Task", params={"code": "discharge-readiness"}).json()["entry"]
    statuses = sorted(e["resource"]["status"] for e in tasks)
    assert "accepted" in statuses
    assert "cancelled" in statuses


def test_same_message_twice_answers_the_same_and_changes_nothing(
        hub: dict[str, TestClient]) -> None:
    message = load(EXAMPLES[0])
    first = post(hub, message)
    again = post(hub, message)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    consents = hub["jaeren-dps"].get("/fhir/Consent").json()["entry"]
    assert len(consents) == 1
    assert consents[0]["resource"]["meta"]["versionId"] == "1"


def test_same_id_other_content_is_409(hub: dict[str, TestClient]) -> None:
    message = load(EXAMPLES[0])
    assert post(hub, message).status_code == 200
    changed = json.loads(json.dumps(message))
    changed["entry"][1]["resource"]["status"] = "inactive"
    r = post(hub, changed)
    assert r.status_code == 409
    assert r.json()["resourceType"] == "OperationOutcome"


def test_sender_must_be_the_callers_organisation(hub: dict[str, TestClient]) -> None:
    message = load(EXAMPLES[0])  # sent by jaeren-dps
    r = hub["time-kommune"].post("/fhir/$process-message", json=message)
    assert r.status_code == 403
    assert hub["jaeren-dps"].get("/fhir/Consent").json()["entry"] == []


def test_invalid_message_is_422_and_nothing_is_kept(hub: dict[str, TestClient]) -> None:
    message = load(EXAMPLES[12])  # discharge-notice
    for entry in message["entry"]:
        if entry["resource"]["resourceType"] == "Encounter":
            entry["resource"]["period"].pop("end", None)
    r = post(hub, message)
    assert r.status_code == 422, r.text
    assert "period.end" in r.text
    assert hub["jaeren-dps"].get("/fhir/Encounter").json()["entry"] == []
    assert hub["jaeren-dps"].get("/fhir/Patient").json()["entry"] == []


def test_unparsable_is_400(hub: dict[str, TestClient]) -> None:
    r = hub["jaeren-dps"].post("/fhir/$process-message", content=b"{not json")
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"

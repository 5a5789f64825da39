"""$process-message: duplicates racing, revocation withdrawing pending deliveries."""

from __future__ import annotations

import copy
import threading
import uuid
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.db.engine import Database
from hub.messaging.models import DeliveryRow, MessageRow
from tests.messaging.test_story import EXAMPLES, hub, load, post  # noqa: F401 (fixture)


def _deliveries(database: Database) -> dict[str, list[tuple[str, str]]]:
    with database.session(write=False) as s:
        rows = s.execute(select(MessageRow.event, DeliveryRow.receiver_org, DeliveryRow.status)
                         .join(DeliveryRow, DeliveryRow.message_id == MessageRow.id)
                         .order_by(DeliveryRow.id)).all()
    out: dict[str, list[tuple[str, str]]] = {}
    for event, receiver, status in rows:
        out.setdefault(event, []).append((receiver, status))
    return out


def test_two_identical_messages_at_once_have_one_effect(hub: dict[str, TestClient],  # noqa: F811
                                                        live_url: str,
                                                        database: Database) -> None:
    message = load(EXAMPLES[0])
    token = hub["jaeren-dps"].headers["Authorization"]
    barrier = threading.Barrier(6)
    answers: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(base_url=live_url, timeout=60) as http:
            barrier.wait()
            answers.append(http.post("/fhir/$process-message", json=message, headers={
                "Authorization": token, "Content-Type": "application/fhir+json"}))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert len({a.text for a in answers}) == 1  # every caller gets the first answer
    with database.session(write=False) as s:
        assert s.execute(select(func.count()).select_from(MessageRow)).scalar_one() == 1
        assert s.execute(select(func.count()).select_from(DeliveryRow)).scalar_one() == 1
    consents = hub["jaeren-dps"].get("/fhir/Consent").json()["entry"]
    assert len(consents) == 1


def _revocation(consent_message: dict[str, Any]) -> dict[str, Any]:
    revoked = copy.deepcopy(consent_message)
    revoked["entry"][0]["resource"]["id"] = str(uuid.uuid4())
    for entry in revoked["entry"]:
        if entry["resource"]["resourceType"] == "Consent":
            entry["resource"]["status"] = "inactive"
    return revoked


def test_revocation_withdraws_deliveries_not_yet_made(hub: dict[str, TestClient],  # noqa: F811
                                                      database: Database) -> None:
    consent = load(EXAMPLES[0])
    assert post(hub, consent).status_code == 200
    assert post(hub, load(EXAMPLES[3])).status_code == 200  # meeting invitation
    assert _deliveries(database)["meeting-invitation"] == [("time-kommune", "queued")]
    r = post(hub, _revocation(consent))
    assert r.status_code == 200, r.text
    state = _deliveries(database)
    assert state["meeting-invitation"] == [("time-kommune", "withheld")]
    # the revocation itself still reaches the organisation it names
    assert state["consent-changed"][-1] == ("time-kommune", "queued")
    said = " ".join(i["diagnostics"] for i in r.json()["entry"][1]["resource"]["issue"])
    assert "withdrew the meeting-invitation message" in said
    # and a new message of the same kind is now withheld at once
    invitation = load(EXAMPLES[3])
    invitation["entry"][0]["resource"]["id"] = str(uuid.uuid4())
    assert post(hub, invitation).status_code == 200
    assert _deliveries(database)["meeting-invitation"][-1] == ("time-kommune", "withheld")


def test_different_messages_at_once_about_a_new_patient_make_one_patient(
        hub: dict[str, TestClient], live_url: str, database: Database) -> None:  # noqa: F811
    """Six messages (each its own id and its own Consent) about a patient the hub has not
    seen, posted at once: one Patient, which all six name (on PostgreSQL the placements run
    in parallel transactions; each new identity is claimed before it is looked up)."""
    first = load(EXAMPLES[0])
    token = hub["jaeren-dps"].headers["Authorization"]
    messages = []
    for _ in range(6):
        m = copy.deepcopy(first)
        m["entry"][0]["resource"]["id"] = str(uuid.uuid4())
        for entry in m["entry"][1:]:
            res = entry["resource"]
            if res["resourceType"] == "Consent":
                res["identifier"] = [{"system": "urn:ietf:rfc:3986",
                                      "value": f"urn:uuid:{uuid.uuid4()}"}]
        messages.append(m)
    barrier = threading.Barrier(len(messages))
    answers: list[httpx.Response] = []

    def send(message: dict[str, Any]) -> None:
        with httpx.Client(base_url=live_url, timeout=60) as http:
            barrier.wait()
            answers.append(http.post("/fhir/$process-message", json=message, headers={
                "Authorization": token, "Content-Type": "application/fhir+json"}))

    threads = [threading.Thread(target=send, args=(m,)) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    patients = hub["jaeren-dps"].get("/fhir/Patient").json().get("entry", [])
    assert len(patients) == 1, [p["resource"]["id"] for p in patients]
    pid = patients[0]["resource"]["id"]
    consents = hub["jaeren-dps"].get("/fhir/Consent").json()["entry"]
    assert len(consents) == 6
    assert {c["resource"]["patient"]["reference"] for c in consents} == {f"Patient/{pid}"}

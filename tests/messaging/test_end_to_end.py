"""A message from intake to the receiver's endpoint through the hub's own dispatcher, with
its status, its audit record and the receiver's acknowledgement."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.audit.models import AuditRecordRow
from hub.config import Settings
from hub.db.engine import Database
from tests.access_clients import other_client
from tests.delivery.receivers import Receiver
from tests.messaging.test_story import EXAMPLES, load, register_story_organizations


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver("time-kommune").start()
    yield r
    r.stop()


def _status(client: TestClient, header_id: str) -> dict[str, object]:
    r = client.get("/fhir/$delivery-status", params={"message": header_id})
    assert r.status_code == 200, r.text
    dest = next(p for p in r.json()["parameter"] if p["name"] == "destination")
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
            for p in dest["part"]}


def test_consent_message_is_pushed_audited_and_acknowledged(
        settings: Settings, database: Database, receiver: Receiver) -> None:
    live = settings.model_copy(update={"dispatcher": True, "delivery_poll_interval": 0.05})
    register_story_organizations(database, time_endpoint=receiver.url)
    with other_client(live, database, "jaeren-dps") as dps, \
            other_client(settings, database, "time-kommune") as time_client:
        message = load(EXAMPLES[0])
        header_id = message["entry"][0]["resource"]["id"]
        assert dps.post("/fhir/$process-message", json=message).status_code == 200
        deadline = time.monotonic() + 15
        while header_id not in receiver.accepted_ids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.accepted_ids() == [header_id]
        # the receiver has it; the dispatcher records that in its own commit just after
        while _status(dps, header_id)["status"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.05)
        status = _status(dps, header_id)
        assert status["status"] == "delivered"
        assert status["attempts"] == 1

        ack = load(EXAMPLES[14])
        ack["entry"][0]["resource"]["id"] = str(uuid.uuid4())
        ack["entry"][0]["resource"]["response"]["identifier"] = header_id
        r = time_client.post("/fhir/$process-message", json=ack)
        assert r.status_code == 200, r.text
        assert _status(dps, header_id)["status"] == "acknowledged"
    with database.session(write=False) as s:
        bodies = [row.body for row in s.scalars(select(AuditRecordRow).where(
            AuditRecordRow.subtype == "disclose"))]
    assert any(b"Delivered by push to" in body for body in bodies)

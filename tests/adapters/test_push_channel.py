"""The dispatcher pushes through an OutboundChannel: a fake channel at the adapter edge sees
exactly what the receiver would get, and its answers become the delivery's status."""

from __future__ import annotations

import json
import threading

from adapters.channels import Sent
from hub.config import Settings
from hub.db.engine import Database
from hub.delivery.dispatcher import sweep
from tests.delivery.factory import accept, add_org, add_patient, deliveries


class FakeChannel:
    """Answers from a script; records (address, MessageHeader.id) of every send."""

    name = "fake"

    def __init__(self, *answers: Sent) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, str]] = []
        self.closed = False
        self._lock = threading.Lock()

    def send(self, address: str, body: bytes, *, timeout: float) -> Sent:
        bundle = json.loads(body)
        with self._lock:
            self.sent.append((address, bundle["entry"][0]["resource"]["id"]))
            return self.answers.pop(0) if self.answers else Sent(True)

    def close(self) -> None:
        self.closed = True


def test_deliveries_go_out_through_the_channel_and_its_answer_is_recorded(
        settings: Settings, database: Database) -> None:
    add_org(database, "centre")
    add_org(database, "kommune", "http://kommune.example/fhir/messages")
    first, second = (accept(database, settings, sender="centre", receivers=["kommune"],
                            patient_id=add_patient(database, n)) for n in range(2))
    channel = FakeChannel(Sent(False, True, "refused by the receiver"), Sent(True))
    report = sweep(database, settings, channel=channel)
    assert sorted(h for _, h in channel.sent) == sorted([first.header_id, second.header_id])
    assert {a for a, _ in channel.sent} == {"http://kommune.example/fhir/messages"}
    assert (report.delivered, report.dead_lettered) == (1, 1)
    rows = deliveries(database)
    assert sorted(r.status for r in rows) == ["dead-letter", "delivered"]
    assert "refused by the receiver" in next(r.last_error for r in rows
                                             if r.status == "dead-letter")
    assert not channel.closed  # the caller's channel stays open for the next sweep

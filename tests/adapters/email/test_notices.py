"""E-mail notices against a real SMTP server on loopback (aiosmtpd): counts and a link,
at most one per person per interval, and a failing server delays notices but loses none.
Every e-mail these tests receive is scanned for health information."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.message import Message

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update

from adapters.email.notices import notify
from adapters.email.smtp import SmtpMailer
from adapters.mllp.intake import Intake
from adapters.mllp.simulator import adt
from hub.auth.subject import Subject
from hub.auth.users import add_user
from hub.config import Settings
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.errors import BadRequestError
from hub.messaging.models import DeliveryRow
from hub.scheduler.sweep import sweep
from hub.store import service
from hub.store.query import SearchRequest
from tests.adapters.mllp.acks import read
from tests.adapters.mllp.conftest import Listener, stay
from tests.delivery.receivers import free_port

PASSWORD = "correct horse battery staple"


class Inbox:
    """aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        content = getattr(envelope, "content", b"")
        self.messages.append((list(getattr(envelope, "rcpt_tos", [])),
                              message_from_bytes(content)))
        return "250 OK"


class Smtp:
    """A real SMTP server on a loopback port that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> Smtp:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp(database: Database) -> Iterator[Smtp]:
    server = Smtp().start()
    yield server
    server.stop()
    _scan(server.inbox, database)


def _scan(inbox: Inbox, database: Database) -> None:
    """No e-mail carries a name, fødselsnummer, diagnosis or free text of a record."""
    hub = Subject.hub_itself()
    with database.session(write=False) as s:
        patients = [p.body or {} for p in service.search(
            s, hub, request=SearchRequest("Patient", [], count=500))[0]]
    words = {w for p in patients for n in p.get("name", [])
             for w in [n.get("family", ""), *n.get("given", [])] if w}
    words |= {line for p in patients for a in p.get("address", []) for line in a.get("line", [])}
    for _to, message in inbox.messages:
        text = str(message["Subject"]) + message.get_payload(decode=True).decode()
        assert not re.search(r"\d{11}", text), text  # no fødselsnummer or D-nummer
        assert not [w for w in words if w in text], text
        for word in ("suicid", "diagnos", "Oppfølging fra utskrivning", "Encounter", "Patient"):
            assert word.lower() not in text.lower(), text


def _coordinator(database: Database, username: str, org: str, email: str | None) -> None:
    with database.session(write=True) as s:
        add_user(s, username=username, password=PASSWORD, role="coordinator",
                 organization_id=org, email=email)


def _overdue_checks(intake: Intake, database: Database, settings: Settings) -> None:
    """A stay from the PAS, discharged nine days ago: two of its checks are overdue."""
    listener = Listener(intake)
    try:
        with listener.pas() as pas:
            assert read(pas.send(adt(stay("MAIL-1"), "A01", "MAIL-1"))).code == "AA"
            assert read(pas.send(adt(stay("MAIL-1"), "A03", "MAIL-2"))).code == "AA"
    finally:
        listener.stop()
    sweep(database, settings)


def _dead_letter(database: Database) -> None:
    with database.session(write=True) as s:
        first = s.scalar(select(DeliveryRow.id).where(DeliveryRow.status == "queued")
                         .order_by(DeliveryRow.id))
        assert first is not None
        s.execute(update(DeliveryRow).where(DeliveryRow.id == first).values(
            status="dead-letter", next_attempt_at=None, last_error="HTTP 410"))


def test_a_coordinator_gets_counts_and_a_link_once_per_interval(
        intake: Intake, database: Database, settings: Settings, smtp: Smtp) -> None:
    _coordinator(database, "koord.dps", "jaeren-dps", "koord.dps@example.no")
    _coordinator(database, "koord.time", "time-kommune", None)  # no address: no e-mail
    with database.session(write=True) as s:
        add_user(s, username="revisor", password=PASSWORD, role="auditor",
                 organization_id=None, email="revisor@example.no")  # not a coordinator
    _overdue_checks(intake, database, settings)
    mailer = SmtpMailer(f"smtp://127.0.0.1:{smtp.port}", sender=settings.notify_from)
    now = utcnow()

    assert notify(database, settings, mailer, now=now).sent == 1
    [(to, message)] = smtp.inbox.messages
    assert to == ["koord.dps@example.no"]
    text = message.get_payload(decode=True).decode()
    assert message["Subject"] == "CareHub: 2 saker venter"
    assert "- 2 oppfølgingskontroller på overtid" in text
    assert f"{settings.base_url}/ui" in text

    # nothing new: no second e-mail; something new within the interval: not yet
    assert notify(database, settings, mailer, now=now + timedelta(seconds=5)).sent == 0
    _dead_letter(database)
    assert notify(database, settings, mailer, now=now + timedelta(seconds=10)).sent == 0
    later = now + timedelta(seconds=settings.notify_interval + 1)
    assert notify(database, settings, mailer, now=later).sent == 1
    assert len(smtp.inbox.messages) == 2
    second = smtp.inbox.messages[1][1].get_payload(decode=True).decode()
    assert "- 1 melding som ikke kunne leveres" in second


def test_a_failing_mail_server_delays_the_notice_and_loses_none(
        intake: Intake, database: Database, settings: Settings, smtp: Smtp) -> None:
    _coordinator(database, "koord.dps", "jaeren-dps", "koord.dps@example.no")
    _overdue_checks(intake, database, settings)
    mailer = SmtpMailer(f"smtp://127.0.0.1:{smtp.port}", sender=settings.notify_from,
                        timeout=2)
    smtp.stop()
    now = utcnow()
    report = notify(database, settings, mailer, now=now)
    assert (report.sent, report.failed) == (0, 1)
    smtp.start()
    # the next sweep sends it, although the failed attempt was within the interval
    assert notify(database, settings, mailer, now=now + timedelta(seconds=60)).sent == 1
    assert [to for to, _ in smtp.inbox.messages] == [["koord.dps@example.no"]]


def test_a_malformed_address_is_refused(database: Database) -> None:
    with database.session(write=True) as s, pytest.raises(BadRequestError, match="e-mail"):
        add_user(s, username="x", password=PASSWORD, role="auditor", organization_id=None,
                 email="not an address")

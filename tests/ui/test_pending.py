"""A coordinator's pending transitions on /ui: what they see (and do not, without consent),
in what order, and replaying a dead letter."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.audit.models import AuditRecordRow
from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.demo.messages import Clock
from hub.demo.scenario import INGRID, JONAS, KARI, KLEPP, OLA
from hub.fhir.identifiers import FNR_SYSTEM
from hub.messaging.models import DeliveryRow
from hub.store import service
from hub.ui.transitions import when
from tests.audit.trail import settle
from tests.ui.conftest import Browser, csrf_of, make_dead_letter, sign_in

HUB = Subject.hub_itself()
CS = "http://carehub.example/fhir/CodeSystem/"


def _patient_id(database: Database, number: str) -> str:
    with database.session(write=False) as s:
        [found] = service.find_by_identifier(s, HUB, system=FNR_SYSTEM, value=number,
                                             resource_types=frozenset({"Patient"}))
        return found.id


def _shown(clock: Clock, days: float, hours: float = 8) -> str:
    """How the page writes the story's time `days` from its anchor (Norwegian time)."""
    return when(clock.at(days, hours), utcnow()).text


def _home(browser: Browser, username: str) -> tuple[TestClient, str]:
    client = browser()
    assert sign_in(client, username).status_code == 303
    page = client.get("/ui")
    assert page.status_code == 200
    return client, page.text


def _section(page: str, heading: str) -> str:
    """The HTML of the <section> whose h2 is `heading`."""
    start = page.index(f">{heading}</h2>")
    return page[start:page.index("</section>", start)]


def _rows(section: str) -> list[str]:
    """The body rows of a section's table, as plain text."""
    body = section.split("<tbody>")[1] if "<tbody>" in section else ""
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r)).strip() for r in rows]


def test_the_municipality_sees_its_overdue_checks_first_and_what_is_ahead(
        told: dict[str, Any], browser: Browser) -> None:
    _, page = _home(browser, "koordinator.time")
    assert "1 follow-up check is overdue" in page
    follow_up = _section(page, "Follow-up after discharge")
    rows = _rows(follow_up)
    assert len(rows) == 3
    # a name and the masked fødselsnummer tell namesakes apart; the name opens the person's page
    assert all(r.startswith(f"{INGRID.name} {INGRID.fnr[:6]} *****") for r in rows)
    ingrid = _patient_id(told["database"], INGRID.fnr)
    assert f'<a href="/ui/people/{ingrid}">{INGRID.name}</a>' in follow_up
    assert INGRID.fnr not in page
    assert "First contact after discharge, within 48 hours" in rows[0]
    assert "7 days after discharge" in rows[1]
    assert "30 days after discharge" in rows[2]
    assert "Overdue" in rows[0]
    assert _shown(told["clock"], -2) in rows[0]  # discharged at -4 days, due 48 h later
    assert "Open" in rows[1]
    assert _shown(told["clock"], 3) in rows[1]
    assert follow_up.count('class="overdue"') == 1
    assert '<th scope="col">Due</th>' in follow_up

    meetings = _rows(_section(page, "Meetings ahead"))
    assert len(meetings) == 1
    assert KARI.name in meetings[0]
    assert "Network meeting" in meetings[0]
    assert "Will come" in meetings[0]
    assert "begynne å jobbe igjen" in meetings[0]

    flags = _rows(_section(page, "Flags on your patients"))
    assert len(flags) == 2  # the centre's suicide-risk flag and the scheduler's overdue flag
    assert all(INGRID.name in flag for flag in flags)
    assert any("suicide risk" in flag for flag in flags)
    assert any("overdue" in flag.lower() for flag in flags)

    [request] = _rows(_section(page, "Self-admission requests waiting for an answer"))
    assert KARI.name in request
    assert _shown(told["clock"], 2, 10) in request
    assert _shown(told["clock"], 5, 10) in request
    # Ingrid's discharge is done: the dialogue is no longer pending
    assert "No discharges are being planned." in page
    # Klepp's patients: no consent names Time kommune
    for other in (OLA, JONAS):
        assert other.family not in page


def test_the_centre_sees_the_discharge_waiting_for_an_answer(
        told: dict[str, Any], browser: Browser) -> None:
    _, page = _home(browser, "koordinator.dps")
    [discharge] = _rows(_section(page, "Discharges being planned"))
    assert OLA.name in discharge
    assert "Waiting for Klepp kommune to answer" in discharge
    assert _shown(told["clock"], 2) in discharge
    [request] = _rows(_section(page, "Self-admission requests waiting for an answer"))
    assert KARI.name in request
    assert "Time kommune" in request
    meetings = _rows(_section(page, "Meetings ahead"))
    assert JONAS.name in meetings[0]  # by date: Jonas's meeting comes first
    assert KARI.name in meetings[1]
    assert "Not answered yet" in meetings[0]


def test_another_municipality_does_not_see_a_patient_without_consent(
        told: dict[str, Any], browser: Browser) -> None:
    _, page = _home(browser, "koordinator.klepp")
    [discharge] = _rows(_section(page, "Discharges being planned"))
    assert OLA.name in discharge  # Ola consented to Klepp kommune
    # Jonas has no consent: his admission went to Klepp on its legal basis, but nothing about
    # him is shown; nor anything of Time kommune's patients
    for hidden in (JONAS, KARI, INGRID):
        assert hidden.family not in page
    assert "No open follow-up checks." in page
    assert "No meetings are booked ahead." in page
    assert "No active flags." in page


def _status(database: Database, delivery_id: int) -> str:
    with database.session(write=False) as s:
        status = s.scalar(select(DeliveryRow.status).where(DeliveryRow.id == delivery_id))
        assert status is not None
        return status


def _replays(database: Database) -> int:
    with database.session(write=False) as s:
        return sum(b"$replay" in body for body in s.scalars(select(AuditRecordRow.body)))


def test_a_dead_letter_is_replayed_with_the_forms_csrf_token(
        told: dict[str, Any], database: Database, browser: Browser) -> None:
    delivery_id = make_dead_letter(database, "ready-for-discharge", KLEPP)
    client, page = _home(browser, "koordinator.klepp")
    [row] = _rows(_section(page, "Messages that could not be delivered"))
    assert row.startswith("Ready for discharge")
    assert "HTTP 410" in row
    assert OLA.name in row
    assert "what it holds up" in row
    # the discharge waiting for Klepp's answer says that the question never reached Klepp
    [discharge] = _rows(_section(page, "Discharges being planned"))
    assert "Waiting for Klepp kommune to answer" in discharge
    assert "The message never reached them" in discharge
    ola = _patient_id(database, OLA.fnr)
    assert f'<tr id="discharge-{ola}">' in page
    assert f'<a href="#discharge-{ola}">what it holds up</a>' in page
    assert "Send again" in row
    action = f"/ui/deliveries/{delivery_id}/replay"
    assert f'action="{action}"' in page
    pre_session = csrf_of(browser().get("/ui/sign-in"))
    for data in ({}, {"csrf_token": "x" * 43}, {"csrf_token": pre_session}):
        refused = client.post(action, data=data)
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("text/html")
    assert _status(database, delivery_id) == "dead-letter"
    before = _replays(database)

    done = client.post(action, data={"csrf_token": csrf_of(client.get("/ui"))})
    assert done.status_code == 303
    assert done.headers["location"] == f"/ui?replayed={delivery_id}#dead-letters"
    assert _status(database, delivery_id) == "queued"
    assert _replays(database) == before + 1
    with database.session(write=False) as s:  # what it was before stays in the trail
        steps = [json.loads(bytes(b))["outcomeDesc"] for b in s.scalars(
            select(AuditRecordRow.body).where(AuditRecordRow.subtype == "delivery"))]
    assert [t for t in steps if t.startswith("Replayed by User/koordinator.klepp: queued "
                                             "again after 1 attempt(s)") and "HTTP 410" in t]
    after = client.get(done.headers["location"]).text
    assert "The message is queued again" in after
    assert f"Delivery {delivery_id}" not in after
    assert "Every message has been delivered or is on its way." in after
    # once queued, it is no dead letter to replay
    again = client.post(action, data={"csrf_token": csrf_of(client.get("/ui"))})
    assert again.status_code == 409


def test_only_the_sender_or_receivers_coordinator_replays(
        told: dict[str, Any], database: Database, browser: Browser) -> None:
    delivery_id = make_dead_letter(database, "ready-for-discharge", KLEPP)
    client, page = _home(browser, "koordinator.time")
    assert "Ready for discharge" not in _section(page, "Messages that could not be delivered")
    refused = client.post(f"/ui/deliveries/{delivery_id}/replay",
                          data={"csrf_token": csrf_of(client.get("/ui"))})
    assert refused.status_code == 404
    assert _status(database, delivery_id) == "dead-letter"
    # the sender's coordinator (Jæren DPS) may
    dps, page = _home(browser, "koordinator.dps")
    assert f'action="/ui/deliveries/{delivery_id}/replay"' in page
    assert dps.post(f"/ui/deliveries/{delivery_id}/replay",
                    data={"csrf_token": csrf_of(dps.get("/ui"))}).status_code == 303
    assert _status(database, delivery_id) == "queued"


def test_the_page_view_is_audited_with_the_patients_shown(
        told: dict[str, Any], database: Database, browser: Browser) -> None:
    ola = f"Patient/{_patient_id(database, OLA.fnr)}"
    with database.session(write=False) as s:
        before = set(s.scalars(select(AuditRecordRow.seq).where(
            AuditRecordRow.patient_ref == ola, AuditRecordRow.agent == "User/koordinator.klepp")))
    _home(browser, "koordinator.klepp")
    settle(database)  # the view's record waits in the read spool until moved
    with database.session(write=False) as s:
        after = set(s.scalars(select(AuditRecordRow.seq).where(
            AuditRecordRow.patient_ref == ola, AuditRecordRow.agent == "User/koordinator.klepp")))
    assert len(after - before) >= 1

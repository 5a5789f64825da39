"""The person's page: what a coordinator goes through with the person, read through the
consent gate as the coordinator's organisation, and every view audited."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from hub.audit.models import AuditRecordRow
from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.demo.scenario import INGRID, KARI
from hub.fhir.identifiers import FNR_SYSTEM
from hub.store import service
from tests.audit.trail import settle
from tests.ui.conftest import Browser, make_user, sign_in

GOALS = ("Komme tilbake i deltidsjobb i butikken innen sommeren",
         "Ha kontakt med søsteren min hver uke", "Bo for meg selv og klare hverdagen")


def _patient_id(database: Database, number: str) -> str:
    with database.session(write=False) as s:
        [found] = service.find_by_identifier(s, Subject.hub_itself(), system=FNR_SYSTEM,
                                             value=number, resource_types=frozenset({"Patient"}))
        return found.id


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _page(browser: Browser, username: str, patient_id: str, lang: str | None = "en") -> Any:
    client = browser(lang=lang)
    assert sign_in(client, username).status_code == 303
    return client.get(f"/ui/people/{patient_id}")


def test_the_persons_page_shows_the_goals_in_their_own_words_and_what_lies_ahead(
        told: dict[str, Any], database: Database, browser: Browser) -> None:
    kari = _patient_id(database, KARI.fnr)
    page = _page(browser, "koordinator.time", kari)
    assert page.status_code == 200
    text = _text(page.text)
    for goal in GOALS:
        assert f"«{goal}» (in the person's own words)" in text
    assert "The person took part in making the plan." in text
    assert f"{KARI.fnr[:6]} *****" in text
    assert KARI.fnr not in text
    # the meeting ahead, the person's answer and what they want raised
    assert "Network meeting" in text
    assert "Will come" in text
    assert "begynne å jobbe igjen" in text
    # the consents in plain words
    assert "The person consents to sharing information with Time kommune" in text
    assert "making an individual plan, shared with" in text
    # the self-admission stays and the request waiting for an answer
    assert "Asked, not answered yet" in text


def test_the_follow_up_checks_after_discharge_are_on_the_persons_page(
        told: dict[str, Any], database: Database, browser: Browser) -> None:
    ingrid = _patient_id(database, INGRID.fnr)
    text = _text(_page(browser, "koordinator.time", ingrid).text)
    section = text[text.index("Follow-up after discharge"):]
    assert "Overdue" in section
    assert "30 days after discharge" in section


def test_a_coordinator_of_another_municipality_sees_nothing_without_consent(
        told: dict[str, Any], database: Database, browser: Browser) -> None:
    kari = _patient_id(database, KARI.fnr)

    def views() -> int:
        settle(database)  # a view's record waits in the read spool until moved
        with database.session(write=False) as s:
            return int(s.scalar(select(func.count()).select_from(AuditRecordRow).where(
                AuditRecordRow.agent == "User/koordinator.klepp",
                AuditRecordRow.patient_ref == f"Patient/{kari}")) or 0)

    before = views()
    page = _page(browser, "koordinator.klepp", kari)
    assert page.status_code == 404
    assert "Not shown to you" in page.text
    for secret in (*GOALS, KARI.given, KARI.family, KARI.fnr[:6]):
        assert secret not in page.text
    assert views() == before + 1  # the attempt is in the audit trail


def test_the_persons_page_is_in_bokmal_by_default(
        told: dict[str, Any], database: Database, browser: Browser) -> None:
    kari = _patient_id(database, KARI.fnr)
    page = _page(browser, "koordinator.time", kari, lang=None)
    assert '<html lang="nb">' in page.text
    text = _text(page.text)
    assert "med personens egne ord" in text
    assert "Personen var med på å lage planen." in text
    assert "Kommende møter" in text


def test_only_coordinators_have_a_persons_page(
        told: dict[str, Any], database: Database, browser: Browser) -> None:
    make_user(database, "revisor", role="auditor")
    kari = _patient_id(database, KARI.fnr)
    assert _page(browser, "revisor", kari).status_code == 403


def test_what_another_organisation_wrote_is_text_on_the_pages_never_markup(
        told: dict[str, Any], database: Database, browser: Browser,
        settings: Any) -> None:
    """Probe F (session 23): the centre's Task description and CarePlan title reached Time's
    coordinator pages as raw HTML (a `<base>` element could re-point the pages' forms), and
    a `%` in them made the pages a 500: the templates passed them through `_()`, which marks
    its result safe and formats with `%`. They are text now, shown as written."""
    from tests.access_clients import other_client  # noqa: PLC0415

    kari = _patient_id(database, KARI.fnr)
    said = '<b id="inj">INJ</b> <base href="https://evil.example/"> 100% of the list'
    check = {"resourceType": "Task", "status": "requested", "intent": "order",
             "code": {"coding": [{"system": "http://carehub.example/fhir/CodeSystem/task-code",
                                  "code": "follow-up-check"}]},
             "description": said, "for": {"reference": f"Patient/{kari}"},
             "requester": {"reference": "Organization/jaeren-dps"},
             "owner": {"reference": "Organization/time-kommune"},
             "restriction": {"period": {"end": (utcnow() + timedelta(days=14)).isoformat()}}}
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan", "title": said,
            "subject": {"reference": f"Patient/{kari}"},
            "author": {"reference": "Organization/jaeren-dps"}}
    with other_client(settings, database, "jaeren-dps") as dps:
        assert dps.post("/fhir/Task", json=check).status_code == 201
        assert dps.post("/fhir/CarePlan", json=plan).status_code == 201
    client = browser()
    assert sign_in(client, "koordinator.time").status_code == 303
    for page in (client.get("/ui"), client.get(f"/ui/people/{kari}")):
        assert page.status_code == 200, page.text[:300]
        assert '<b id="inj">' not in page.text
        assert "<base" not in page.text
        assert "&lt;b id=&#34;inj&#34;&gt;INJ&lt;/b&gt;" in page.text
        assert "100% of the list" in page.text


def test_one_person_a_page(told: dict[str, Any], database: Database,
                           browser: Browser) -> None:
    """Probe F (session 23): /ui/people/A,B showed A's name over B's plan and meetings (the
    page's `_id` searches took the comma as an OR), and its record named no real patient.
    An id that cannot be a Patient's is a 404; the control: each alone is shown."""
    kari = _patient_id(database, KARI.fnr)
    ingrid = _patient_id(database, INGRID.fnr)
    client = browser()
    assert sign_in(client, "koordinator.time").status_code == 303
    assert client.get(f"/ui/people/{kari}").status_code == 200
    assert client.get(f"/ui/people/{ingrid}").status_code == 200
    for both in (f"{ingrid},{kari}", f"{kari},{ingrid}", f'{kari}"x'):
        assert client.get(f"/ui/people/{both}").status_code == 404, both

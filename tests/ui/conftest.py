"""Helpers for the /ui tests: organisations, people, and a browser-like client."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from hub.app import create_app
from hub.auth.subject import Subject
from hub.auth.users import add_user
from hub.config import Settings
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.demo.messages import Clock
from hub.demo.scenario import DPS, KLEPP, TIME, story
from hub.fhir.identifiers import ORGNR_SYSTEM
from hub.messaging.models import DeliveryRow, MessageRow
from hub.orgs.service import add_organization
from hub.scheduler.sweep import sweep
from hub.store import service
from tests.access_clients import other_client
from tests.conftest import SHARED

PASSWORD = "riktig hest batteri stift"
ORG_ID = "jaeren-dps"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

Browser = Callable[..., TestClient]


@pytest.fixture
def org_id(database: Database) -> str:
    """An active Organization (with a Norwegian name) the coordinators can work for."""
    org = {"resourceType": "Organization", "id": ORG_ID, "active": True, "name": "Jæren DPS",
           "identifier": [{"system": ORGNR_SYSTEM, "value": "983974791"}]}
    with database.session(write=True) as s:
        service.update(s, Subject.hub_itself(), resource_type="Organization",
                       resource_id=ORG_ID, resource=org)
    return ORG_ID


def make_dead_letter(database: Database, event: str, receiver: str) -> int:
    """Turn the delivery of the `event` message to `receiver` into a dead letter, as the
    dispatcher leaves one that a receiving system refused; its id."""
    with database.session(write=True) as s:
        delivery_id = s.scalar(select(DeliveryRow.id).join(
            MessageRow, MessageRow.id == DeliveryRow.message_id).where(
            MessageRow.event == event, DeliveryRow.receiver_org == receiver))
        assert delivery_id is not None
        s.execute(update(DeliveryRow).where(DeliveryRow.id == delivery_id).values(
            status="dead-letter", attempts=1, next_attempt_at=None,
            last_error="HTTP 410 from https://klepp.example/fhir: gone"))
        return delivery_id


def make_user(database: Database, username: str, role: str = "auditor",
              organization_id: str | None = None, password: str = PASSWORD) -> int:
    """Add a user in its own committed transaction."""
    with database.session(write=True) as s:
        return add_user(s, username=username, password=password, role=role,
                        organization_id=organization_id)


@pytest.fixture
def browser(settings: Settings) -> Iterator[Browser]:
    """A factory of test clients on the hub, like browsers: `browser(https=True, lang="nb",
    **settings)` (English unless `lang` says otherwise)."""
    opened: list[TestClient] = []

    def open_one(*, https: bool = False, lang: str | None = "en",
                 **overrides: object) -> TestClient:
        app = create_app(settings.model_copy(update=overrides))
        scheme = "https" if https else "http"
        client = TestClient(app, base_url=f"{scheme}://testserver", follow_redirects=False,
                            raise_server_exceptions=False)
        if lang is not None:  # most tests read the English texts; None: the default (bokmål)
            client.cookies.set("carehub_lang", lang)
        client.__enter__()
        opened.append(client)
        return client

    yield open_one
    for client in opened:
        client.__exit__(None, None, None)


def csrf_of(page: httpx.Response) -> str:
    """The hidden CSRF token of the form on `page`."""
    found = _CSRF.search(page.text)
    assert found, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> httpx.Response:
    """Fetch the sign-in form and post it, as a browser would."""
    form = client.get("/ui/sign-in")
    assert form.status_code == 200
    return client.post("/ui/sign-in", data={"username": username, "password": password,
                                            "csrf_token": csrf_of(form)})


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers of `response` by cookie name."""
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


@pytest.fixture
def told(settings: Settings, database: Database) -> dict[str, Any]:
    """The demo's story posted through $process-message by each organisation's client, one
    scheduler sweep (Ingrid's discharge made her follow-up checks), and a coordinator per
    organisation."""
    with database.session(write=True) as s:
        for org_id, name, kind, orgnr in (
                (DPS, "Jæren DPS", "mental-health-centre", "983974791"),
                (TIME, "Time kommune", "municipality", "964969590"),
                (KLEPP, "Klepp kommune", "municipality", "964979022")):
            add_organization(s, Subject.hub_itself(), name=name, kind=kind,
                             identifier=f"{ORGNR_SYSTEM}|{orgnr}", org_id=org_id)
    now = utcnow()
    anchor = now.replace(hour=0, minute=0, second=0, microsecond=0)
    steps = story(anchor)
    with other_client(settings, database, DPS) as dps, \
            other_client(settings, database, TIME) as time, \
            other_client(settings, database, KLEPP) as klepp:
        clients: dict[str, TestClient] = {DPS: dps, TIME: time, KLEPP: klepp}
        for step in steps:
            r = clients[step.sender].post("/fhir/$process-message", json=step.bundle)
            assert r.status_code == 200, r.text
    # the scheduler's first sweep finds Ingrid's first contact (48 h, suicide risk) overdue
    assert sweep(database, settings).outcomes["escalated"] == 1
    for username, org_id in (("koordinator.dps", DPS), ("koordinator.time", TIME),
                             ("koordinator.klepp", KLEPP)):
        make_user(database, username, role="coordinator", organization_id=org_id)
    return {"steps": steps, "clock": Clock(anchor), "database": database}


SHARED_FNR = "13116900216"
"""The person of the shared example story."""
EXAMPLES = sorted((SHARED / "examples").glob("[0-9][0-9]-*.json"))[:15]


@pytest.fixture
def shared_story(settings: Settings, database: Database) -> Iterator[dict[str, TestClient]]:
    """The shared examples 01-15 posted in order by each sender's own client, an auditor and
    a coordinator of Time kommune."""
    with database.session(write=True) as s:
        add_organization(s, Subject.hub_itself(), name="Jæren DPS",
                         kind="mental-health-centre", identifier=f"{ORGNR_SYSTEM}|983974791",
                         org_id="jaeren-dps")
        add_organization(s, Subject.hub_itself(), name="Time kommune", kind="municipality",
                         identifier=f"{ORGNR_SYSTEM}|964969590", org_id="time-kommune")
    with other_client(settings, database, "jaeren-dps") as dps, \
            other_client(settings, database, "time-kommune") as time:
        clients = {"jaeren-dps": dps, "time-kommune": time}
        for path in EXAMPLES:
            message = json.loads(path.read_text(encoding="utf-8"))
            sender = message["entry"][0]["resource"]["sender"]["reference"].split("/")[1]
            r = clients[sender].post("/fhir/$process-message", json=message)
            assert r.status_code == 200, f"{path.name}: {r.text}"
        make_user(database, "revisor", role="auditor")
        make_user(database, "koordinator.time", role="coordinator",
                  organization_id="time-kommune")
        yield clients

"""`hub demo --no-serve`: seeds, tells its story through the API, and a second run changes
nothing."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from hub.app import create_app
from hub.auth.subject import Subject
from hub.auth.users import authenticate
from hub.cli import app
from hub.config import Settings, get_settings
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.demo import demo_directory
from hub.demo.drive import DemoError, Driver
from hub.demo.keys import read_clients
from hub.demo.pas import FNR as PAS_FNR
from hub.demo.scenario import JONAS, PEOPLE, story
from hub.fhir.identifiers import FNR_SYSTEM, KOMMUNENUMMER_SYSTEM, fodselsnummer_problem
from hub.messaging.models import DeliveryRow, MessageRow
from hub.messaging.outbound import HUB_SENDER
from hub.store import query as search_mod
from hub.store import service

BASE = "http://127.0.0.1:8080"
HUB = Subject.hub_itself()


@pytest.fixture
def demo_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The environment `hub demo` runs in: a fresh database, its own audit key, and a working
    directory of its own (HUB_BASE_URL set, so the command leaves os.environ alone)."""
    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    monkeypatch.setenv("HUB_BASE_URL", BASE)
    monkeypatch.setenv("HUB_AUDIT_KEY_FILE", str(tmp_path / "audit-key.pem"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield get_settings().model_copy(update={"dispatcher": False})
    get_settings.cache_clear()


def _demo() -> str:
    result = CliRunner().invoke(app, ["demo", "--no-serve"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return str(result.output)


def _all(database: Database, rtype: str, *pairs: tuple[str, str]) -> list[dict[str, Any]]:
    with database.session(write=False) as s:
        req = search_mod.parse_request(rtype, list(pairs), default_count=500, max_count=500)
        matches, _, _ = service.search(s, HUB, request=req)
        return [m.body for m in matches if m.body is not None]


def _counts(database: Database) -> dict[str, Any]:
    with database.session(write=False) as s:
        deliveries = Counter(s.scalars(select(DeliveryRow.status).join(
            MessageRow, MessageRow.id == DeliveryRow.message_id).where(
            MessageRow.sender_org != HUB_SENDER)).all())
        messages = s.scalar(select(func.count()).select_from(MessageRow).where(
            MessageRow.sender_org != HUB_SENDER))
        notices = sorted(s.scalars(select(MessageRow.event).where(
            MessageRow.sender_org == HUB_SENDER)).all())
    types = ("Organization", "Endpoint", "Patient", "Consent", "CarePlan", "Goal", "Task",
             "Appointment", "AppointmentResponse", "Encounter", "Flag", "ServiceRequest")
    return {"messages": messages, "deliveries": deliveries, "notices": notices,
            **{t: len(_all(database, t)) for t in types}}


def test_demo_seeds_tells_the_story_and_is_idempotent(demo_env: Settings) -> None:
    first = _demo()
    database = Database.connect(demo_env)
    try:
        before = _counts(database)
        directory = demo_directory(demo_env)
        users = json.loads((directory / "users.json").read_text())

        # a second run: the same data, nothing duplicated, the same passwords printed
        second = _demo()
        assert _counts(database) == before
        assert json.loads((directory / "users.json").read_text()) == users
        for password in users.values():
            assert password in first
            assert password in second

        steps = story(_anchor(first))
        # the story, and the PAS's stay over MLLP (an admission and a discharge)
        assert "ADT^A01 AA, ADT^A03 AA" in first
        assert "ADT^A01 AA, ADT^A03 AA" in second
        assert before["messages"] == len(steps) + 2
        withheld = sum(v == "withheld" for s in steps for v in s.expect.values())
        destinations = sum(len(s.expect) for s in steps)
        # the PAS's admission goes to Time kommune on its statutory basis; the discharge
        # (no consent) is withheld
        assert before["deliveries"] == Counter({"queued": destinations - withheld + 1,
                                                "withheld": withheld + 1})
        assert withheld == 1
        # the timed checks swept once after the story: Ingrid's first contact (48 h after a
        # discharge four days ago) is overdue, once
        assert before["notices"].count("follow-up-overdue") == 1
        _check_data(database, demo_env)
    finally:
        database.dispose()


def _anchor(output: str) -> Any:
    from datetime import UTC, datetime

    stamp = output.split("story dated from ")[1][:16]
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def _check_data(database: Database, settings: Settings) -> None:
    orgs = {o["id"]: o for o in _all(database, "Organization")}
    assert {o["name"] for o in orgs.values()} == {"Jæren DPS", "Time kommune", "Klepp kommune"}
    kommunenummer = {o["id"]: i["value"] for o in orgs.values() for i in o["identifier"]
                     if i["system"] == KOMMUNENUMMER_SYSTEM}
    assert kommunenummer == {"time-kommune": "1121", "klepp-kommune": "1120"}
    endpoints = _all(database, "Endpoint")
    assert {e["address"] for e in endpoints} == {
        f"{BASE}/demo/inbox/{o}" for o in ("jaeren-dps", "time-kommune", "klepp-kommune")}

    patients = _all(database, "Patient")
    numbers = {i["value"] for p in patients for i in p["identifier"] if i["system"] == FNR_SYSTEM}
    assert numbers == {p.fnr for p in PEOPLE} | {PAS_FNR}
    assert all(fodselsnummer_problem(n) is None for n in numbers)

    # the story's pending items are there
    tasks = _all(database, "Task")
    statuses = Counter((t["code"]["coding"][0]["code"], t["status"]) for t in tasks)
    assert statuses[("discharge-readiness", "requested")] == 1  # Ola: Klepp must answer
    assert statuses[("discharge-readiness", "accepted")] == 1  # Ingrid
    assert statuses[("discharge-readiness", "cancelled")] == 1
    assert statuses[("self-admission-request", "requested")] == 1  # Kari's new stay
    assert statuses[("self-admission-request", "accepted")] == 1
    [plan] = [c for c in _all(database, "CarePlan") if c.get("title") == "Individuell plan"]
    assert len(plan["goal"]) == 3
    goals = _all(database, "Goal")
    assert all(g["expressedBy"] == g["subject"] for g in goals)
    [answer] = _all(database, "AppointmentResponse")
    assert answer["participantStatus"] == "accepted"
    flags = sorted(f["code"]["coding"][0]["code"] for f in _all(database, "Flag"))
    assert flags == ["225444004", "follow-up-check"]  # suicide risk, and the missed first contact

    # the consent gate as the story says: Jonas has no consent, his meeting was withheld
    with database.session(write=False) as s:
        rows = s.execute(select(MessageRow.event, DeliveryRow.receiver_org, DeliveryRow.status)
                         .join(DeliveryRow, DeliveryRow.message_id == MessageRow.id)).all()
    assert ("meeting-invitation", "klepp-kommune", "withheld") in rows
    assert ("admission-notice", "klepp-kommune", "queued") in rows  # statutory basis
    jonas = [p for p in patients if p["name"][0]["given"] == [JONAS.given]]
    assert len(jonas) == 1

    # the people sign in with the printed passwords
    directory = demo_directory(settings)
    with database.session(write=True) as s:
        for username, password in json.loads((directory / "users.json").read_text()).items():
            assert authenticate(s, username, password, utcnow()).username == username
    assert stat.S_IMODE(os.stat(directory / "users.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(directory / "time-kommune.key.pem").st_mode) == 0o600

    # an outsider gets a token with the written keys, and reads what the hub holds
    token_url, clients = read_clients(directory)
    assert token_url == f"{BASE}/auth/token"
    with TestClient(create_app(settings), base_url=BASE) as http:
        driver = Driver(http, clients, token_url)
        for org in clients:
            token = driver.token(org)
            r = http.get("/fhir/Task", params={"code": "discharge-readiness"},
                         headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
        klepp = http.get("/fhir/Patient", headers={
            "Authorization": f"Bearer {driver.token('klepp-kommune')}"}).json()
        names = {e["resource"]["name"][0]["given"][0] for e in klepp.get("entry", [])}
        assert "Ola" in names
        assert JONAS.given not in names  # no consent: not disclosed to Klepp


def test_a_refused_message_stops_the_demo_with_the_hubs_words(demo_env: Settings) -> None:
    _demo()
    directory = demo_directory(demo_env)
    token_url, clients = read_clients(directory)
    steps = story(utcnow())
    bad = steps[0]
    bad.bundle["entry"][0]["resource"]["id"] = "demo-broken-message"
    [consent] = [e["resource"] for e in bad.bundle["entry"]
                 if e["resource"]["resourceType"] == "Consent"]
    consent["status"] = "no-such-status"
    with TestClient(create_app(demo_env), base_url=BASE) as http, \
            pytest.raises(DemoError) as failed:
        Driver(http, clients, token_url).tell([bad])
    assert "refused" in str(failed.value)
    assert "OperationOutcome" in str(failed.value)

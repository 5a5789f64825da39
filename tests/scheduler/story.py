"""Messages of the example story with the times, the person and the identities a test needs,
and small readers of what the hub did."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.db.engine import Database
from hub.messaging.models import DeliveryRow, MessageRow
from hub.scheduler.models import ScheduledCheckRow
from hub.store.dates import format_instant
from tests.messaging.test_story import EXAMPLES, load, post

JSON = dict[str, Any]
OSLO = ZoneInfo("Europe/Oslo")
STORY_FNR = "13116900216"
ORGS = ("jaeren-dps", "time-kommune")


def example(number: int) -> JSON:
    """A copy of shared example `number` with a new MessageHeader.id."""
    message = copy.deepcopy(load(EXAMPLES[number - 1]))
    message["entry"][0]["resource"]["id"] = str(uuid.uuid4())
    return message


def oslo(days_ago: int, hour: int, minute: int = 0) -> datetime:
    """A wall-clock time in Oslo `days_ago` days before today, as UTC."""
    day = datetime.now(OSLO).date() - timedelta(days=days_ago)
    return datetime.combine(day, time(hour, minute), tzinfo=OSLO).astimezone(UTC)


def _person(message: JSON, fnr: str) -> None:
    for entry in message["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["identifier"][0]["value"] = fnr


def _renew(resource: JSON) -> None:
    for ident in resource.get("identifier", []):
        if ident.get("system") == "urn:ietf:rfc:3986":
            ident["value"] = f"urn:uuid:{uuid.uuid4()}"


def discharge(discharged: datetime, *, suicide_risk: bool = False, fnr: str = STORY_FNR,
              encounter: str | None = None) -> JSON:
    """A discharge-notice (example 13) of a stay that ended at `discharged`; the Encounter's
    identifier is `encounter` (a new one if None), the flag only with `suicide_risk`."""
    message = example(13)
    _person(message, fnr)
    entries = message["entry"]
    stay, plan = entries[1]["resource"], entries[2]["resource"]
    _renew(stay)
    _renew(plan)
    _renew(entries[3]["resource"])
    if encounter:
        stay["identifier"][0]["value"] = encounter
    stay["period"] = {"start": format_instant(discharged - timedelta(days=12)),
                      "end": format_instant(discharged)}
    plan["activity"][0]["detail"]["scheduledPeriod"]["start"] = format_instant(
        discharged + timedelta(days=1))
    if not suicide_risk:
        flag_url = entries[3]["fullUrl"]
        del entries[3]
        header = entries[0]["resource"]
        header["focus"] = [f for f in header["focus"] if f["reference"] != flag_url]
    return message


def consent(*, fnr: str = STORY_FNR) -> JSON:
    """The story's consent-changed (example 1): the person's consent to sharing with Time
    kommune, recorded by Jæren DPS, so that the centre's discharge may be told to it."""
    message = example(1)
    _person(message, fnr)
    for entry in message["entry"][1:]:
        _renew(entry["resource"])
    return message


def contact(at: datetime, *, fnr: str = STORY_FNR) -> JSON:
    """A follow-up-contact (example 14) by the municipality at `at`, an hour long."""
    message = example(14)
    _person(message, fnr)
    visit = message["entry"][1]["resource"]
    _renew(visit)
    visit["period"] = {"start": format_instant(at), "end": format_instant(at + timedelta(hours=1))}
    return message


def accepted(hub: dict[str, TestClient], message: JSON) -> JSON:
    """Post `message` as its sender; the response, asserting it was accepted."""
    r = post(hub, message)
    assert r.status_code == 200, r.text
    answer: JSON = r.json()
    return answer


def notes(answer: JSON) -> str:
    """Everything a response message's OperationOutcome says."""
    return " ".join(i["diagnostics"] for i in answer["entry"][1]["resource"]["issue"])


def follow_up_tasks(hub: dict[str, TestClient]) -> dict[str, JSON]:
    """The follow-up check Tasks the centre reads, by the label ending their identifier."""
    r = hub["jaeren-dps"].get("/fhir/Task", params={"code": "follow-up-check", "_count": "100"})
    assert r.status_code == 200, r.text
    out = {}
    for entry in r.json().get("entry", []):
        task = entry["resource"]
        if task.get("resourceType") != "Task":
            continue
        out[task["identifier"][0]["value"].rsplit("/", 1)[1]] = task
    return out


def overdue(task: JSON) -> bool:
    """Whether a Task carries businessStatus overdue."""
    return any(c.get("code") == "overdue"
               for c in (task.get("businessStatus") or {}).get("coding", []))


def notices(database: Database, event: str) -> list[tuple[MessageRow, list[DeliveryRow]]]:
    """The hub's messages of `event`, with their deliveries."""
    with database.session(write=False) as s:
        messages = s.scalars(select(MessageRow).where(MessageRow.event == event)
                             .order_by(MessageRow.id)).all()
        return [(m, list(s.scalars(select(DeliveryRow).where(DeliveryRow.message_id == m.id)
                                   .order_by(DeliveryRow.receiver_org))))
                for m in messages]


def checks(database: Database, kind: str) -> list[ScheduledCheckRow]:
    """The due rows of one kind."""
    with database.session(write=False) as s:
        return list(s.scalars(select(ScheduledCheckRow).where(ScheduledCheckRow.kind == kind)
                              .order_by(ScheduledCheckRow.due_at)))

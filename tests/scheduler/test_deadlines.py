"""The other timed checks (CONTRACT section 7), end to end over HTTP: an unanswered
ready-for-discharge, meeting reminders, consent expiry and unacknowledged deliveries. Each
fires once, and is cancelled, moved or dropped when what it waits for happens."""

from __future__ import annotations

import copy
import uuid
from datetime import timedelta

from fastapi.testclient import TestClient

from hub.config import Settings
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.delivery.content import message_bundle
from hub.delivery.dispatcher import publish
from hub.fhir.datetimes import parse
from hub.fhir.validation import validate_message
from hub.scheduler.sweep import sweep
from hub.store.dates import format_instant
from tests.scheduler.story import accepted, checks, example, notices

Hub = dict[str, TestClient]


def _routes(database: Database, event: str) -> list[list[tuple[str, str]]]:
    return [[(d.receiver_org, d.status) for d in deliveries]
            for _m, deliveries in notices(database, event)]


def _valid(database: Database, event: str) -> dict:
    message, _ = notices(database, event)[-1]
    with database.session(write=False) as s:
        bundle = message_bundle(s, message)
    assert validate_message(bundle) == []
    return bundle


# --- ready-for-discharge ---------------------------------------------------------------------


def test_unanswered_ready_for_discharge_tells_both_sides_once(
        hub: Hub, database: Database, settings: Settings) -> None:
    accepted(hub, example(3))  # the admission (example 9 names its Patient entry)
    question = example(9)
    accepted(hub, question)
    # Counted from when it was asked, not from the day the suite runs (example 9 has a
    # fixed date in the past).
    authored = parse(next(e["resource"]["authoredOn"] for e in question["entry"]
                          if e["resource"]["resourceType"] == "Task"))
    assert authored is not None
    asked = authored.low
    later = asked + timedelta(hours=25)
    assert sweep(database, settings, now=asked + timedelta(hours=23)).outcomes.get(
        "notified") is None
    assert sweep(database, settings, now=later).outcomes == {"notified": 1}
    assert sweep(database, settings, now=later).acted == 0
    assert _routes(database, "discharge-readiness-overdue") == [
        [("jaeren-dps", "queued"), ("time-kommune", "queued")]]
    bundle = _valid(database, "discharge-readiness-overdue")
    assert bundle["entry"][1]["resource"]["status"] == "requested"


def test_withdrawn_and_answered_ready_for_discharge_are_not_chased(
        hub: Hub, database: Database, settings: Settings) -> None:
    for number in (3, 9, 10, 11, 12):  # asked, withdrawn, asked again, accepted
        accepted(hub, example(number))
    assert sweep(database, settings, now=utcnow() + timedelta(days=3)).acted == 0
    assert notices(database, "discharge-readiness-overdue") == []
    assert sorted(r.outcome or "" for r in checks(database, "discharge-readiness")) == [
        "answered", "withdrawn"]


# --- meeting reminders -----------------------------------------------------------------------


def _invitation(start_in: timedelta, *, status: str = "booked",
                same_as: dict | None = None) -> dict:
    message = copy.deepcopy(same_as) if same_as else example(4)
    message["entry"][0]["resource"]["id"] = str(uuid.uuid4())
    meeting = message["entry"][1]["resource"]
    start = utcnow().replace(microsecond=0) + start_in
    meeting["start"] = format_instant(start)
    meeting["end"] = format_instant(start + timedelta(hours=1))
    meeting["status"] = status
    if status == "cancelled":
        meeting["cancelationReason"] = {"text": "Pasienten er innlagt; nytt møte avtales."}
    return message


def test_meeting_reminder_a_day_before_moves_with_the_meeting_and_goes_once(
        hub: Hub, database: Database, settings: Settings) -> None:
    accepted(hub, example(1))  # the consent names Time kommune
    first = _invitation(timedelta(days=3))
    accepted(hub, first)
    assert sweep(database, settings, now=utcnow() + timedelta(days=1)).acted == 0
    accepted(hub, _invitation(timedelta(days=5), same_as=first))  # moved two days on
    assert sweep(database, settings, now=utcnow() + timedelta(days=2, hours=1)).acted == 0
    at = utcnow() + timedelta(days=4, hours=1)
    assert sweep(database, settings, now=at).outcomes == {"notified": 1}
    assert sweep(database, settings, now=at).acted == 0
    # the organising centre is reminded of its own meeting (no consent asked); Time kommune
    # because the consent names it
    assert _routes(database, "meeting-reminder") == [
        [("jaeren-dps", "queued"), ("time-kommune", "queued")]]
    [(_m, deliveries)] = notices(database, "meeting-reminder")
    assert deliveries[0].basis == "own-records"
    assert deliveries[1].basis is not None
    assert deliveries[1].basis.startswith("Consent/")
    _valid(database, "meeting-reminder")


def test_a_consent_change_recheck_of_a_reminder_asks_the_meetings_consent(
        hub: Hub, database: Database, settings: Settings) -> None:
    """A consent change re-decides what is still queued for the patient. For the hub's own
    reminder the consents that apply are those of the meeting's organiser (as on
    acceptance), not the hub's, which has none: the consent sent again keeps Time kommune's
    reminder queued. Control: revoking it withdraws Time's, and the organiser's stays."""
    accepted(hub, example(1))
    accepted(hub, _invitation(timedelta(days=3)))
    sweep(database, settings, now=utcnow() + timedelta(days=2, hours=1))
    assert _routes(database, "meeting-reminder") == [
        [("jaeren-dps", "queued"), ("time-kommune", "queued")]]
    accepted(hub, _consent(None))  # the same consent again: a consent change that permits
    assert _routes(database, "meeting-reminder") == [
        [("jaeren-dps", "queued"), ("time-kommune", "queued")]]
    accepted(hub, _consent(None, status="inactive"))
    assert _routes(database, "meeting-reminder") == [
        [("jaeren-dps", "queued"), ("time-kommune", "withheld")]]


def test_cancelled_meeting_gets_no_reminder(hub: Hub, database: Database,
                                            settings: Settings) -> None:
    accepted(hub, example(1))
    first = _invitation(timedelta(days=3))
    accepted(hub, first)
    accepted(hub, _invitation(timedelta(days=3), status="cancelled", same_as=first))
    assert sweep(database, settings, now=utcnow() + timedelta(days=3)).acted == 0
    assert notices(database, "meeting-reminder") == []
    assert [r.outcome for r in checks(database, "meeting-reminder")] == ["cancelled"]


# --- consent expiry --------------------------------------------------------------------------


def _consent(ends_in: timedelta | None, *, status: str = "active",
             same_as: dict | None = None) -> dict:
    message = copy.deepcopy(same_as) if same_as else example(1)
    message["entry"][0]["resource"]["id"] = str(uuid.uuid4())
    consent = message["entry"][1]["resource"]
    consent["status"] = status
    period = consent["provision"]["period"]
    period.pop("end", None)
    if ends_in is not None:
        period["end"] = format_instant(utcnow().replace(microsecond=0) + ends_in)
    return message


def test_custodian_is_told_a_week_before_a_consent_ends(
        hub: Hub, database: Database, settings: Settings) -> None:
    first = _consent(timedelta(days=10))
    accepted(hub, first)
    assert sweep(database, settings, now=utcnow() + timedelta(days=2)).acted == 0
    accepted(hub, _consent(timedelta(days=20), same_as=first))  # extended
    assert sweep(database, settings, now=utcnow() + timedelta(days=4)).acted == 0
    at = utcnow() + timedelta(days=14)
    assert sweep(database, settings, now=at).outcomes == {"notified": 1}
    assert sweep(database, settings, now=at).acted == 0
    assert _routes(database, "consent-expiring") == [[("jaeren-dps", "queued")]]
    bundle = _valid(database, "consent-expiring")
    assert bundle["entry"][1]["resource"]["resourceType"] == "Consent"


def test_a_revoked_consent_is_not_announced(hub: Hub, database: Database,
                                            settings: Settings) -> None:
    first = _consent(timedelta(days=5))
    accepted(hub, first)
    accepted(hub, _consent(timedelta(days=5), status="inactive", same_as=first))
    assert sweep(database, settings, now=utcnow() + timedelta(days=4)).acted == 0
    assert notices(database, "consent-expiring") == []


# --- deliveries not acknowledged -------------------------------------------------------------


def _pull(hub: Hub, database: Database) -> None:
    publish(database)
    r = hub["time-kommune"].get("/fhir/Bundle",
                                params={"message.receiver": "Organization/time-kommune"})
    assert r.status_code == 200, r.text
    assert r.json()["entry"], "nothing to pull"


def test_sender_is_told_of_a_delivery_left_unacknowledged(
        hub: Hub, database: Database, settings: Settings) -> None:
    accepted(hub, example(3))  # admission-notice: answered only on error, not chased
    accepted(hub, example(9))  # ready-for-discharge: statutory basis, an answer is required
    _pull(hub, database)
    assert [r.target.split("/")[0] for r in checks(database, "ack-timeout")] == ["Delivery"]
    sweep(database, settings, now=utcnow() + timedelta(hours=23))  # (the question is overdue)
    assert [r.outcome for r in checks(database, "ack-timeout")] == [None]
    at = utcnow() + timedelta(hours=25)
    sweep(database, settings, now=at)
    assert sweep(database, settings, now=at).acted == 0
    assert [r.outcome for r in checks(database, "ack-timeout")] == ["notified"]
    assert _routes(database, "delivery-unacknowledged") == [[("jaeren-dps", "queued")]]
    bundle = _valid(database, "delivery-unacknowledged")
    said = bundle["entry"][1]["resource"]["payload"][0]["contentString"]
    assert "ready-for-discharge" in said
    assert "Organization/time-kommune" in said
    # the sender reads the Communication as its own
    found = hub["jaeren-dps"].get("/fhir/Communication").json()["entry"]
    assert len(found) == 1
    # and the hub's own notices are not chased in turn
    publish(database)
    hub["jaeren-dps"].get("/fhir/Bundle", params={"message.receiver": "Organization/jaeren-dps"})
    assert len(checks(database, "ack-timeout")) == 1


def test_a_message_answered_only_on_error_is_not_chased(hub: Hub, database: Database,
                                                         settings: Settings) -> None:
    accepted(hub, example(3))  # admission-notice: responseRequired on-error
    _pull(hub, database)
    assert checks(database, "ack-timeout") == []
    assert sweep(database, settings, now=utcnow() + timedelta(days=2)).acted == 0
    assert notices(database, "delivery-unacknowledged") == []


def test_an_acknowledged_delivery_is_not_chased(hub: Hub, database: Database,
                                                settings: Settings) -> None:
    accepted(hub, example(3))
    question = example(9)
    accepted(hub, question)
    _pull(hub, database)
    ack = example(15)
    header = ack["entry"][0]["resource"]
    header["eventCoding"]["code"] = "ready-for-discharge"
    header["response"]["identifier"] = question["entry"][0]["resource"]["id"]
    accepted(hub, ack)
    sweep(database, settings, now=utcnow() + timedelta(days=2))
    assert [r.outcome for r in checks(database, "ack-timeout")] == ["acknowledged"]
    assert notices(database, "delivery-unacknowledged") == []


def test_a_hub_notice_cannot_be_posted_by_an_organisation(hub: Hub) -> None:
    message = example(16)
    header = message["entry"][0]["resource"]
    header["sender"] = {"reference": "Organization/jaeren-dps"}
    r = hub["jaeren-dps"].post("/fhir/$process-message", json=message)
    assert r.status_code == 422, r.text
    assert "the hub itself sends" in r.text

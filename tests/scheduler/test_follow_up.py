"""Follow-up after discharge (CONTRACT section 7), end to end over HTTP: the checks a
discharge makes, the contacts that meet them, and the escalation of those that fall due."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.audit.models import AuditRecordRow
from hub.config import Settings
from hub.db.engine import Database
from hub.delivery import content
from hub.delivery.content import message_bundle
from hub.fhir.datetimes import parse
from hub.fhir.validation import validate_message
from hub.scheduler.sweep import sweep
from tests.access_clients import other_client
from tests.factories import fnr
from tests.messaging.test_story import post, register_story_organizations
from tests.scheduler.story import (
    accepted,
    checks,
    consent,
    contact,
    discharge,
    example,
    follow_up_tasks,
    notes,
    notices,
    oslo,
    overdue,
)

Hub = dict[str, TestClient]


def _due(task: dict) -> object:
    found = parse(task["restriction"]["period"]["end"])
    assert found is not None
    return found.low


def test_discharge_makes_three_checks_owned_by_the_municipality(hub: Hub) -> None:
    accepted(hub, consent())  # the consent names Time kommune
    discharged = oslo(1, 14)
    answer = accepted(hub, discharge(discharged))
    assert "Follow-up checks scheduled for Organization/time-kommune" in notes(answer)
    tasks = follow_up_tasks(hub)
    assert sorted(tasks) == ["first-contact", "second-check", "third-check"]
    assert _due(tasks["first-contact"]) == discharged + timedelta(hours=72)
    assert _due(tasks["second-check"]) == discharged + timedelta(days=7)
    assert _due(tasks["third-check"]) == discharged + timedelta(days=30)
    for task in tasks.values():
        assert task["status"] == "requested"
        assert task["owner"] == {"reference": "Organization/time-kommune"}
        assert task["requester"] == {"reference": "Organization/jaeren-dps"}
        assert task["focus"]["reference"].startswith("Encounter/")
        assert task["for"]["reference"].startswith("Patient/")
        assert not overdue(task)
    # the municipality reads them too (the consent names it)
    seen = hub["time-kommune"].get("/fhir/Task", params={"code": "follow-up-check"}).json()
    assert len(seen["entry"]) == 3


def test_checks_of_a_discharge_kept_from_the_municipality_are_the_centres(
        hub: Hub, database: Database, settings: Settings) -> None:
    """No consent names Time kommune and the discharge-notice has no legal basis, so it is
    withheld: the follow-up checks must not tell it (a Task's owner reads the Task), so the
    centre owns them. The overdue alarm still goes out as the legal basis of the hub's
    notices allows (the test of the first sweep shows the municipality's part)."""
    answer = accepted(hub, discharge(oslo(1, 14)))
    said = notes(answer)
    assert "Withheld from Organization/time-kommune" in said
    assert "Organization/time-kommune is not told of this discharge" in said
    assert "Follow-up checks scheduled for Organization/jaeren-dps" in said
    tasks = follow_up_tasks(hub)
    assert sorted(tasks) == ["first-contact", "second-check", "third-check"]
    assert all(t["owner"] == {"reference": "Organization/jaeren-dps"} for t in tasks.values())
    municipality = hub["time-kommune"]
    seen = municipality.get("/fhir/Task", params={"code": "follow-up-check"}).json()
    assert [e["resource"]["resourceType"] for e in seen.get("entry", [])
            if e["search"]["mode"] == "match"] == []
    for task in tasks.values():
        assert municipality.get(f"/fhir/Task/{task['id']}").status_code == 404
    assert sorted(c.recipients for c in checks(database, "follow-up")) == [
        "time-kommune,jaeren-dps"] * 3
    # control: once the patient's consent names Time kommune, the next stay's checks are its
    # own (and the consent, recorded by the centre, now opens the first stay's to it too)
    accepted(hub, consent())
    accepted(hub, discharge(oslo(1, 16)))
    seen = municipality.get("/fhir/Task", params={"code": "follow-up-check"}).json()
    owners = [e["resource"]["owner"]["reference"] for e in seen["entry"]]
    assert sorted(owners) == ["Organization/jaeren-dps"] * 3 + ["Organization/time-kommune"] * 3


def test_a_task_another_organisation_gives_the_checks_identifier_takes_nothing(
        hub: Hub, database: Database) -> None:
    """The checks' ids are random and an earlier set is recognised only among the centre's
    own Tasks: a Task written first by another organisation under the check's identifier
    neither blocks the discharge nor stands in for a check."""
    accepted(hub, consent())
    admission = example(3)  # the stay, which the consent lets Time kommune read
    key = admission["entry"][1]["resource"]["identifier"][0]["value"]
    accepted(hub, admission)
    [stay] = hub["time-kommune"].get("/fhir/Encounter", params={
        "identifier": f"urn:ietf:rfc:3986|{key}"}).json()["entry"]
    squat = hub["time-kommune"].post("/fhir/Task", json={
        "resourceType": "Task", "status": "requested", "intent": "order",
        "identifier": [{"system": "http://carehub.example/fhir/sid/follow-up-check",
                        "value": f"{stay['resource']['id']}/first-contact"}]})
    assert squat.status_code == 201, squat.text
    message = discharge(oslo(1, 14), encounter=key)
    assert "Follow-up checks scheduled" in notes(accepted(hub, message))
    tasks = follow_up_tasks(hub)
    assert tasks["first-contact"]["id"] != squat.json()["id"]
    assert tasks["first-contact"]["requester"] == {"reference": "Organization/jaeren-dps"}
    assert len(checks(database, "follow-up")) == 3
    assert squat.json()["id"] not in {c.target.split("/")[1] for c in checks(database,
                                                                            "follow-up")}


def test_suicide_risk_makes_the_first_contact_due_in_48_hours(hub: Hub) -> None:
    discharged = oslo(1, 9)
    accepted(hub, discharge(discharged, suicide_risk=True))
    assert _due(follow_up_tasks(hub)["first-contact"]) == discharged + timedelta(hours=48)


def test_a_discharge_sent_again_makes_no_second_set(hub: Hub, database: Database) -> None:
    discharged = oslo(2, 11)
    first = discharge(discharged)
    encounter = first["entry"][1]["resource"]["identifier"][0]["value"]
    accepted(hub, first)
    again = accepted(hub, discharge(discharged + timedelta(hours=1), encounter=encounter))
    assert "scheduled before and stand as they were" in notes(again)
    assert len(checks(database, "follow-up")) == 3
    assert len(follow_up_tasks(hub)) == 3
    assert _due(follow_up_tasks(hub)["first-contact"]) == discharged + timedelta(hours=72)


def test_a_past_discharge_is_overdue_at_the_first_sweep_once(
        hub: Hub, database: Database, settings: Settings) -> None:
    accepted(hub, discharge(oslo(40, 10)))
    report = sweep(database, settings)
    assert report.outcomes == {"escalated": 3}
    tasks = follow_up_tasks(hub)
    assert all(overdue(t) and t["status"] == "requested" for t in tasks.values())
    assert all(t["meta"]["versionId"] == "2" for t in tasks.values())
    flags = hub["jaeren-dps"].get("/fhir/Flag").json()["entry"]
    hub_flags = [f["resource"] for f in flags if f["resource"]["identifier"][0]["system"]
                 .endswith("follow-up-overdue-flag")]
    assert len(hub_flags) == 3
    assert all(f["status"] == "active" for f in hub_flags)
    sent = notices(database, "follow-up-overdue")
    assert len(sent) == 3
    for message, deliveries in sent:
        assert message.sender_org == "carehub"
        # the centre is told of its own follow-up Task; the municipality on the legal basis
        assert [(d.receiver_org, d.status, d.basis) for d in deliveries] == [
            ("jaeren-dps", "queued", "own-records"),
            ("time-kommune", "queued", "helsepersonelloven-45")]
        with database.session(write=False) as s:
            bundle = message_bundle(s, message)
        assert validate_message(bundle) == []
        header = bundle["entry"][0]["resource"]
        assert header["source"]["endpoint"] == "http://testserver/fhir"
        assert "sender" not in header
        task = bundle["entry"][1]["resource"]
        assert overdue(task)
        assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
            "MessageHeader", "Task", "Patient"]
    # each escalation exactly once
    assert sweep(database, settings).acted == 0
    assert len(notices(database, "follow-up-overdue")) == 3
    assert len(hub["jaeren-dps"].get("/fhir/Flag").json()["entry"]) == 3
    # audited as the hub: the Task versions, the Flags, the decisions and the messages
    with database.session(write=False) as s:
        rows = s.execute(select(AuditRecordRow.subtype, AuditRecordRow.action).where(
            AuditRecordRow.agent == "System/carehub")).all()
    kinds = [tuple(r) for r in rows]
    assert kinds.count(("update", "U")) >= 3
    assert kinds.count(("create", "C")) >= 3 + 3  # the Tasks at discharge, then the Flags
    assert kinds.count(("operation", "E")) == 3
    assert kinds.count(("disclose", "R")) == 6


def test_the_notice_is_withheld_without_consent_when_no_legal_basis_is_set(
        hub: Hub, database: Database, settings: Settings) -> None:
    """With the legal basis switched off, the municipality gets the overdue notice only
    where the patient's consent names it. The centre, whose follow-up Task it is, is always
    told (its own records: no consent asked), or nobody would notice the missed visit."""
    accepted(hub, discharge(oslo(40, 10)))  # no consent recorded
    consent_only = settings.model_copy(update={"follow_up_legal_basis": ""})
    sweep(database, consent_only)
    found = notices(database, "follow-up-overdue")
    assert found
    for message, deliveries in found:
        assert [(d.receiver_org, d.status, d.basis) for d in deliveries] == [
            ("jaeren-dps", "queued", "own-records"), ("time-kommune", "withheld", None)]
        # the send-time re-check decides as acceptance did: the consent the centre (whose
        # Task the notice is about) recorded, not the hub's own, which it has none of
        with database.session(write=False) as s:
            bundle = content.message_bundle(s, message)
            again = [content.verdict_now(s, consent_only, message, d, bundle).decision
                     for d in deliveries]
        assert again == [d.decision for d in deliveries]


def test_without_a_legal_basis_the_consent_naming_the_municipality_lets_it_be_told(
        hub: Hub, database: Database, settings: Settings) -> None:
    accepted(hub, example(1))  # the consent names Time kommune
    accepted(hub, discharge(oslo(40, 10)))
    sweep(database, settings.model_copy(update={"follow_up_legal_basis": ""}))
    found = notices(database, "follow-up-overdue")
    assert found
    for _message, deliveries in found:
        assert [(d.receiver_org, d.status) for d in deliveries] == [
            ("jaeren-dps", "queued"), ("time-kommune", "queued")]
        assert deliveries[1].basis is not None
        assert deliveries[1].basis.startswith("Consent/")


def test_a_contact_the_day_after_meets_every_check(hub: Hub, database: Database,
                                                   settings: Settings) -> None:
    discharged = oslo(2, 10)
    accepted(hub, consent())  # the municipality owns the checks it meets
    accepted(hub, discharge(discharged))
    answer = accepted(hub, contact(oslo(1, 9)))
    assert "meets the follow-up checks" in notes(answer)
    tasks = follow_up_tasks(hub)
    assert all(t["status"] == "completed" for t in tasks.values())
    assert all(t["output"][0]["valueReference"]["reference"].startswith("Encounter/")
               for t in tasks.values())
    assert sweep(database, settings, now=discharged + timedelta(days=40)).acted == 0
    assert notices(database, "follow-up-overdue") == []


def test_a_contact_on_the_discharge_day_does_not_count(hub: Hub, database: Database,
                                                       settings: Settings) -> None:
    discharged = oslo(4, 10)
    accepted(hub, consent())  # the municipality owns the checks it meets
    accepted(hub, discharge(discharged))
    answer = accepted(hub, contact(oslo(4, 22)))  # late evening, same day in Oslo
    assert "discharge day does not meet" in notes(answer)
    assert all(t["status"] == "requested" for t in follow_up_tasks(hub).values())
    report = sweep(database, settings)
    assert report.outcomes == {"escalated": 1}  # the first contact was due yesterday
    assert overdue(follow_up_tasks(hub)["first-contact"])


def test_a_contact_after_due_leaves_that_check_overdue(hub: Hub, database: Database,
                                                       settings: Settings) -> None:
    discharged = oslo(10, 10)
    accepted(hub, consent())  # the municipality owns the checks it meets
    accepted(hub, discharge(discharged))
    assert sweep(database, settings).outcomes == {"escalated": 2}  # 72 h and 7 days
    accepted(hub, contact(oslo(1, 12)))  # day 9: after both of them, before day 30
    tasks = follow_up_tasks(hub)
    assert tasks["first-contact"]["status"] == "requested"
    assert overdue(tasks["first-contact"])
    assert tasks["second-check"]["status"] == "requested"
    assert tasks["third-check"]["status"] == "completed"


def test_a_timely_contact_reported_late_still_meets_the_check(
        hub: Hub, database: Database, settings: Settings) -> None:
    discharged = oslo(5, 10)
    patient = fnr(start=40)
    accepted(hub, consent(fnr=patient))  # the municipality owns the checks it meets
    accepted(hub, discharge(discharged, fnr=patient))
    assert sweep(database, settings).outcomes == {"escalated": 1}
    accepted(hub, contact(oslo(4, 10), fnr=patient))  # the day after discharge
    tasks = follow_up_tasks(hub)
    assert all(t["status"] == "completed" for t in tasks.values())
    assert not overdue(tasks["first-contact"])
    flags = [f["resource"] for f in hub["jaeren-dps"].get("/fhir/Flag").json()["entry"]]
    assert [f["status"] for f in flags] == ["inactive"]


def test_a_patient_without_checks_is_unaffected_by_a_contact(hub: Hub) -> None:
    answer = accepted(hub, contact(oslo(1, 12), fnr=fnr(start=60)))
    assert "meets" not in notes(answer)


def test_the_municipality_cannot_take_the_overdue_mark_off_an_open_check(
        hub: Hub, database: Database, settings: Settings) -> None:
    """The overdue businessStatus is the hub's escalation: the Task's owner may move the
    check along (in-progress, a note) but not erase the mark while the check is open; it goes
    when the check is completed."""
    accepted(hub, consent())
    accepted(hub, discharge(oslo(5, 10)))
    assert sweep(database, settings).outcomes == {"escalated": 1}
    municipality = hub["time-kommune"]
    task = follow_up_tasks(hub)["first-contact"]
    assert overdue(task)
    erased = {k: v for k, v in task.items() if k not in ("businessStatus", "meta")}
    r = municipality.put(f"/fhir/Task/{task['id']}", json={**erased, "status": "in-progress"})
    assert r.status_code == 422, r.text
    assert "overdue is the hub's mark" in r.json()["issue"][0]["diagnostics"]
    marked = {**task, "businessStatus": {"text": "ok"}}
    assert municipality.put(f"/fhir/Task/{task['id']}", json=marked).status_code == 422
    assert follow_up_tasks(hub)["first-contact"]["meta"]["versionId"] == task["meta"]["versionId"]
    # control: the owner takes the check on, the mark kept, then completes it without
    kept = {k: v for k, v in task.items() if k != "meta"}
    r = municipality.put(f"/fhir/Task/{task['id']}", json={**kept, "status": "in-progress"})
    assert r.status_code == 200, r.text
    assert overdue(r.json())
    r = municipality.put(f"/fhir/Task/{task['id']}", json={**erased, "status": "completed"})
    assert r.status_code == 200, r.text
    assert not overdue(r.json())


def test_a_contact_from_an_organisation_the_discharge_was_not_sent_to_learns_nothing(
        settings: Settings, database: Database) -> None:
    """Klepp kommune, named in nothing, reports contacts with a person the centre discharged:
    the answer neither carries the contact back to the centre as a reply (Klepp answers no
    notice of its), nor says anything of the person's checks (too early, too late), and the
    checks stay as they were."""
    register_story_organizations(database, klepp=True)
    with other_client(settings, database, "jaeren-dps") as dps, \
            other_client(settings, database, "time-kommune") as time, \
            other_client(settings, database, "klepp-kommune") as klepp:
        hub = {"jaeren-dps": dps, "time-kommune": time, "klepp-kommune": klepp}
        accepted(hub, consent())
        accepted(hub, discharge(oslo(10, 10)))
        said = []
        for at in (oslo(10, 22), oslo(1, 12)):  # the discharge day; after two checks' due
            message = contact(at)
            message["entry"][0]["resource"]["sender"] = {"reference": "Organization/klepp-kommune"}
            said.append(notes(accepted(hub, message)))
        for words in said:
            assert "Withheld from Organization/jaeren-dps" in words
            assert "reply" not in words
            assert "discharge day" not in words
            assert "overdue" not in words
            assert "meets" not in words
        assert all(t["status"] == "requested" for t in follow_up_tasks(hub).values())
        # control: Time kommune, which the notice went to, answers it and meets the check
        words = notes(accepted(hub, contact(oslo(9, 12))))
        assert "(legal basis reply)" in words
        assert "meets the follow-up checks" in words


def test_a_discharge_at_the_end_of_the_calendar_is_refused_not_failed(
        hub: Hub, database: Database) -> None:
    """The checks count from the discharge time; one they cannot count from (the year 9999)
    is the sender's to correct: a 422 naming it, nothing kept, not a 500 to be retried."""
    message = discharge(oslo(1, 14))
    stay = message["entry"][1]["resource"]
    stay["period"] = {"start": "9999-12-20T10:00:00Z", "end": "9999-12-31T10:00:00Z"}
    r = post(hub, message)
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert "too near the end of the calendar" in issue["diagnostics"]
    assert issue["expression"] == ["Encounter.period.end"]
    assert checks(database, "follow-up") == []
    assert follow_up_tasks(hub) == {}
    assert post(hub, discharge(oslo(1, 14))).status_code == 200  # control

"""Meetings end to end over HTTP (meeting-invitation, meeting-response; hub/workflows/
meetings.py): the patient is always invited, only a booked meeting is changed, cancelled or
answered, answers are recorded in the meeting; each broken rule a 422 that changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.workflows.plan_messages import (
    JSON,
    OLA,
    accepted,
    again,
    answer,
    consent,
    found,
    hub3,  # noqa: F401  (fixture)
    meeting,
    post,
    refused,
    resource,
)

Hub = dict[str, TestClient]
MEETING_KEY = "https://jaeren-dps.example.no/fhir/id/meeting|m-1"


@pytest.fixture
def booked(hub3: Hub) -> Hub:  # noqa: F811
    """Kari consents to sharing with Time kommune; Jæren DPS books a network meeting."""
    accepted(hub3, consent(making=False))
    accepted(hub3, meeting())
    return hub3


def _the_meeting(hub: Hub) -> JSON:
    [stored] = found(hub, "jaeren-dps", "Appointment", identifier=MEETING_KEY)
    return stored


def _status_of(stored: JSON, reference_type: str) -> list[str]:
    return [p["status"] for p in stored["participant"]
            if p["actor"]["reference"].startswith(f"{reference_type}/")]


def _cancelled(**kwargs: Any) -> JSON:
    message = meeting(status="cancelled", **kwargs)
    resource(message, "Appointment")["cancelationReason"] = {"text": "Behandler er syk"}
    return message


def test_network_meeting_is_recorded_and_said(hub3: Hub) -> None:  # noqa: F811
    said = accepted(hub3, meeting())
    assert "network meeting" in said
    assert "'Bolig og arbeid etter utskrivning'" in said
    assert "booked" in said
    stored = _the_meeting(hub3)
    assert stored["status"] == "booked"
    patient_ref = found(hub3, "jaeren-dps", "Patient")[0]["id"]
    [own] = [p for p in stored["participant"]
             if p["actor"]["reference"] == f"Patient/{patient_ref}"]
    assert own["required"] == "required"
    [sister] = found(hub3, "jaeren-dps", "RelatedPerson")
    assert sister["patient"]["reference"] == f"Patient/{patient_ref}"


@pytest.mark.parametrize("kind", ["network", "cooperation", "responsibility"])
def test_a_meeting_without_the_patient_is_refused(hub3: Hub, kind: str) -> None:  # noqa: F811
    issues = refused(hub3, meeting(kind=kind, with_patient=False))
    assert "is not among the participants" in issues[0]["diagnostics"]
    assert issues[0]["expression"] == ["Bundle.entry[1].resource.participant"]
    assert found(hub3, "jaeren-dps", "Appointment") == []
    assert found(hub3, "jaeren-dps", "Patient") == []


def test_in_a_network_meeting_the_patient_is_required(hub3: Hub) -> None:  # noqa: F811
    issues = refused(hub3, meeting(patient_required="optional"))
    assert "required participant" in issues[0]["diagnostics"]
    assert found(hub3, "jaeren-dps", "Appointment") == []


@pytest.mark.parametrize("kind", ["cooperation", "responsibility"])
def test_in_a_services_meeting_the_patient_may_be_asked_only(hub3: Hub, kind: str) -> None:  # noqa: F811
    accepted(hub3, meeting(kind=kind, patient_required="optional"))
    assert _the_meeting(hub3)["serviceType"][0]["coding"][0]["code"] == kind


def test_a_relative_of_someone_else_is_refused(hub3: Hub) -> None:  # noqa: F811
    accepted(hub3, meeting(number=OLA, key="m-ola"))  # Ola's sister is stored with him
    message = meeting()
    sister = next(e for e in message["entry"] if e["resource"]["resourceType"] == "RelatedPerson")
    sister["resource"]["patient"] = {"identifier": {
        "system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": OLA}, "type": "Patient"}
    issues = refused(hub3, message)
    assert "is a relation of Patient/" in issues[0]["diagnostics"]
    assert issues[0]["expression"] == ["Bundle.entry[1].resource.participant[1].actor"]


@pytest.mark.parametrize("profile_change", [
    ("status", "proposed", "cmt-2"),
    ("description", None, "Appointment.description is required"),
    ("end", "2026-12-03T12:00:00+01:00", "cmt-1"),
])
def test_profile_rules_name_the_element(hub3: Hub, profile_change: tuple[str, Any, str]) -> None:  # noqa: F811
    key, value, words = profile_change
    message = meeting()
    if value is None:
        resource(message, "Appointment").pop(key)
    else:
        resource(message, "Appointment")[key] = value
    issues = refused(hub3, message)
    assert any(words in i["diagnostics"] for i in issues), issues


def test_a_new_meeting_is_sent_booked(hub3: Hub) -> None:  # noqa: F811
    issues = refused(hub3, _cancelled())
    assert "a new meeting is sent as booked; this one is cancelled" in issues[0]["diagnostics"]
    assert issues[0]["expression"] == ["Bundle.entry[1].resource.status"]


def test_a_booked_meeting_is_changed_then_cancelled_then_not_again(booked: Hub) -> None:
    moved = meeting()
    resource(moved, "Appointment")["start"] = "2026-12-04T13:00:00+01:00"
    resource(moved, "Appointment")["end"] = "2026-12-04T14:00:00+01:00"
    assert "changed (booked), version 2" in accepted(booked, moved)
    assert "cancelled, version 3" in accepted(booked, _cancelled())
    stored = _the_meeting(booked)
    assert (stored["status"], stored["meta"]["versionId"]) == ("cancelled", "3")
    for late in (meeting(), again(_cancelled())):
        issues = refused(booked, late)
        assert "is cancelled at the hub; only a booked meeting can be changed or cancelled" in (
            issues[0]["diagnostics"])
        assert issues[0]["expression"] == ["Bundle.entry[1].resource.status"]
    assert _the_meeting(booked)["meta"]["versionId"] == "3"


def test_an_invitation_sent_again_unchanged_keeps_the_meetings_version(booked: Hub) -> None:
    said = accepted(booked, again(meeting()))
    assert "sent again unchanged (booked), version 1" in said
    assert _the_meeting(booked)["meta"]["versionId"] == "1"
    moved = meeting()
    resource(moved, "Appointment")["start"] = "2026-12-04T13:00:00+01:00"
    resource(moved, "Appointment")["end"] = "2026-12-04T14:00:00+01:00"
    assert "changed (booked), version 2" in accepted(booked, moved)


def test_a_cancellation_says_why(booked: Hub) -> None:
    issues = refused(booked, meeting(status="cancelled"))
    assert any("cmt-3" in i["diagnostics"] and "cancelationReason" in i["diagnostics"]
               for i in issues)
    assert _the_meeting(booked)["status"] == "booked"


def test_a_fulfilled_meeting_is_not_changed(booked: Hub) -> None:
    accepted(booked, meeting(status="fulfilled"))
    issues = refused(booked, meeting())
    assert "is fulfilled at the hub" in issues[0]["diagnostics"]


def test_the_patients_decline_and_wishes_are_recorded(booked: Hub) -> None:
    said = accepted(booked, answer())
    assert "The patient answered declined" in said
    assert "recorded in the meeting, version 2" in said
    assert "'Jeg vil at boligsituasjonen tas opp.'" in said
    assert "required participant of this network meeting and declined" in said
    stored = _the_meeting(booked)
    assert stored["meta"]["versionId"] == "2"
    assert _status_of(stored, "Patient") == ["declined"]
    assert _status_of(stored, "RelatedPerson") == ["needs-action"]
    [kept] = found(booked, "time-kommune", "AppointmentResponse")
    assert kept["comment"] == "Jeg vil at boligsituasjonen tas opp."
    assert kept["appointment"]["reference"] == f"Appointment/{stored['id']}"


def test_answers_from_several_participants_are_all_kept(booked: Hub) -> None:
    accepted(booked, answer(status="accepted"))
    said = accepted(booked, answer(status="tentative", key="a-2", comment=None,
                                   actor="Organization/time-kommune"))
    assert "Organization/time-kommune answered tentative" in said
    stored = _the_meeting(booked)
    assert _status_of(stored, "Patient") == ["accepted"]
    assert [p["status"] for p in stored["participant"]
            if p["actor"]["reference"] == "Organization/time-kommune"] == ["tentative"]
    # a changed answer is a new version of the answer, and of the meeting
    accepted(booked, answer(status="declined"))
    assert _status_of(_the_meeting(booked), "Patient") == ["declined"]
    assert _the_meeting(booked)["meta"]["versionId"] == "4"
    assert len(found(booked, "time-kommune", "AppointmentResponse")) == 2


def test_a_change_that_sets_answers_back_says_so(booked: Hub) -> None:
    accepted(booked, answer())
    moved = meeting()  # the organiser's system still has the patient at needs-action
    resource(moved, "Appointment")["start"] = "2026-12-04T13:00:00+01:00"
    resource(moved, "Appointment")["end"] = "2026-12-04T14:00:00+01:00"
    said = accepted(booked, moved)
    assert "sets answers the hub had recorded back to needs-action: Patient/" in said
    assert "(declined)" in said
    history = booked["jaeren-dps"].get(
        f"/fhir/Appointment/{_the_meeting(booked)['id']}/_history").json()["entry"]
    assert [_status_of(e["resource"], "Patient") for e in history] == [
        ["needs-action"], ["declined"], ["needs-action"]]


def test_the_same_answer_again_does_not_change_the_meeting(booked: Hub) -> None:
    accepted(booked, answer())
    said = accepted(booked, answer(key="a-2"))
    assert "the meeting already had that answer" in said
    assert _the_meeting(booked)["meta"]["versionId"] == "2"


def test_an_answer_from_someone_not_invited_is_refused(booked: Hub) -> None:
    issues = refused(booked, answer(actor="Organization/klepp-kommune"))
    assert "Organization/klepp-kommune, who is not invited" in issues[0]["diagnostics"]
    assert issues[0]["expression"] == ["Bundle.entry[1].resource.actor"]
    assert found(booked, "time-kommune", "AppointmentResponse") == []
    assert _the_meeting(booked)["meta"]["versionId"] == "1"


@pytest.mark.parametrize("actor", [None, "Organization/klepp-kommune"])
def test_an_organisation_the_meeting_is_hidden_from_cannot_answer_it(
        booked: Hub, actor: str | None) -> None:
    """Klepp kommune has no consent of Kari's and was never sent the meeting: its answer, in
    the patient's name or its own, neither changes the organiser's meeting nor tells Klepp
    that the meeting exists (the refusal is the one for an unknown meeting)."""
    issues = refused(booked, answer(sender="klepp-kommune", actor=actor))
    unknown = refused(booked, answer(sender="klepp-kommune", actor=actor,
                                     meeting_key="no-such-meeting"))
    assert "which is no meeting the hub has" in issues[0]["diagnostics"]
    assert issues[0]["diagnostics"].replace("|m-1", "|no-such-meeting") == (
        unknown[0]["diagnostics"])
    assert "Nettverk" not in issues[0]["diagnostics"]  # nothing of the meeting is told
    assert found(booked, "klepp-kommune", "AppointmentResponse") == []
    assert _the_meeting(booked)["meta"]["versionId"] == "1"
    assert _status_of(_the_meeting(booked), "Patient") == ["needs-action"]
    # control: the municipality Kari's consent names answers the same meeting for her
    assert "The patient answered declined" in accepted(booked, answer())


def test_an_answer_to_a_cancelled_meeting_is_refused(booked: Hub) -> None:
    accepted(booked, _cancelled())
    issues = refused(booked, answer())
    assert "is cancelled (Behandler er syk); only a booked meeting is answered" in (
        issues[0]["diagnostics"])
    assert issues[0]["expression"] == ["Bundle.entry[1].resource.appointment"]
    assert found(booked, "time-kommune", "AppointmentResponse") == []
    assert _the_meeting(booked)["meta"]["versionId"] == "2"


def test_an_answer_to_an_unknown_meeting_is_refused(booked: Hub) -> None:
    issues = refused(booked, answer(meeting_key="no-such-meeting"))
    assert "which is no meeting the hub has" in issues[0]["diagnostics"]
    assert "|no-such-meeting" in issues[0]["diagnostics"]
    assert found(booked, "time-kommune", "AppointmentResponse") == []


def test_an_answer_about_another_patient_is_refused(booked: Hub) -> None:
    issues = refused(booked, answer(number=OLA))
    assert "is not about the message's patient" in issues[0]["diagnostics"]
    assert len(found(booked, "time-kommune", "Patient")) == 1  # Ola was not kept
    assert _the_meeting(booked)["meta"]["versionId"] == "1"


def test_an_invalid_answer_names_the_element(booked: Hub) -> None:
    message = answer()
    resource(message, "AppointmentResponse")["participantStatus"] = "needs-action"
    issues = refused(booked, message)
    assert any("cmr-1" in i["diagnostics"] for i in issues)
    assert post(booked, answer()).status_code == 200  # the right one is still taken


def test_a_meeting_at_the_start_of_the_calendar_is_refused_not_failed(
        hub3: Hub) -> None:  # noqa: F811
    """The reminder is due a day before the start; a start it cannot count back from is a
    422 naming it, and nothing is kept."""
    message = meeting()
    resource(message, "Appointment").update(start="0001-01-01T08:00:00Z",
                                            end="0001-01-01T09:00:00Z")
    issues = refused(hub3, message)
    assert any("too near the end of the calendar" in i["diagnostics"] for i in issues), issues
    assert found(hub3, "jaeren-dps", "Appointment") == []
    accepted(hub3, meeting())  # control

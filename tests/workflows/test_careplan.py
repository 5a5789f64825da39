"""The individual plan end to end over HTTP (care-plan-shared; hub/workflows/careplan.py):
what is stored and said, one current plan per patient, the patient's own goals, the care
team's coordinator, the consents; each broken rule a 422 that changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.fhir.vocab import is_individual_plan
from tests.conftest import SHARED
from tests.workflows.plan_messages import (
    BASE,
    JSON,
    OLA,
    accepted,
    again,
    consent,
    found,
    hub3,  # noqa: F401  (fixture)
    plan,
    post,
    refused,
    resource,
)

Hub = dict[str, TestClient]


def _nothing_kept(hub: Hub, before: dict[str, int]) -> None:
    """The counts of what Jæren DPS has stored are as before the refused message."""
    assert _counts(hub) == before


def _counts(hub: Hub) -> dict[str, int]:
    return {t: len(found(hub, "jaeren-dps", t)) for t in
            ("CarePlan", "Goal", "CareTeam", "Patient", "Bundle")}


@pytest.fixture
def consented(hub3: Hub) -> Hub:  # noqa: F811
    """Kari has consented to making an individual plan and sharing it with Time kommune."""
    accepted(hub3, consent())
    return hub3


def test_plan_is_stored_with_goals_care_team_and_said(consented: Hub) -> None:
    said = accepted(consented, plan())
    assert "Queued for Organization/time-kommune" in said
    assert "stored as a new plan" in said
    assert "2 goals of the patient's own" in said
    assert "'Tilbake i deltidsjobb'" in said
    assert "coordinator Organization/time-kommune" in said
    assert "the patient took part in making it" in said
    assert "Next revision with the patient: 2027-05-01" in said
    [stored] = found(consented, "jaeren-dps", "CarePlan")
    patient_ref = stored["subject"]["reference"]
    goals = found(consented, "jaeren-dps", "Goal")
    assert len(goals) == 2
    assert {g["expressedBy"]["reference"] for g in goals} == {patient_ref}
    assert sorted(g["reference"] for g in stored["goal"]) == sorted(
        f"Goal/{g['id']}" for g in goals)
    [team] = found(consented, "jaeren-dps", "CareTeam")
    assert stored["careTeam"] == [{"reference": f"CareTeam/{team['id']}"}]
    # the receiver reads what it was sent: the consent discloses the plan to Time kommune
    assert [p["id"] for p in found(consented, "time-kommune", "CarePlan")] == [stored["id"]]


def test_same_identifier_is_a_new_version(consented: Hub) -> None:
    accepted(consented, plan())
    revised = plan()
    resource(revised, "Goal", 1)["description"]["text"] = "Tilbake i full jobb"
    resource(revised, "CarePlan")["description"] = "Revidert etter samtale om jobben."
    said = accepted(consented, revised)
    assert "stored as version 2" in said
    [stored] = found(consented, "jaeren-dps", "CarePlan")
    assert stored["meta"]["versionId"] == "2"
    texts = sorted(g["description"]["text"] for g in found(consented, "jaeren-dps", "Goal"))
    assert texts == ["Ha god kontakt med søsteren min", "Tilbake i full jobb"]
    history = consented["jaeren-dps"].get(f"/fhir/CarePlan/{stored['id']}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]


def test_the_hubs_full_url_is_a_new_version(consented: Hub) -> None:
    accepted(consented, plan())
    [stored] = found(consented, "jaeren-dps", "CarePlan")
    revised = plan(key="other-key")
    entry = next(e for e in revised["entry"] if e["resource"]["resourceType"] == "CarePlan")
    old_url = entry["fullUrl"]
    entry["fullUrl"] = f"http://testserver/fhir/CarePlan/{stored['id']}"
    revised["entry"][0]["resource"]["focus"] = [{"reference": entry["fullUrl"]}]
    assert old_url not in json.dumps(revised["entry"][1:])
    said = accepted(consented, revised)
    assert "stored as version 2" in said
    assert len(found(consented, "jaeren-dps", "CarePlan")) == 1


def test_a_second_current_plan_is_refused_naming_the_first(consented: Hub) -> None:
    accepted(consented, plan())
    before = _counts(consented)
    issues = refused(consented, plan(key="ip-2"))
    text = issues[0]["diagnostics"]
    assert "already has a current individual plan" in text
    assert "https://jaeren-dps.example.no/fhir/id/plan|ip-1" in text  # send it as this
    assert "completed or revoked" in text  # or end that one first
    assert issues[0]["expression"] == ["Bundle.entry[1].resource.identifier"]
    _nothing_kept(consented, before)


def test_a_new_plan_once_the_old_one_is_ended(consented: Hub) -> None:
    accepted(consented, plan())
    assert "stored as version 2" in accepted(consented, plan(status="completed"))
    assert "stored as a new plan" in accepted(consented, plan(key="ip-2"))
    statuses = sorted(p["status"] for p in found(consented, "jaeren-dps", "CarePlan"))
    assert statuses == ["active", "completed"]


def test_another_patient_has_a_plan_of_their_own(hub3: Hub) -> None:  # noqa: F811
    accepted(hub3, consent())
    accepted(hub3, consent(number=OLA, key="c-2"))
    accepted(hub3, plan())
    assert "stored as a new plan" in accepted(hub3, plan(number=OLA, key="ip-ola"))


def test_a_draft_next_to_the_current_plan_is_kept(consented: Hub) -> None:
    accepted(consented, plan())
    assert "status draft" in accepted(consented, plan(key="ip-2", status="draft"))


def test_a_goal_set_by_someone_else_is_refused(consented: Hub) -> None:
    message = plan()
    resource(message, "Goal", 1)["expressedBy"] = {"reference": "Organization/jaeren-dps"}
    before = _counts(consented)
    issues = refused(consented, message)
    assert issues[0]["expression"] == ["Bundle.entry[4].resource.expressedBy"]
    assert "not by the patient" in issues[0]["diagnostics"]
    assert "'Tilbake i deltidsjobb'" in issues[0]["diagnostics"]
    _nothing_kept(consented, before)


def test_goal_about_another_patient_and_unlisted_goal_are_both_named(consented: Hub) -> None:
    message = plan()
    resource(message, "Goal", 0)["subject"] = {"reference": "Patient/someone-else"}
    resource(message, "CarePlan")["goal"].pop()  # the second Goal is carried but not named
    issues = refused(consented, message)
    texts = " ".join(i["diagnostics"] for i in issues)
    assert "is about Patient/someone-else, not the plan's patient" in texts
    assert "does not name in CarePlan.goal" in texts
    assert {"Bundle.entry[3].resource.subject", "Bundle.entry[4].resource"} <= {
        i["expression"][0] for i in issues}


def test_activity_of_an_unknown_organisation_is_refused(consented: Hub) -> None:
    message = plan()
    detail = resource(message, "CarePlan")["activity"][0]["detail"]
    detail["performer"] = [{"reference": "Organization/sola-kommune"}]
    issues = refused(consented, message)
    assert issues[0]["expression"] == ["Bundle.entry[1].resource.activity[0].detail.performer"]
    assert "no organisation registered with the hub" in issues[0]["diagnostics"]
    assert "'Hjemmetjeneste to ganger i uken'" in issues[0]["diagnostics"]


def test_activity_by_organisation_number_is_accepted(consented: Hub) -> None:
    message = plan()
    detail = resource(message, "CarePlan")["activity"][0]["detail"]
    detail["performer"] = [{"type": "Organization", "identifier": {
        "system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": "964969817"}}]  # Klepp kommune
    accepted(consented, message)
    [stored] = found(consented, "jaeren-dps", "CarePlan")
    assert stored["activity"][0]["detail"]["performer"][0]["reference"] == (
        "Organization/klepp-kommune")


@pytest.mark.parametrize(("change", "expression", "words"), [
    (lambda m: resource(m, "CarePlan").pop("category"),
     "Bundle.entry[1].resource.category", "CarePlan.category is required"),
    (lambda m: resource(m, "CarePlan").__setitem__("category", [{"text": "behandlingsplan"}]),
     "Bundle.entry[1].resource", "cip-1"),
    (lambda m: resource(m, "CarePlan")["activity"][0]["detail"].pop("performer"),
     "Bundle.entry[1].resource.activity[0].detail.performer", "responsible"),
    (lambda m: resource(m, "CarePlan")["activity"][0]["detail"].pop("description"),
     "Bundle.entry[1].resource.activity[0].detail", "cip-4"),
    (lambda m: resource(m, "CarePlan")["extension"][1].__setitem__("valueDate", "2026-01-01"),
     "Bundle.entry[1].resource", "cip-3"),
    (lambda m: resource(m, "CarePlan")["period"].__setitem__("end", "2026-01-01"),
     "Bundle.entry[1].resource", "cip-2"),
    (lambda m: resource(m, "CarePlan")["extension"][0].__setitem__("valueCode", "maybe"),
     None, "plan-participation"),
    (lambda m: resource(m, "Goal").pop("category"),
     "Bundle.entry[3].resource.category", "Goal.category is required"),
    (lambda m: resource(m, "Goal")["category"][0]["coding"][0].__setitem__("code", "career"),
     None, "'career' is not a code of"),
    (lambda m: resource(m, "CareTeam")["participant"].pop(0),
     "Bundle.entry[5].resource", "cct-1"),
])
def test_profile_rules_name_the_element(consented: Hub, change: Any, expression: str | None,
                                        words: str) -> None:
    message = plan()
    change(message)
    before = _counts(consented)
    issues = refused(consented, message)
    assert any(words in i["diagnostics"] and (expression is None
                                              or i["expression"] == [expression])
               for i in issues), issues
    _nothing_kept(consented, before)


def test_plan_without_any_consent_is_kept_and_withheld_saying_what_to_record(
        hub3: Hub) -> None:  # noqa: F811
    """CONTRACT section 5: no plan consent means kept and withheld with the reason in the
    response (not 422)."""
    said = accepted(hub3, plan())
    assert "Withheld from Organization/time-kommune" in said
    assert "No active consent to the individual plan" in said
    assert f"{BASE}/CodeSystem/consent-category|individual-plan" in said
    assert "IRCP" in said
    assert len(found(hub3, "jaeren-dps", "CarePlan")) == 1
    assert found(hub3, "time-kommune", "CarePlan") == []


def test_a_revoked_consent_counts_as_none(hub3: Hub) -> None:  # noqa: F811
    accepted(hub3, consent())
    accepted(hub3, consent(status="inactive"))
    said = accepted(hub3, plan())
    assert "Withheld from Organization/time-kommune" in said
    assert found(hub3, "time-kommune", "CarePlan") == []


def test_without_the_consent_to_make_it_the_plan_is_kept_and_withheld(hub3: Hub) -> None:  # noqa: F811
    accepted(hub3, consent(making=False))
    said = accepted(hub3, plan())
    assert "Withheld from Organization/time-kommune" in said
    assert "No active consent to the individual plan" in said
    assert len(found(hub3, "jaeren-dps", "CarePlan")) == 1
    assert found(hub3, "time-kommune", "CarePlan") == []


def test_missing_participation_is_pointed_out(consented: Hub) -> None:
    message = plan()
    del resource(message, "CarePlan")["extension"]  # ([] is not FHIR JSON: a 422)
    said = accepted(consented, message)
    assert "does not say whether the patient took part" in said


def test_the_same_message_twice_changes_nothing(consented: Hub) -> None:
    message = plan()
    first = post(consented, message)
    second = post(consented, message)
    assert second.json() == first.json()
    assert found(consented, "jaeren-dps", "CarePlan")[0]["meta"]["versionId"] == "1"
    # the same content in a new message is accepted, but is no new version of the plan
    assert "kept: the same as its stored version 1" in accepted(consented, again(message))
    assert found(consented, "jaeren-dps", "CarePlan")[0]["meta"]["versionId"] == "1"
    changed = again(message)
    resource(changed, "CarePlan")["description"] = "Revidert plan etter samtale med Kari."
    assert "stored as version 2" in accepted(consented, changed)


def test_the_shared_examples_plan_is_an_individual_plan_and_the_follow_up_plan_is_not() -> None:
    def plan_of(name: str) -> JSON:
        bundle = json.loads((SHARED / "examples" / name).read_text(encoding="utf-8"))
        body: JSON = resource(bundle, "CarePlan")
        return body

    assert is_individual_plan(plan_of("02-care-plan-shared.json"))
    assert not is_individual_plan(plan_of("13-discharge-notice.json"))



def test_the_hubs_full_url_of_another_type_is_refused(consented: Hub) -> None:
    """A hub fullUrl names the resource the entry is a new version of: one naming a Patient
    on a CarePlan entry is a mistake said as such, not ignored (a new plan made instead)."""
    accepted(consented, plan())
    [patient] = found(consented, "jaeren-dps", "Patient")
    revised = plan(key="other-key")
    index, entry = next((i, e) for i, e in enumerate(revised["entry"])
                        if e["resource"]["resourceType"] == "CarePlan")
    entry["fullUrl"] = f"http://testserver/fhir/Patient/{patient['id']}"
    revised["entry"][0]["resource"]["focus"] = [{"reference": entry["fullUrl"]}]
    issues = refused(consented, revised)
    assert "is the hub's address of something other than a CarePlan" in issues[0]["diagnostics"]
    assert issues[0]["expression"] == [f"Bundle.entry[{index}].fullUrl"]
    assert len(found(consented, "jaeren-dps", "CarePlan")) == 1
    assert found(consented, "jaeren-dps", "Patient")[0]["meta"]["versionId"] == (
        patient["meta"]["versionId"])

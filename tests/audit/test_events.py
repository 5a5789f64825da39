"""The AuditEvent builders: valid FHIR R4 (fhir.resources' R4B model, as AuditEvent did not
change), and the IHE BALP shapes (type, subtype, action, agent and entity roles)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from hub.audit import events
from hub.audit.events import (
    ACTION_OF,
    admin_event,
    disclosure_event,
    for_patient,
    patient_refs,
    rest_event,
    sign_in_event,
    token_event,
)
from hub.auth.subject import Subject

CLIENT = Subject("client", "time-ehr", "time-kommune", frozenset({"system/*.*"}))
AUDITOR = Subject("user", "revisor", None, frozenset(), "auditor")
SUBJECTS = [CLIENT, AUDITOR, Subject.hub_itself(), None]


def valid(event: dict[str, Any]) -> dict[str, Any]:
    """`event` as chain.append stores it, checked against the R4(B) AuditEvent model."""
    stored = {**event, "id": "7d3c6a4e-0c1b-4f0e-9a51-3c2f0e0b1a11",
              "recorded": "2026-11-23T20:15:01.830406Z"}
    AuditEvent.model_validate(stored)
    return stored


def codes(codings: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in codings}


def agent_types(event: dict[str, Any]) -> list[str]:
    return [a["type"]["coding"][0]["code"] for a in event["agent"]]


@pytest.mark.parametrize("interaction", sorted(ACTION_OF))
@pytest.mark.parametrize("subject", SUBJECTS, ids=lambda s: s.kind if s else "anonymous")
def test_rest_events_are_valid_r4(interaction: Any, subject: Subject | None) -> None:
    event = valid(rest_event(
        subject, interaction=interaction, resource_type="Encounter",
        resource_ids=["e1", "Encounter/e2/_history/3"], patient_refs=["Patient/p", "Patient/q"],
        query="patient=p&_count=5", description="why it failed", operation="$validate",
        address="10.0.0.7", base_url="http://hub.example/fhir", request="GET /fhir/x: 404",
        outcome="4"))
    assert event["type"] == {"system": events.AUDIT_EVENT_TYPE, "code": "rest",
                             "display": "Restful Operation"}
    assert (events.RESTFUL, interaction) in codes(event["subtype"])
    assert event["action"] == ACTION_OF[interaction]
    assert event["source"]["observer"] == {"type": "Device", "display": "CareHub"}
    assert event["outcomeDesc"] == "why it failed"


def test_a_client_read_names_client_organisation_server_and_patient() -> None:
    event = valid(rest_event(CLIENT, interaction="read", resource_type="Encounter",
                             resource_ids=["Encounter/e1/_history/2"],
                             patient_refs=["Patient/p"]))
    client, org, server = event["agent"]
    # BALP Read: the client is the Destination Role ID, the server the Source Role ID.
    assert client["type"]["coding"][0]["code"] == "110152"
    assert client["who"]["identifier"] == {"system": events.CLIENT_ID_SYSTEM,
                                           "value": "time-ehr"}
    assert client["requestor"] is True
    assert org["who"] == {"reference": "Organization/time-kommune"}
    assert org["type"]["coding"][0]["code"] == "PROV"
    assert server["type"]["coding"][0]["code"] == "110153"
    assert server["who"] == event["source"]["observer"]  # BALP val-audit-source
    data, patient = event["entity"]
    assert data["what"] == {"reference": "Encounter/e1/_history/2"}
    assert (data["type"]["code"], data["role"]["code"]) == ("2", "4")  # System Object, Domain
    assert patient["what"] == {"reference": "Patient/p"}
    assert (patient["type"]["code"], patient["role"]["code"]) == ("1", "1")  # Person, Patient
    assert event["outcome"] == "0"


def test_roles_follow_balp_per_interaction() -> None:
    def roles(interaction: Any) -> list[str]:
        return agent_types(rest_event(CLIENT, interaction=interaction, resource_type="Task"))

    assert roles("search-type") == ["110153", "PROV", "110152"]  # query: client is source
    assert roles("create") == ["110153", "PROV", "110152"]
    assert roles("update") == ["110153", "PROV", "110152"]
    assert roles("delete") == ["110150", "PROV", "custodian"]


def test_a_search_records_its_query_base64_and_plain() -> None:
    event = valid(rest_event(CLIENT, interaction="search-type", resource_type="Encounter",
                             query="patient=Patient/p&status=in-progress"))
    (query,) = event["entity"]
    assert query["role"]["code"] == "24"
    assert base64.b64decode(query["query"]).decode() == "patient=Patient/p&status=in-progress"
    assert query["description"] == "patient=Patient/p&status=in-progress"
    assert event["action"] == "E"


def test_a_person_is_an_agent_with_username_and_role() -> None:
    event = valid(rest_event(AUDITOR, interaction="search-type", resource_type="AuditEvent"))
    person = event["agent"][0]
    assert person["who"]["identifier"] == {"system": events.USERNAME_SYSTEM, "value": "revisor"}
    assert person["role"][0]["coding"][0]["code"] == "auditor"
    assert person["type"]["coding"][0]["code"] == "IRCP"


def test_for_patient_narrows_to_one_patient() -> None:
    event = rest_event(CLIENT, interaction="search-type", resource_type="Encounter",
                       patient_refs=["Patient/a", "Patient/b"], query="x=1")
    one = valid(for_patient(event, "Patient/b"))
    assert [e["what"]["reference"] for e in one["entity"] if "what" in e] == ["Patient/b"]
    none = valid(for_patient(event, None))
    assert all(e["role"]["code"] != "1" for e in none["entity"])


def test_patient_refs() -> None:
    assert patient_refs({"resourceType": "Patient", "id": "p1"}) == ["Patient/p1"]
    assert patient_refs({"resourceType": "Encounter",
                         "subject": {"reference": "Patient/p2"}}) == ["Patient/p2"]
    assert patient_refs({"resourceType": "Consent",
                         "patient": {"reference": "http://hub/fhir/Patient/p3/_history/2"}}
                        ) == ["Patient/p3"]
    assert patient_refs({"resourceType": "Task", "for": {"reference": "Patient/p4"}}) == [
        "Patient/p4"]
    assert patient_refs({"resourceType": "Coverage",
                         "beneficiary": {"reference": "Patient/p5"}}) == ["Patient/p5"]
    assert patient_refs({"resourceType": "Flag", "subject": {"reference": "Group/g"}}) == []
    assert patient_refs({"resourceType": "Organization", "id": "o"}) == []
    assert patient_refs(None) == []


def test_disclosure_on_a_consent_names_it_with_the_decision() -> None:
    event = valid(disclosure_event(
        recipient_org="Organization/time-kommune", patient_ref="Patient/p",
        resource_refs=["Encounter/e1", "Encounter/e2"], decision="permit",
        basis="Consent/c1", reason="Consent/c1 permits Organization/time-kommune",
        subject=CLIENT, base_url="http://hub.example/fhir"))
    assert event["type"] == {"system": events.DCM, "code": "110106", "display": "Export"}
    assert codes(event["subtype"]) == {(events.LIFECYCLE, "disclose")}
    assert event["action"] == "R"
    assert event["outcome"] == "0"
    source, recipient, *requestor = event["agent"]
    assert source["type"]["coding"][0]["code"] == "110153"
    assert source["who"] == event["source"]["observer"]
    assert recipient["type"]["coding"][0]["code"] == "110152"
    assert recipient["who"] == {"reference": "Organization/time-kommune"}
    assert requestor[0]["who"]["identifier"]["value"] == "time-ehr"
    patient, e1, e2, basis = event["entity"]
    assert patient["what"] == {"reference": "Patient/p"}
    assert [e1["what"]["reference"], e2["what"]["reference"]] == ["Encounter/e1", "Encounter/e2"]
    assert basis["what"] == {"reference": "Consent/c1"}
    assert basis["type"]["code"] == "Consent"
    assert {d["type"]: d["valueString"] for d in basis["detail"]} == {
        "decision": "permit", "basis": "Consent/c1",
        "reason": "Consent/c1 permits Organization/time-kommune"}


def test_disclosure_on_a_legal_basis_and_a_deny() -> None:
    legal = valid(disclosure_event(
        recipient_org="Organization/o", patient_ref="Patient/p", resource_refs=["Task/t"],
        decision="permit-with-redaction", basis="admission-notice", reason="legal basis",
        subject=None))
    basis = legal["entity"][-1]
    assert basis["what"] == {"identifier": {"system": events.LEGAL_BASIS,
                                            "value": "admission-notice"}}
    denied = valid(disclosure_event(
        recipient_org="Organization/o", patient_ref="Patient/p", resource_refs=["Task/t"],
        decision="deny", basis=None, reason="no consent names Organization/o", subject=CLIENT))
    assert denied["outcome"] == "4"
    assert denied["outcomeDesc"] == "withheld: no consent names Organization/o"
    assert "what" not in denied["entity"][-1]
    assert denied["entity"][-1]["detail"][0] == {"type": "decision", "valueString": "deny"}


@pytest.mark.parametrize("outcome", ["success", "wrong-password", "locked", "unknown-user",
                                     "disabled"])
def test_sign_in_events(outcome: str) -> None:
    event = valid(sign_in_event("revisor", outcome, role="auditor", address="10.0.0.8"))
    assert (event["type"]["code"], event["subtype"][0]["code"]) == ("110114", "110122")
    assert event["outcome"] == ("0" if outcome == "success" else "4")
    assert event["agent"][0]["who"]["identifier"]["value"] == "revisor"


def test_token_and_admin_events() -> None:
    issued = valid(token_event("time-ehr", organization_id="time-kommune", outcome="0",
                               scope="system/*.read"))
    assert issued["agent"][0]["who"]["identifier"]["value"] == "time-ehr"
    assert issued["agent"][2]["who"] == {"reference": "Organization/time-kommune"}
    refused = valid(token_event("time-ehr", organization_id=None, outcome="4",
                                reason="invalid_client", verified=False))
    assert "not verified" in refused["agent"][0]["who"]["display"]
    admin = valid(admin_event("ops", "org add --name X", "Organization/x"))
    assert admin["agent"][0]["role"][0]["coding"][0]["code"] == "admin"
    assert admin["entity"][0]["what"] == {"reference": "Organization/x"}
    client = valid(admin_event("ops", "client add", "Client/abc"))
    assert client["entity"][0]["what"]["identifier"] == {"system": events.CLIENT_ID_SYSTEM,
                                                         "value": "abc"}


def test_a_permit_without_a_basis_is_not_called_one_that_nothing_allows() -> None:
    """Only a withheld disclosure without a basis is "no consent or legal basis"; a permit
    without one says that its basis was not recorded; a basis code is a legal basis."""
    def name(decision: str, basis: str | None) -> str:
        event = events.disclosure_event(
            recipient_org="Organization/time-kommune", patient_ref="Patient/p1",
            resource_refs=["Patient/p1"], decision=decision, basis=basis, reason="why",
            subject=None)
        [entity] = [e for e in event["entity"] if e["role"]["code"] == "13"]
        return str(entity["name"])

    assert name("deny", None) == "no consent or legal basis"
    assert name("permit", None) == "no basis recorded"
    assert name("permit", "holds-records") == "legal basis"

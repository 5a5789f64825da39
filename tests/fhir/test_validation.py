"""hub.fhir.validation: a conditional reference (`Type?criteria`) names nothing outside a
transaction or batch Bundle, so a resource holding one is not valid; a Bundle, whose
entries whatever runs it resolves, is not judged by them."""

from __future__ import annotations

from typing import Any

from hub.fhir.validation import validate_resource


def _flag(subject: str) -> dict[str, Any]:
    return {"resourceType": "Flag", "status": "active", "code": {"text": "probe"},
            "subject": {"reference": subject}}


def test_a_conditional_reference_is_an_error_naming_the_element() -> None:
    issues = validate_resource(_flag("Patient?family=Nordmann"))
    assert [(i.severity, i.expression) for i in issues] == [("error", "Flag.subject.reference")]
    assert "Patient?family=Nordmann" in issues[0].diagnostics


def test_a_conditional_reference_in_a_list_is_named_by_its_index() -> None:
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan",
            "subject": {"reference": "Patient/1"},
            "goal": [{"reference": "Goal/1"}, {"reference": "Goal?identifier=x|1"}]}
    assert [i.expression for i in validate_resource(plan)] == ["CarePlan.goal[1].reference"]


def test_literal_references_and_transaction_bundles_are_not_refused() -> None:
    for reference in ("Patient/1", "http://example.org/fhir/Patient/1", "urn:uuid:1", "#p"):
        assert validate_resource(_flag(reference)) == [], reference
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _flag("Patient?family=Nordmann"),
         "request": {"method": "POST", "url": "Flag"}}]}
    assert validate_resource(bundle) == []

"""A FHIR refusal of the message built from an ADT is answered with the ADT field it concerns
(adapters/mllp/intake.py): ERR-2 the field that filled the element the issue names, ERR-3
the HL7 table 0357 code of the issue's kind; MSH-9 and 207 when no field explains it."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from adapters.mllp import adt as hl7adt
from adapters.mllp import bundle
from adapters.mllp.intake import _problem_of
from adapters.mllp.simulator import adt
from hub.errors import ConflictError, ForbiddenError, InvalidResourceError, Issue
from tests.adapters.mllp.conftest import stay


def _message(trigger: str) -> dict[str, object]:
    raw = adt(stay(), trigger, "REFUSED")
    parsed = hl7adt.parse(raw, hl7adt.read_header(raw), ZoneInfo("Europe/Oslo"))
    return bundle.message(parsed, sender="centre", receiver="kommune")


def _entry(message: dict[str, object], resource_type: str) -> int:
    entries = message["entry"]
    assert isinstance(entries, list)
    return next(i for i, e in enumerate(entries) if e["resource"]["resourceType"] == resource_type)


@pytest.mark.parametrize(("trigger", "resource_type", "path", "code", "field", "hl7_code"), [
    ("A01", "Patient", "identifier[0].value", "value", "PID-3", "102"),
    ("A01", "Patient", "name[0].family", "value", "PID-5.1", "102"),
    ("A01", "Patient", "name[0].given[1]", "value", "PID-5.2", "102"),
    ("A01", "Patient", "birthDate", "structure", "PID-7", "102"),
    ("A01", "Patient", "gender", "code-invalid", "PID-8", "103"),
    ("A01", "Patient", "address[0].district", "required", "PID-11.9", "101"),
    ("A01", "Patient", "address[0].postalCode", "value", "PID-11.5", "102"),
    ("A01", "Encounter", "identifier[0].value", "value", "PV1-19", "102"),
    ("A01", "Encounter", "period.start", "value", "PV1-44", "102"),
    ("A03", "Encounter", "period.end", "value", "PV1-45", "102"),
    ("A03", "CarePlan", "activity[0].detail.scheduledPeriod.start", "value", "PV1-45", "102"),
])
def test_an_issue_is_answered_with_the_field_that_filled_its_element(
        trigger: str, resource_type: str, path: str, code: str, field: str,
        hl7_code: str) -> None:
    message = _message(trigger)
    at = f"Bundle.entry[{_entry(message, resource_type)}].resource.{path}"
    refusal = InvalidResourceError("refused", issues=[Issue("refused", code, "error", at)])
    problem = _problem_of(refusal, message)
    assert (problem.location, problem.code) == (field, hl7_code)
    # validation may also name the element by the resource's type
    named = InvalidResourceError("refused", issues=[
        Issue("refused", code, "error", f"{resource_type}.{path}")])
    assert _problem_of(named, message).location == field


def test_the_first_error_a_field_explains_is_the_one_answered() -> None:
    message = _message("A01")
    patient = _entry(message, "Patient")
    refusal = InvalidResourceError("refused", issues=[
        Issue("only a warning", "value", "warning", f"Bundle.entry[{patient}].resource.gender"),
        Issue("no field made this", "value", "error", "Bundle.entry[0].resource.source.name"),
        Issue("this one", "value", "error", f"Bundle.entry[{patient}].resource.birthDate"),
    ])
    assert _problem_of(refusal, message).location == "PID-7"


@pytest.mark.parametrize("refusal", [
    InvalidResourceError("refused", issues=[
        Issue("refused", "value", "error", "Bundle.entry[0].resource.source.name")]),
    InvalidResourceError("refused", issues=[
        Issue("refused", "value", "error", "Bundle.entry[9].resource.identifier[0]")]),
    InvalidResourceError("refused", issues=[Issue("refused", "value", "error", None)]),
    InvalidResourceError("refused", issues=[
        Issue("refused", "value", "error", "Patient.identifiers[0]")]),  # not a prefix
    ForbiddenError("Organization/centre may not send this message."),
])
def test_a_refusal_no_field_explains_is_msh_9_application_error(refusal: Exception) -> None:
    assert isinstance(refusal, InvalidResourceError | ForbiddenError)
    problem = _problem_of(refusal, _message("A01"))
    assert (problem.location, problem.code) == ("MSH-9", "207")
    assert problem.text == refusal.diagnostics


def test_a_conflict_is_msh_10_duplicate_key() -> None:
    problem = _problem_of(ConflictError("taken"), _message("A01"))
    assert (problem.location, problem.code) == ("MSH-10", "205")


"""R4's JSON rules the lax models let through (http://hl7.org/fhir/R4/json.html), refused by
validation naming the element: null, empty arrays, objects and strings, and primitives in the
wrong JSON type (a number for a dateTime, a boolean for an integer, a string for a boolean).
The official examples and the shared story pass (tests/fhir/test_r4_examples.py and
tests/messaging/test_story.py); each case here has its control."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from hub.fhir.validation import validate_message, validate_resource
from tests.conftest import SHARED
from tests.factories import encounter, patient, task

ADMISSION = json.loads((SHARED / "examples" / "03-admission-notice.json").read_text("utf-8"))


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@pytest.mark.parametrize(("make", "path", "value", "where", "words"), [
    (lambda: encounter("Patient/p"), ("class",), None, "Encounter.class", "null"),
    (lambda: encounter("Patient/p"), ("period", "start"), 1, "Encounter.period.start",
     "JSON number (1); a FHIR dateTime is a JSON string"),
    (lambda: encounter("Patient/p"), ("period", "start"), 1.5, "Encounter.period.start",
     "JSON number"),
    (lambda: encounter("Patient/p"), ("identifier", 0, "system"), None,
     "Encounter.identifier[0].system", "null"),
    (lambda: encounter("Patient/p"), ("identifier", 0, "system"), "",
     "Encounter.identifier[0].system", "empty string"),
    (lambda: patient(), ("name",), [], "Patient.name", "empty array"),
    (lambda: patient(), ("address", 0), {}, "Patient.address[0]", "empty object"),
    (lambda: patient(), ("birthDate",), None, "Patient.birthDate", "null"),
    (lambda: patient(), ("active",), "true", "Patient.active",
     "JSON string ('true'); a FHIR boolean is JSON true or false"),
    (lambda: patient(), ("multipleBirthInteger",), True, "Patient.multipleBirthInteger",
     "JSON boolean (true)"),
    (lambda: patient(), ("multipleBirthInteger",), 2.0, "Patient.multipleBirthInteger",
     "fraction"),
    (lambda: patient(), ("gender",), ["female"], "Patient.gender", "JSON array"),
    (lambda: patient(), ("name", 0, "given", 0), None, "Patient.name[0].given[0]", "null"),
    (lambda: task("Patient/p", "Encounter/e"), ("authoredOn",), 1, "Task.authoredOn",
     "dateTime"),
    (lambda: task("Patient/p", "Encounter/e"), ("code",), None, "Task.code", "null"),
    (lambda: task("Patient/p", "Encounter/e"), ("note",), [], "Task.note", "empty array"),
    (lambda: task("Patient/p", "Encounter/e"), ("input",),
     [{"type": {"text": "x"}, "valueInteger": True}], "Task.input[0].valueInteger", "boolean"),
    (lambda: task("Patient/p", "Encounter/e"), ("contained",),
     [{"resourceType": "Patient", "birthDate": 19691113}], "Task.contained[0].birthDate",
     "JSON number"),
])
def test_what_r4_json_forbids_is_an_issue_naming_the_element(
        make: Any, path: tuple[Any, ...], value: Any, where: str, words: str) -> None:
    assert validate_resource(make()) == []  # control: as made
    resource = make()
    _set(resource, path, value)
    issues = validate_resource(resource)
    assert [i.expression for i in issues] == [where], issues
    assert words in issues[0].diagnostics, issues[0].diagnostics


def test_null_holds_a_place_in_an_array_of_primitives_with_extensions() -> None:
    """json.html: `"given": ["Kari", null]` with `"_given": [null, {"extension": ...}]`."""
    resource = patient()
    resource["name"][0]["given"] = ["Kari", "Nora"]
    resource["name"][0]["_given"] = [None, {"id": "n2"}]
    assert validate_resource(resource) == []
    del resource["name"][0]["_given"]  # without the extensions' array, null is not allowed
    resource["name"][0]["given"] = ["Kari", None]
    assert [i.expression for i in validate_resource(resource)] == ["Patient.name[0].given[1]"]


@pytest.mark.parametrize(("path", "value", "where"), [
    (("entry", 0, "resource", "eventCoding", "code"), [],
     "Bundle.entry[0].resource.eventCoding.code"),
    (("entry", 0, "resource", "eventCoding", "system"), {},
     "Bundle.entry[0].resource.eventCoding.system"),
    (("entry", 0, "fullUrl"), [], "Bundle.entry[0].fullUrl"),
    (("entry", 2, "fullUrl"), {}, "Bundle.entry[2].fullUrl"),
    (("entry", 0, "resource", "source", "endpoint"), 1,
     "Bundle.entry[0].resource.source.endpoint"),
    (("entry", 0, "resource", "destination", 0, "endpoint"), True,
     "Bundle.entry[0].resource.destination[0].endpoint"),
    (("entry", 0, "resource", "destination", 0, "endpoint"), 1.5,
     "Bundle.entry[0].resource.destination[0].endpoint"),
    (("entry", 0, "resource", "source"), None, "Bundle.entry[0].resource.source"),
    (("entry", 1, "resource", "class"), None, "Bundle.entry[1].resource.class"),
    (("timestamp",), 12345, "Bundle.timestamp"),
])
def test_a_message_element_of_the_wrong_json_type_is_an_issue_not_a_crash(
        path: tuple[Any, ...], value: Any, where: str) -> None:
    assert validate_message(ADMISSION) == []  # control
    message = copy.deepcopy(ADMISSION)
    _set(message, path, value)
    issues = validate_message(message)
    assert where in {i.expression for i in issues}, issues

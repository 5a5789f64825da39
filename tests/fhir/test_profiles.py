"""fhir_profiles/ and hub.fhir.profiles: the conformance resources are valid R4 and agree with
each other; every shared example message passes validate_message; a broken variant of each
fails naming the exact element; the validator's primitives behave on small hand-made profiles.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.api import conformance as conformance_api
from hub.app import create_app
from hub.errors import Issue
from hub.fhir import profiles
from hub.fhir.profiles import BASE, Conformance, conformance, validate_against
from hub.fhir.validation import validate_message, validate_resource
from tests.auth_helpers import register_and_token

ROOT = Path(__file__).resolve().parents[2]
PROFILE_FILES = sorted((ROOT / "fhir_profiles").glob("*.json"))
EXAMPLES = sorted((ROOT.parent / "shared" / "examples").glob("[0-9][0-9]-*.json"))
JSON = dict[str, Any]

CS = f"{BASE}/CodeSystem/"
EVENTS = {
    "consent-changed", "care-plan-shared", "admission-notice", "self-admission-agreement",
    "self-admission-request", "self-admission-response", "meeting-invitation",
    "meeting-response", "ready-for-discharge", "ready-for-discharge-withdrawn",
    "discharge-readiness-response", "discharge-notice", "follow-up-contact",
    "follow-up-overdue",
}
HUB_NOTICES = {  # sent by the hub only, so not in the example story (tests/scheduler)
    "discharge-readiness-overdue", "meeting-reminder", "consent-expiring",
    "delivery-unacknowledged",
}
ADAPTER_EVENTS = {  # what HL7 v2 ADT A11, A13 and A08 become (adapters/mllp; not in the story)
    "admission-cancelled", "discharge-cancelled", "patient-updated",
}
ALL_EVENTS = EVENTS | HUB_NOTICES | ADAPTER_EVENTS


def _load(path: Path) -> JSON:
    data: JSON = json.loads(path.read_text(encoding="utf-8"))
    return data


def _walk(node: Any) -> Iterator[JSON]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _example(number: int) -> JSON:
    path = next(p for p in EXAMPLES if p.name.startswith(f"{number:02d}-"))
    return copy.deepcopy(_load(path))


def _errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity == "error"]


# --- the files -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PROFILE_FILES, ids=[p.name for p in PROFILE_FILES])
def test_profile_file_is_valid_r4(path: Path) -> None:
    resource = _load(path)
    assert validate_resource(resource) == []
    if resource["resourceType"] != "Bundle":
        assert path.name == f"{resource['resourceType']}-{resource['id']}.json"
        assert resource["url"] == f"{BASE}/{resource['resourceType']}/{resource['id']}"
        assert resource["status"] == "active"


def test_code_systems_are_complete_and_case_sensitive() -> None:
    systems = conformance().of_type("CodeSystem")
    assert {cs["id"] for cs in systems} >= {
        "message-event", "task-code", "task-business-status", "service-code", "meeting-type",
        "organization-kind", "consent-category", "goal-category", "plan-participation"}
    for cs in systems:
        assert cs["content"] == "complete"
        assert cs["caseSensitive"] is True
        assert cs["count"] == len(cs["concept"])
        assert all(c.get("display") and c.get("definition") for c in cs["concept"])
        vs = conformance().by_url(f"{BASE}/ValueSet/{cs['id']}")
        assert vs is not None, f"no ValueSet for {cs['id']}"
        expanded = conformance().value_set_codes(vs["url"])
        assert expanded == frozenset((cs["url"], c["code"]) for c in cs["concept"])


def test_contract_codes() -> None:
    reg = conformance()
    assert reg.code_system_codes(f"{CS}message-event") == frozenset(ALL_EVENTS)
    assert reg.code_system_codes(f"{CS}task-code") == frozenset({
        "follow-up-check", "discharge-readiness", "self-admission-request"})
    assert reg.code_system_codes(f"{CS}meeting-type") == frozenset({
        "network", "cooperation", "responsibility"})
    consent = reg.get("CodeSystem", "consent-category")
    assert consent is not None
    assert consent["concept"][0]["definition"] == "consent to making an individual plan"


def test_every_code_and_canonical_referenced_exists() -> None:
    reg = conformance()
    for resource in [*reg.of_type("MessageDefinition"), *reg.of_type("StructureDefinition")]:
        for node in _walk(resource):
            system, code = node.get("system"), node.get("code")
            if isinstance(system, str) and system.startswith(CS) and isinstance(code, str):
                codes = reg.code_system_codes(system)
                assert code in (codes or ()), (resource["id"], system, code)
            for key in ("profile", "valueSet", "message", "baseDefinition"):
                refs = node.get(key)
                for ref in refs if isinstance(refs, list) else [refs]:
                    if isinstance(ref, str) and ref.startswith(BASE):
                        assert reg.by_url(ref) is not None, (resource["id"], ref)


def test_one_message_definition_per_event() -> None:
    reg = conformance()
    definitions = reg.of_type("MessageDefinition")
    assert {md["eventCoding"]["code"] for md in definitions} == ALL_EVENTS
    asks = {"self-admission-request": "self-admission-response",
            "meeting-invitation": "meeting-response",
            "ready-for-discharge": "discharge-readiness-response"}
    for md in definitions:
        event = md["eventCoding"]["code"]
        assert md["url"] == f"{BASE}/MessageDefinition/{event}"
        assert md["category"] in ("notification", "consequence")
        assert md["responseRequired"] == ("always" if event in asks else "on-error")
        allowed = [a["message"] for a in md.get("allowedResponse", [])]
        assert allowed == ([f"{BASE}/MessageDefinition/{asks[event]}"] if event in asks else [])
        assert any(f["min"] >= 1 for f in md["focus"])
        for focus in md["focus"]:
            if "profile" in focus:
                sd = reg.by_url(focus["profile"])
                assert sd is not None, (event, focus)
                assert sd["type"] == focus["code"], (event, focus)


def test_profiles_are_differential_constraints() -> None:
    for sd in conformance().of_type("StructureDefinition"):
        assert sd["derivation"] == "constraint"
        assert "snapshot" not in sd
        assert sd["differential"]["element"][0]["path"] == sd["type"]
        for element in sd["differential"]["element"]:
            for constraint in element.get("constraint", []):
                assert constraint["severity"] == "error"
                assert constraint["human"]
                assert constraint["expression"]


# --- the shared example messages -------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_message_is_valid(path: Path) -> None:
    bundle = _load(path)
    assert validate_message(bundle) == []
    # warnings: only the patient references the examples reuse from earlier messages
    for issue in validate_message(bundle, warnings=True):
        assert (issue.severity, issue.code) == ("warning", "not-found"), issue


def test_examples_cover_every_event() -> None:
    codes = {_load(p)["entry"][0]["resource"]["eventCoding"]["code"] for p in EXAMPLES}
    assert codes == EVENTS


def test_dangling_patient_reference_is_taken_as_the_message_patient() -> None:
    bundle = _example(9)
    aliases = profiles.patient_aliases(bundle)
    patient = bundle["entry"][3]["fullUrl"]
    assert aliases == {bundle["entry"][1]["resource"]["subject"]["reference"]: patient}
    bundle["entry"][1]["resource"]["goal"] = [{"reference": "urn:uuid:not-here"}]
    # not a patient position: an error
    assert "urn:uuid:not-here" not in profiles.patient_aliases(bundle)


# --- broken variants: each names the exact element ------------------------------------------


def _set(path: str, value: Any) -> Callable[[JSON], None]:
    """A mutation setting (or, with value ..., deleting) a dotted path with [i] indexes."""
    def mutate(bundle: JSON) -> None:
        node: Any = bundle
        parts = path.replace("[", ".").replace("]", "").split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        key: Any = int(last) if last.isdigit() else last
        if value is ...:
            del node[key]
        else:
            node[key] = value
    return mutate


def _rejected(bundle: JSON) -> None:
    task = bundle["entry"][1]["resource"]
    task["status"] = "rejected"
    task.pop("output")


def _no_patient(bundle: JSON) -> None:
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
    bundle["entry"][1]["resource"]["subject"] = {"reference": "Patient/known"}


def _header_second(bundle: JSON) -> None:
    bundle["entry"].reverse()


E1 = "Bundle.entry[1].resource"
TERMS = f"{BASE}/StructureDefinition/self-admission-terms"
BROKEN: list[tuple[str, int, Callable[[JSON], None], str, str, str]] = [
    # id, example, mutation, expression, issue code, text the diagnostics contain
    ("consent-recipient-role", 1, _set("entry[1].resource.provision.actor[0].role.coding[0].code",
                                      "PRCP"),
     f"{E1}.provision.actor[0].role", "value", "Consent.provision.actor[0].role must be"),
    ("consent-status", 1, _set("entry[1].resource.status", "proposed"), f"{E1}.status",
     "invariant", "rule chc-1"),
    ("consent-no-provision", 1, _set("entry[1].resource.provision", ...), f"{E1}.provision",
     "required", "Consent.provision is required for a consent-changed message"),
    ("plan-no-care-team", 2, _set("entry[1].resource.careTeam", ...), f"{E1}.careTeam",
     "required", "CarePlan.careTeam is required"),
    ("goal-category-not-ours", 2, _set("entry[3].resource.category", [{"coding": [
        {"system": f"{CS}goal-category", "code": "spiritual"}]}]),
     "Bundle.entry[3].resource.category[0].coding[0]", "code-invalid",
     "'spiritual' is not a code of"),
    ("goal-no-expressed-by", 2, _set("entry[3].resource.expressedBy", ...),
     "Bundle.entry[3].resource.expressedBy", "required", "Goal.expressedBy is required"),
    ("unresolvable-urn-uuid", 2, _set("entry[1].resource.goal[0].reference",
                                      "urn:uuid:5b1a3c34-0000-4000-8000-000000000000"),
     f"{E1}.goal[0].reference", "not-found", "is no entry of this message"),
    ("admission-finished", 3, _set("entry[1].resource.status", "finished"), f"{E1}.status",
     "value", "Encounter.status must be 'in-progress' for an admission-notice message"),
    ("admission-not-inpatient", 3, _set("entry[1].resource.class.code", "AMB"), f"{E1}.class",
     "value", "Encounter.class must be"),
    ("admission-no-start", 3, _set("entry[1].resource.period.start", ...),
     f"{E1}.period.start", "required", "the admission time"),
    ("meeting-type-not-ours", 4, _set("entry[1].resource.serviceType[0].coding[0].code",
                                      "party"),
     f"{E1}.serviceType[0]", "code-invalid", "must be a code of"),
    ("meeting-no-end", 4, _set("entry[1].resource.end", ...), f"{E1}.end", "required",
     "Appointment.end is required"),
    ("relative-without-identifier", 4, _set("entry[3].resource.identifier", ...),
     "Bundle.entry[3].resource.identifier", "required", "RelatedPerson.identifier"),
    ("meeting-response-status", 5, _set("entry[1].resource.participantStatus", "needs-action"),
     f"{E1}.participantStatus", "invariant", "rule cmr-1"),
    # (terms left out take the defaults, 5 and 14: tests/workflows/test_selfadmission.py)
    ("agreement-stay-of-no-days", 6,
     _set("entry[1].resource.extension[0].extension[0].valueInteger", 0),
     f"{E1}.extension('{TERMS}')", "invariant", "rule sat-1"),
    ("agreement-occurrence-type", 6, _set("entry[1].resource.occurrencePeriod", ...),
     f"{E1}.occurrencePeriod", "required", "the period the agreement is valid"),
    ("unit-without-beds", 6, _set("entry[3].resource.extension", ...),
     f"Bundle.entry[3].resource.extension('{BASE}/StructureDefinition/user-controlled-beds')",
     "required", "user-controlled beds"),
    ("request-wrong-task-code", 7, _set("entry[1].resource.code.coding[0].code",
                                        "follow-up-check"),
     f"{E1}.code", "value", "Task.code must be"),
    ("request-stay-ends-before-start", 7,
     _set("entry[1].resource.restriction.period.end", "2026-09-20T19:48:40+00:00"),
     f"{E1}.restriction.period", "invariant", "rule csr-1"),
    ("request-no-owner", 7, _set("entry[1].resource.owner", ...), f"{E1}.owner", "required",
     "Task.owner is required for a self-admission-request message: the mental-health centre"),
    ("response-rejected-without-reason", 8, _rejected, E1, "invariant", "rule csp-3"),
    ("ready-missing-task-focus", 9, _set("entry[0].resource.focus[1]", ...),
     "Bundle.entry[0].resource.focus", "required", "names exactly 1 Task"),
    ("ready-no-planned-discharge", 9, _set("entry[2].resource.restriction.period.start", ...),
     "Bundle.entry[2].resource.restriction.period.start", "required", "the planned discharge"),
    ("withdrawn-not-cancelled", 10, _set("entry[1].resource.status", "requested"),
     f"{E1}.status", "value", "'cancelled'"),
    ("readiness-accepted-without-date", 12, _set("entry[1].resource.output", ...), E1,
     "invariant", "rule cdr-2"),
    ("discharge-without-end", 13, _set("entry[1].resource.period.end", ...), f"{E1}.period.end",
     "required",
     "Encounter.period.end is required for a discharge-notice message: the discharge time."),
    ("flag-without-subject", 13, _set("entry[3].resource.subject", ...),
     "Bundle.entry[3].resource.subject", "required", "Flag.subject is required"),
    ("flag-other-code", 13, _set("entry[3].resource.code.coding[0].code", "1234"),
     "Bundle.entry[3].resource.code", "value", "Flag.code must be"),
    ("plan-without-first-contact", 13,
     _set("entry[2].resource.activity[0].detail.performer", ...),
     "Bundle.entry[2].resource", "invariant", "rule cfp-1"),
    ("contact-without-provider", 14, _set("entry[1].resource.serviceProvider", ...),
     f"{E1}.serviceProvider", "required", "the organisation that made the contact"),
    ("contact-without-sender", 14, _set("entry[0].resource.sender", ...),
     "Bundle.entry[0].resource", "invariant", "rule chm-2"),
    ("no-patient", 14, _no_patient, "Bundle.entry", "required", "carries the Patient"),
    ("wrong-event-code", 14, _set("entry[0].resource.eventCoding.code", "contact-made"),
     "Bundle.entry[0].resource.eventCoding", "code-invalid", "message-event"),
    ("ack-response-code", 15, _set("entry[0].resource.response.code", "fine"),
     "Bundle.entry[0].resource.response.code", "invariant", "rule chm-3"),
    ("overdue-without-business-status", 16, _set("entry[1].resource.businessStatus", ...),
     f"{E1}.businessStatus", "required", "the check is overdue"),
    ("focus-outside-the-message", 16, _set("entry[0].resource.focus[0].reference", "Task/123"),
     "Bundle.entry[0].resource.focus[0]", "not-found", "must point at an entry"),
    ("duplicate-full-url", 16, _set("entry[2].fullUrl", "urn:uuid:298c71ae-b226-4374-b208-"
                                    "96e00fd59252"),
     "Bundle.entry[2].fullUrl", "invalid", "each entry has its own"),
    ("header-not-first", 16, _header_second, "Bundle.entry[0].resource", "structure",
     "must be the MessageHeader"),
    ("bad-fnr", 16, _set("entry[2].resource.identifier[0].value", "13116900217"),
     "Bundle.entry[2].resource.identifier[0].value", "value", ""),
]


@pytest.mark.parametrize(("example", "mutate", "expression", "code", "text"),
                         [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_message_names_the_element(example: int, mutate: Callable[[JSON], None],
                                          expression: str, code: str, text: str) -> None:
    bundle = _example(example)
    mutate(bundle)
    errors = _errors(validate_message(bundle))
    assert errors, "the broken message passed"
    matching = [i for i in errors if i.expression == expression]
    assert matching, [(i.expression, i.diagnostics) for i in errors]
    assert any(i.code == code and text in i.diagnostics for i in matching), matching


def test_broken_variants_cover_every_event() -> None:
    covered = {_load(p)["entry"][0]["resource"]["eventCoding"]["code"]
               for p in EXAMPLES if int(p.name[:2]) in {b[1] for b in BROKEN}}
    assert covered == EVENTS


def test_a_missing_element_is_reported_once() -> None:
    bundle = _example(13)
    del bundle["entry"][3]["resource"]["subject"]  # structure and profile both require it
    errors = _errors(validate_message(bundle))
    assert [i.expression for i in errors] == ["Bundle.entry[3].resource.subject"]


def test_not_a_message() -> None:
    assert _errors(validate_message({"resourceType": "Patient"}))[0].expression == "Bundle"
    issues = validate_message({"resourceType": "Bundle", "type": "collection", "entry": []})
    assert {i.expression for i in issues} == {"Bundle.type", "Bundle.entry"}


def test_validate_resource_with_profile() -> None:
    encounter = _example(13)["entry"][1]["resource"]
    discharge = f"{BASE}/StructureDefinition/carehub-discharge-encounter"
    assert validate_resource(encounter, profile=discharge) == []
    del encounter["period"]["end"]
    assert validate_resource(encounter) == []  # plain REST writes: unchanged
    issues = validate_resource(encounter, profile=discharge)
    assert [i.expression for i in issues] == ["Encounter.period.end"]
    assert "by profile carehub-discharge-encounter: the discharge time" in issues[0].diagnostics
    wrong = validate_against({"resourceType": "Task"}, discharge)
    assert wrong[0].code == "invalid"
    assert "for Encounter resources" in wrong[0].diagnostics
    unknown = validate_against(encounter, f"{BASE}/StructureDefinition/nope")
    assert unknown[0].code == "not-found"


# --- the primitives on hand-made profiles ----------------------------------------------------

T = f"{BASE}/test"


def _sd(id_: str, rtype: str, elements: list[JSON], *, kind: str = "resource") -> JSON:
    return {"resourceType": "StructureDefinition", "id": id_, "url": f"{T}/{id_}",
            "name": id_.replace("-", ""), "status": "active", "kind": kind,
            "abstract": False, "type": rtype, "derivation": "constraint",
            "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "differential": {"element": [{"id": rtype, "path": rtype}, *elements]}}


def _el(path: str, **extra: Any) -> JSON:
    return {"id": extra.pop("id", path), "path": path, **extra}


TEST_CS = {"resourceType": "CodeSystem", "id": "test-colours", "url": f"{CS}test-colours",
           "status": "active", "content": "complete",
           "concept": [{"code": "red"}, {"code": "blue", "concept": [{"code": "navy"}]}]}
TEST_VS = {"resourceType": "ValueSet", "id": "test-colours", "url": f"{BASE}/ValueSet/test-colours",
           "status": "active", "compose": {"include": [{"system": f"{CS}test-colours"}]}}
TEST_EXT = _sd("test-ext", "Extension", [
    _el("Extension.url", fixedUri=f"{T}/test-ext"),
    _el("Extension.value[x]", min=1, type=[{"code": "code"}],
        binding={"strength": "required", "valueSet": f"{BASE}/ValueSet/test-colours"}),
], kind="complex-type")
TEST_EXT["url"] = f"{BASE}/StructureDefinition/test-ext"
TEST_EXT["differential"]["element"][1]["fixedUri"] = TEST_EXT["url"]


def _registry(*sds: JSON) -> Conformance:
    return conformance().with_resources([TEST_CS, TEST_VS, TEST_EXT, *sds])


def _check(sd: JSON, resource: JSON, *extra: JSON) -> list[Issue]:
    return validate_against(resource, sd["url"], registry=_registry(sd, *extra))


def _where(issues: list[Issue]) -> list[str | None]:
    return [i.expression for i in issues]


def test_cardinality() -> None:
    sd = _sd("card", "Patient", [
        _el("Patient.identifier", max="1"),
        _el("Patient.name", min=1),
        _el("Patient.name.family", min=1, max="1", short="the family name"),
        _el("Patient.telecom", max="0"),
        _el("Patient.contact.name", min=1),
    ])
    ok = {"resourceType": "Patient", "name": [{"family": "A"}, {"family": "B"}]}
    assert _check(sd, ok) == []  # contact absent: its children are not required
    assert _where(_check(sd, {"resourceType": "Patient"})) == ["Patient.name"]
    issues = _check(sd, {"resourceType": "Patient", "name": [{"family": "A"}, {"given": ["B"]}],
                         "identifier": [{"value": "1"}, {"value": "2"}],
                         "telecom": [{"value": "x"}], "contact": [{"gender": "male"}]})
    assert _where(issues) == ["Patient.identifier", "Patient.name[1].family", "Patient.telecom",
                              "Patient.contact[0].name"]
    assert issues[1].code == "required"
    assert issues[1].diagnostics.endswith("the family name.")
    assert "at most 1 value" in issues[0].diagnostics
    assert "must not be present" in issues[2].diagnostics


def test_fixed() -> None:
    sd = _sd("fixed", "Patient", [
        _el("Patient.gender", fixedCode="female"),
        _el("Patient.maritalStatus", fixedCodeableConcept={"coding": [{"system": "s",
                                                                       "code": "M"}]}),
    ])
    assert _check(sd, {"resourceType": "Patient", "gender": "female"}) == []
    issues = _check(sd, {"resourceType": "Patient", "gender": "male", "maritalStatus": {
        "coding": [{"system": "s", "code": "M", "display": "Married"}]}})
    # fixed is exact: an extra display is a difference
    assert _where(issues) == ["Patient.gender", "Patient.maritalStatus"]
    assert issues[0].code == "value"
    assert "'female'" in issues[0].diagnostics


def test_pattern() -> None:
    sd = _sd("pattern", "Patient", [
        _el("Patient.maritalStatus", patternCodeableConcept={"coding": [{"system": "s",
                                                                         "code": "M"}]}),
        _el("Patient.name", patternHumanName={"use": "official"}),
    ])
    contains = {"resourceType": "Patient", "maritalStatus": {"text": "gift", "coding": [
        {"system": "other", "code": "x"}, {"system": "s", "code": "M", "display": "Married"}]},
        "name": [{"use": "official", "family": "A"}]}
    assert _check(sd, contains) == []
    issues = _check(sd, {"resourceType": "Patient", "maritalStatus": {"coding": [
        {"system": "s", "code": "S"}]}, "name": [{"use": "official"}, {"use": "nickname"}]})
    assert _where(issues) == ["Patient.maritalStatus", "Patient.name[1]"]
    assert "s|M" in issues[0].diagnostics
    assert "s|S" in issues[0].diagnostics


def test_required_binding_to_our_value_set() -> None:
    vs = f"{BASE}/ValueSet/test-colours"
    sd = _sd("binding", "Patient", [
        _el("Patient.maritalStatus", binding={"strength": "required", "valueSet": vs}),
        _el("Patient.gender", binding={"strength": "required", "valueSet": vs}),
        _el("Patient.communication.language", binding={
            "strength": "required", "valueSet": "http://hl7.org/fhir/ValueSet/languages"}),
        _el("Patient.contact.relationship", binding={"strength": "extensible",
                                                     "valueSet": vs}),
    ])
    ok = {"resourceType": "Patient", "gender": "navy", "maritalStatus": {"coding": [
        {"system": "x", "code": "y"}, {"system": f"{CS}test-colours", "code": "red"}]},
        "communication": [{"language": {"text": "klingon"}}],  # external: not checked
        "contact": [{"relationship": [{"text": "friend"}]}]}  # extensible: text is fine
    assert _check(sd, ok) == []
    issues = _check(sd, {"resourceType": "Patient", "gender": "green",
                         "maritalStatus": {"text": "red"}})
    assert _where(issues) == ["Patient.maritalStatus", "Patient.gender"]
    assert all(i.code == "code-invalid" for i in issues)
    assert "(blue, navy, red)" in issues[0].diagnostics


def test_codes_of_our_systems_must_exist_anywhere() -> None:
    sd = _sd("plain", "Patient", [])
    issues = _check(sd, {"resourceType": "Patient", "maritalStatus": {"coding": [
        {"system": f"{CS}test-colours", "code": "green"}]}})
    assert _where(issues) == ["Patient.maritalStatus.coding[0]"]
    assert "'green' is not a code of" in issues[0].diagnostics


def test_invariants() -> None:
    sd = _sd("inv", "Patient", [
        _el("Patient.birthDate", constraint=[{
            "key": "inv-2", "severity": "error", "human": "Born after 1900.",
            "expression": "$this >= @1900-01-01"}]),
        _el("Patient.name", constraint=[{
            "key": "inv-3", "severity": "warning", "human": "A name has a family name.",
            "expression": "family.exists()"}]),
    ])
    sd["differential"]["element"][0]["constraint"] = [{
        "key": "inv-1", "severity": "error", "human": "A named patient has a birth date.",
        "expression": "name.exists() implies birthDate.exists()"}]
    assert _check(sd, {"resourceType": "Patient", "birthDate": "1950-02-03"}) == []
    issues = _check(sd, {"resourceType": "Patient", "name": [{"given": ["A"]}]})
    assert [(i.expression, i.severity) for i in issues] == [
        ("Patient", "error"), ("Patient.name[0]", "warning")]
    assert "rule inv-1" in issues[0].diagnostics
    assert "A named patient has a birth date." in issues[0].diagnostics
    issues = _check(sd, {"resourceType": "Patient", "birthDate": "1850-01-01"})
    assert _where(issues) == ["Patient.birthDate"]


def test_broken_invariant_expression_is_an_error_not_a_pass() -> None:
    sd = _sd("inv-broken", "Patient", [])
    sd["differential"]["element"][0]["constraint"] = [{
        "key": "bad-1", "severity": "error", "human": "x", "expression": "name = "}]
    issues = _check(sd, {"resourceType": "Patient"})
    assert len(issues) == 1
    assert "could not be checked" in issues[0].diagnostics


def test_choice_type_restriction() -> None:
    sd = _sd("choice", "Patient", [
        _el("Patient.deceased[x]", min=1, type=[{"code": "boolean"}], short="whether dead")])
    assert _check(sd, {"resourceType": "Patient", "deceasedBoolean": False}) == []
    missing = _check(sd, {"resourceType": "Patient"})
    assert _where(missing) == ["Patient.deceasedBoolean"]
    wrong = _check(sd, {"resourceType": "Patient", "deceasedDateTime": "2020"})
    assert _where(wrong) == ["Patient.deceasedDateTime"]
    assert "must be of type boolean" in wrong[0].diagnostics


def test_extension_slices_and_definitions() -> None:
    ext_url = TEST_EXT["url"]
    sd = _sd("ext", "Patient", [
        _el("Patient.extension", slicing={"discriminator": [{"type": "value", "path": "url"}],
                                          "rules": "open"}),
        _el("Patient.extension", id="Patient.extension:colour", sliceName="colour", min=1,
            max="1", type=[{"code": "Extension", "profile": [ext_url]}]),
    ])
    slice_expr = f"Patient.extension('{ext_url}')"
    assert _check(sd, {"resourceType": "Patient",
                       "extension": [{"url": ext_url, "valueCode": "red"}]}) == []
    assert _where(_check(sd, {"resourceType": "Patient"})) == [slice_expr]
    twice = _check(sd, {"resourceType": "Patient", "extension": [
        {"url": ext_url, "valueCode": "red"}, {"url": ext_url, "valueCode": "blue"}]})
    assert _where(twice) == [slice_expr]
    bad_value = _check(sd, {"resourceType": "Patient",
                            "extension": [{"url": ext_url, "valueCode": "green"}]})
    assert _where(bad_value) == [f"{slice_expr}.valueCode"]
    no_value = _check(sd, {"resourceType": "Patient", "extension": [{"url": ext_url}]})
    assert _where(no_value) == [f"{slice_expr}.valueCode"]
    unknown = _check(sd, {"resourceType": "Patient", "extension": [
        {"url": ext_url, "valueCode": "red"},
        {"url": f"{BASE}/StructureDefinition/nope", "valueCode": "red"}]})
    assert _where(unknown) == ["Patient.extension[1]"]
    assert "not an extension this hub defines" in unknown[0].diagnostics


@pytest.mark.parametrize(("value", "pattern", "expected"), [
    ("a", "a", True), ("a", "b", False),
    ({"a": 1, "b": 2}, {"a": 1}, True), ({"a": 1}, {"a": 1, "b": 2}, False),
    ([{"x": 1}, {"x": 2, "y": 3}], [{"x": 2}], True), ([{"x": 1}], [{"x": 2}], False),
    ({"coding": [{"system": "s", "code": "c", "display": "d"}]},
     {"coding": [{"system": "s", "code": "c"}]}, True),
])
def test_pattern_containment(value: Any, pattern: Any, expected: bool) -> None:
    assert profiles._contains(value, pattern) is expected


# --- the API: conformance resources read-only, $validate with a profile ----------------------


@pytest.fixture
def api(settings: Any, bearer: str, database: Any) -> Iterator[TestClient]:
    """The hub app with the conformance routes ahead of the generic FHIR ones (as app.py
    includes them), authenticated with a system/*.* token."""
    app = create_app(settings)
    if not any(getattr(r, "path", "") == "/fhir/StructureDefinition"
               for r in app.router.routes):
        app.router.routes[0:0] = conformance_api.router.routes
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Content-Type"] = "application/fhir+json"
        client.headers["Authorization"] = f"Bearer {bearer}"
        yield client


def test_search_and_read_conformance_resources(api: TestClient) -> None:
    url = f"{BASE}/StructureDefinition/carehub-discharge-encounter"
    found = api.get("/fhir/StructureDefinition", params={"url": url})
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["type"] == "searchset"
    assert body["total"] == 1
    assert body["entry"][0]["resource"]["url"] == url
    assert body["entry"][0]["fullUrl"].endswith("/fhir/StructureDefinition/"
                                                "carehub-discharge-encounter")
    both = api.get("/fhir/CodeSystem", params={"_id": "task-code,meeting-type"}).json()
    assert sorted(e["resource"]["id"] for e in both["entry"]) == ["meeting-type", "task-code"]
    every = api.get("/fhir/MessageDefinition", params={"_count": "100"}).json()
    assert every["total"] == len(ALL_EVENTS)
    paged = api.get("/fhir/MessageDefinition", params={"_count": "5"}).json()
    assert len(paged["entry"]) == 5
    assert any(link["relation"] == "next" for link in paged["link"])
    read = api.get("/fhir/CodeSystem/message-event")
    assert read.status_code == 200
    assert read.json()["url"] == f"{CS}message-event"
    assert api.get("/fhir/SearchParameter/Patient-identifier").json()["code"] == "identifier"
    assert api.get("/fhir/ValueSet/goal-category").json()["resourceType"] == "ValueSet"


def test_conformance_errors(api: TestClient) -> None:
    missing = api.get("/fhir/StructureDefinition/nope")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    write = api.post("/fhir/CodeSystem", json={"resourceType": "CodeSystem"})
    assert write.status_code == 405
    assert api.get("/fhir/CodeSystem/task-code/_history").status_code == 405
    ignored = api.get("/fhir/ValueSet", params={"name": "x"}).json()
    assert ignored["entry"][-1]["search"]["mode"] == "outcome"
    anonymous = api.get("/fhir/StructureDefinition", headers={"Authorization": ""})
    assert anonymous.status_code == 401


def test_conformance_needs_a_read_scope(api: TestClient, database: Any) -> None:
    token = register_and_token(api, database, org_id="org-narrow", scope="system/Patient.read")
    narrow = api.get("/fhir/CodeSystem/task-code", headers={"Authorization": f"Bearer {token}"})
    assert narrow.status_code == 403


def test_validate_with_a_profile(api: TestClient) -> None:
    encounter = _example(13)["entry"][1]["resource"]
    encounter["subject"] = {"reference": "Patient/p1"}
    del encounter["period"]["end"]
    profile = f"{BASE}/StructureDefinition/carehub-discharge-encounter"
    plain = api.post("/fhir/Encounter/$validate", json=encounter).json()
    assert plain["issue"][0]["severity"] == "information"
    checked = api.post("/fhir/Encounter/$validate", params={"profile": profile}, json=encounter)
    assert checked.status_code == 200
    issue = checked.json()["issue"][0]
    assert (issue["severity"], issue["expression"]) == ("error", ["Encounter.period.end"])
    wrapped = api.post("/fhir/Encounter/$validate", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": encounter},
            {"name": "profile", "valueUri": profile}]}).json()
    assert wrapped["issue"][0]["expression"] == ["Encounter.period.end"]
    unknown = api.post("/fhir/Encounter/$validate",
                       params={"profile": f"{BASE}/StructureDefinition/nope"}, json=encounter)
    assert unknown.status_code == 400


def test_validate_a_message(api: TestClient) -> None:
    good = api.post("/fhir/Bundle/$validate", json=_example(13)).json()
    assert [i["severity"] for i in good["issue"]] == ["information"]
    warned = api.post("/fhir/Bundle/$validate", json=_example(9)).json()
    assert [i["severity"] for i in warned["issue"]] == ["warning"]
    broken = _example(13)
    del broken["entry"][1]["resource"]["period"]["end"]
    issues = api.post("/fhir/Bundle/$validate", json=broken).json()["issue"]
    assert issues[0]["expression"] == ["Bundle.entry[1].resource.period.end"]


def test_capability_entries() -> None:
    entries = conformance_api.capability_resources()
    assert {e["type"] for e in entries} == set(profiles.CONFORMANCE_TYPES)
    assert all([i["code"] for i in e["interaction"]] == ["read", "search-type"]
               for e in entries)
    supported = conformance_api.supported_profiles()
    assert f"{BASE}/StructureDefinition/carehub-discharge-encounter" in supported["Encounter"]
    assert "Extension" not in supported
    messages = conformance_api.capability_messaging()[0]["supportedMessage"]
    assert len(messages) == len(ALL_EVENTS)

"""fhir_profiles/search-parameters.json: the SearchParameters the hub indexes at write time.

Each expression is evaluated by fhirpathpy on raw resource JSON (no model, no resolve()), so the
tests compile every expression and run it over the shared HL7 R4 examples of its base type.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import fhirpathpy
import pytest
from fhir.resources.R4B.searchparameter import SearchParameter

ROOT = Path(__file__).resolve().parents[2]
BUNDLE_PATH = ROOT / "fhir_profiles" / "search-parameters.json"
EXAMPLES = Path("/work/shared/fhir-r4-examples")  # HL7 R4 examples, see its README.md
URL_PREFIX = "http://carehub.example/fhir/SearchParameter/"
HUB_TYPES = ("token", "reference", "date", "string")
SERVED = frozenset({
    "Patient", "Organization", "Endpoint", "Practitioner", "PractitionerRole", "RelatedPerson",
    "CareTeam", "Consent", "CarePlan", "Goal", "Appointment", "AppointmentResponse", "Encounter",
    "Communication", "Task", "ServiceRequest", "Flag", "QuestionnaireResponse",
    "DocumentReference", "Location", "Bundle", "Provenance", "AuditEvent",
})


def _load_bundle() -> dict[str, Any]:
    return json.loads(BUNDLE_PATH.read_text(encoding="utf-8"))


BUNDLE = _load_bundle()
PARAMS: list[dict[str, Any]] = [e["resource"] for e in BUNDLE.get("entry", [])]
BY_KEY = {(p["base"][0], p["code"]): p for p in PARAMS}


def _example_files(resource_type: str) -> list[Path]:
    folder = EXAMPLES / resource_type
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


@cache
def _example(name: str) -> dict[str, Any]:
    rtype = name.split("-", 1)[0]
    return json.loads((EXAMPLES / rtype / name).read_text(encoding="utf-8"))


def _evaluate(base: str, code: str, resource: dict[str, Any]) -> list[Any]:
    return fhirpathpy.compile(BY_KEY[(base, code)]["expression"])(resource)


def _refs(values: list[Any]) -> list[str]:
    return [v["reference"] for v in values if isinstance(v, dict) and "reference" in v]


def test_bundle_is_a_collection() -> None:
    assert BUNDLE["resourceType"] == "Bundle"
    assert BUNDLE["type"] == "collection"
    assert PARAMS, "bundle has no entries"
    full_urls = [e.get("fullUrl") for e in BUNDLE["entry"]]
    assert len(set(full_urls)) == len(full_urls)
    for entry in BUNDLE["entry"]:
        assert entry["fullUrl"] == entry["resource"]["url"]


def test_base_code_pairs_are_unique() -> None:
    keys = [(p["base"][0], p["code"]) for p in PARAMS]
    assert len(keys) == len(set(keys))
    ids = [p["id"] for p in PARAMS]
    assert len(ids) == len(set(ids))


def test_every_served_type_has_parameters() -> None:
    assert {p["base"][0] for p in PARAMS} == SERVED


@pytest.mark.parametrize("sp", PARAMS, ids=[p["id"] for p in PARAMS])
def test_search_parameter_is_valid(sp: dict[str, Any]) -> None:
    SearchParameter.model_validate(sp)
    assert sp["resourceType"] == "SearchParameter"
    assert sp["status"] == "active"
    assert len(sp["base"]) == 1
    base, code = sp["base"][0], sp["code"]
    assert base in SERVED
    assert sp["id"] == f"{base}-{code}"
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", sp["id"])
    assert sp["url"] == URL_PREFIX + sp["id"]
    assert re.fullmatch(r"[A-Z][A-Za-z0-9_]{0,254}", sp["name"])
    assert sp["type"] in HUB_TYPES
    desc = sp["description"]
    assert desc.strip() == desc
    assert desc.endswith(".")
    assert "\n" not in desc
    assert sp["expression"].startswith(f"{base}.")
    assert "resolve()" not in sp["expression"]
    if sp["type"] == "reference":
        assert sp.get("target"), "reference parameter without target"
        assert len(set(sp["target"])) == len(sp["target"])
    else:
        assert "target" not in sp
    if code == "patient":
        assert sp["target"] == ["Patient"]


@pytest.mark.parametrize("sp", PARAMS, ids=[p["id"] for p in PARAMS])
def test_expression_evaluates_on_examples(sp: dict[str, Any]) -> None:
    evaluate = fhirpathpy.compile(sp["expression"])
    for path in _example_files(sp["base"][0]):
        resource = json.loads(path.read_text(encoding="utf-8"))
        values = evaluate(resource)
        assert isinstance(values, list), path.name
        if sp["type"] == "reference":
            assert all(isinstance(v, dict) for v in values), path.name


# --- spot checks on the shared examples ---------------------------------------------------------


def test_task_focus_yields_a_reference() -> None:
    values = _evaluate("Task", "focus", _example("Task-example1.json"))
    assert _refs(values) == ["ServiceRequest/lipid"]
    assert "ServiceRequest" in BY_KEY[("Task", "focus")]["target"]


def test_task_patient_and_subject_read_task_for() -> None:
    task = _example("Task-example1.json")
    assert _refs(_evaluate("Task", "patient", task)) == ["Patient/example"]
    assert _refs(_evaluate("Task", "subject", task)) == ["Patient/example"]


def test_patient_identifier_yields_identifiers() -> None:
    values = _evaluate("Patient", "identifier", _example("Patient-example.json"))
    assert [(v["system"], v["value"]) for v in values] == [
        ("urn:oid:1.2.36.146.595.217.0.1", "12345")
    ]


def test_patient_name_and_birthdate() -> None:
    patient = _example("Patient-example.json")
    assert "Chalmers" in _evaluate("Patient", "family", patient)
    assert "Jim" in _evaluate("Patient", "given", patient)
    assert _evaluate("Patient", "birthdate", patient) == ["1974-12-25"]
    assert _evaluate("Patient", "active", patient) == [True]


def test_appointment_actor_yields_participants() -> None:
    appointment = _example("Appointment-example.json")
    expected = [p["actor"]["reference"] for p in appointment["participant"] if "actor" in p]
    refs = _refs(_evaluate("Appointment", "actor", appointment))
    assert refs == expected
    assert any(r.startswith("Patient/") for r in refs)
    assert any(r.startswith("Practitioner/") for r in refs)
    assert _evaluate("Appointment", "date", appointment) == [appointment["start"]]


def test_consent_actor_and_period_read_the_provision() -> None:
    hits = {"actor": 0, "period": 0}
    for path in _example_files("Consent"):
        consent = json.loads(path.read_text(encoding="utf-8"))
        provision = consent.get("provision", {})
        if provision.get("actor"):
            assert _refs(_evaluate("Consent", "actor", consent))
            hits["actor"] += 1
        if provision.get("period"):
            assert _evaluate("Consent", "period", consent) == [provision["period"]]
            hits["period"] += 1
    assert hits["actor"]
    assert hits["period"]


def test_choice_elements_use_concrete_names() -> None:
    goal = _example("Goal-example.json")
    assert _evaluate("Goal", "target-date", goal) == [goal["target"][0]["dueDate"]]
    for path in _example_files("ServiceRequest"):
        request = json.loads(path.read_text(encoding="utf-8"))
        values = _evaluate("ServiceRequest", "occurrence", request)
        for key in ("occurrenceDateTime", "occurrencePeriod"):
            if key in request:
                assert request[key] in values, path.name


def test_common_parameters_find_what_the_examples_hold() -> None:
    """identifier, status, subject/patient, code and category return values wherever present."""
    element = {"identifier": "identifier", "status": "status", "subject": "subject",
               "code": "code", "category": "category"}
    checked = 0
    for (base, code), sp in BY_KEY.items():
        if code not in element or base == "DocumentReference" and code == "identifier":
            continue
        if sp["expression"] != f"{base}.{element[code]}":
            continue
        for path in _example_files(base):
            resource = json.loads(path.read_text(encoding="utf-8"))
            if element[code] in resource:
                assert _evaluate(base, code, resource), f"{sp['id']} on {path.name}"
                checked += 1
    assert checked > 50

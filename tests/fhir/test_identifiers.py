"""Fødselsnummer / D-nummer checks and the Identifier walk that runs on every write."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.fhir.identifiers import (
    DNR_SYSTEM,
    FNR_SYSTEM,
    HPR_SYSTEM,
    d_nummer_problem,
    fodselsnummer_problem,
    identifier_problems,
    make_d_nummer,
    make_fodselsnummer,
)

EXAMPLE_FNR = "13116900216"  # the synthetic person of shared/examples
EXAMPLE_DNR = "53116900390"  # same date, individual 003 (002 gives check digit 10)


def _flip(value: str, position: int, digit: str) -> str:
    return value[:position] + digit + value[position + 1 :]


@pytest.mark.parametrize(
    "value",
    [
        EXAMPLE_FNR,
        "31129956715",  # the worked example of fnrinfo.no
        "29020075080",  # 29 Feb 2000 (individual 750: born 2000s, a leap year)
        "13517000269",  # month + 40 (NAV Dolly synthetic, also H-nummer)
        "13917000241",  # month + 80 (Skatteetaten Tenor synthetic)
    ],
)
def test_valid_fodselsnummer_passes(value: str) -> None:
    assert fodselsnummer_problem(value) is None


def test_wrong_first_check_digit_is_rejected() -> None:
    problem = fodselsnummer_problem(_flip(EXAMPLE_FNR, 9, "2"))
    assert problem == "fødselsnummer 13116900226 has a wrong check digit"


def test_wrong_second_check_digit_is_rejected() -> None:
    problem = fodselsnummer_problem(_flip(EXAMPLE_FNR, 10, "7"))
    assert problem == "fødselsnummer 13116900217 has a wrong check digit"


@pytest.mark.parametrize("individual", [3, 6])  # 003: k1 would be 10; 006: k2 would be 10
def test_nine_digits_whose_check_digit_would_be_10_have_no_valid_number(individual: int) -> None:
    with pytest.raises(ValueError, match="check digit 10"):
        make_fodselsnummer(datetime.date(1969, 11, 13), individual)
    first_nine = f"131169{individual:03d}"
    assert all(fodselsnummer_problem(f"{first_nine}{k:02d}") is not None for k in range(100))


@pytest.mark.parametrize("value", ["1311690021", "131169002160", "", "13116900216 "])
def test_wrong_length_is_rejected(value: str) -> None:
    problem = fodselsnummer_problem(value)
    assert problem is not None
    assert "exactly 11 digits" in problem


@pytest.mark.parametrize("value", ["1311690021a", "13116-00216", "1311690021\u0666"])
def test_non_digits_are_rejected(value: str) -> None:
    assert fodselsnummer_problem(value) == "fødselsnummer must contain only the digits 0-9"


@pytest.mark.parametrize(
    "value",
    [
        "32016900280",  # day 32
        "00016900370",  # day 0
        "31136900350",  # month 13
        "31046900211",  # 31 April
        "29020000226",  # 29 Feb 1900 (individual 002): not a leap year
        "29026900253",  # 29 Feb 1969
        "13616900247",  # month 61: + 40 gives 21, + 80 is negative
    ],
)
def test_invalid_date_is_rejected_even_with_right_check_digits(value: str) -> None:
    problem = fodselsnummer_problem(value)
    assert problem == f"fødselsnummer {value} does not start with a valid date of birth (DDMMYY)"


def test_valid_d_nummer_passes() -> None:
    assert d_nummer_problem(EXAMPLE_DNR) is None
    assert d_nummer_problem("71129956709") is None  # 31 December, day + 40


def test_d_nummer_with_wrong_check_digit_is_rejected() -> None:
    assert d_nummer_problem(_flip(EXAMPLE_DNR, 10, "5")) == (
        "D-nummer 53116900395 has a wrong check digit"
    )


def test_d_nummer_with_impossible_day_is_rejected() -> None:
    problem = d_nummer_problem("72116900212")  # day 72 - 40 = 32
    assert problem is not None
    assert "valid date" in problem


def test_fodselsnummer_under_the_d_nummer_system_is_rejected() -> None:
    problem = d_nummer_problem(EXAMPLE_FNR)
    assert problem is not None
    assert FNR_SYSTEM in problem


def test_d_nummer_under_the_fodselsnummer_system_is_rejected() -> None:
    problem = fodselsnummer_problem(EXAMPLE_DNR)
    assert problem is not None
    assert DNR_SYSTEM in problem


def test_patient_with_one_good_and_one_bad_identifier() -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {"system": FNR_SYSTEM, "value": EXAMPLE_FNR},
            {"use": "old", "system": FNR_SYSTEM, "value": "13116900217"},
            {"system": HPR_SYSTEM, "value": "not checked"},
        ],
    }
    assert identifier_problems(patient) == [
        ("Patient.identifier[1].value", "fødselsnummer 13116900217 has a wrong check digit"),
    ]


def test_bad_number_in_a_reference_identifier_is_found() -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "subject": {"identifier": {"system": DNR_SYSTEM, "value": EXAMPLE_FNR}},
        "participant": [
            {"individual": {"identifier": {"system": FNR_SYSTEM, "value": EXAMPLE_FNR}}},
            {"individual": {"identifier": {"system": FNR_SYSTEM, "value": "1311690021"}}},
        ],
    }
    found = identifier_problems(encounter)
    assert [where for where, _ in found] == [
        "Encounter.subject.identifier.value",
        "Encounter.participant[1].individual.identifier.value",
    ]


def test_contained_resources_and_bundles_are_walked() -> None:
    bad = {"system": FNR_SYSTEM, "value": "13116900217"}
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {"resourceType": "Flag", "subject": {"reference": "Patient/1"}}},
            {
                "resource": {
                    "resourceType": "Consent",
                    "contained": [{"resourceType": "Patient", "identifier": [bad]}],
                }
            },
        ],
    }
    assert [where for where, _ in identifier_problems(bundle)] == [
        "Bundle.entry[1].resource.contained[0].identifier[0].value",
    ]


def test_non_string_value_and_alias_system_are_checked() -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {"system": FNR_SYSTEM, "value": 13116900216},
            {"system": "http://hl7.no/fhir/NamingSystem/FNR", "value": "13116900217"},
        ],
    }
    assert identifier_problems(patient) == [
        ("Patient.identifier[0].value", "fødselsnummer must be a string"),
        ("Patient.identifier[1].value", "fødselsnummer 13116900217 has a wrong check digit"),
    ]


def test_deeply_nested_document_does_not_overflow_the_stack() -> None:
    node: dict[str, object] = {"system": FNR_SYSTEM, "value": "0"}
    for _ in range(5000):
        node = {"extension": [node]}
    found = identifier_problems({"resourceType": "Basic", **node})
    assert len(found) == 1


def test_make_rejects_individual_numbers_of_another_century() -> None:
    with pytest.raises(ValueError, match="does not belong"):
        make_fodselsnummer(datetime.date(1985, 5, 17), 600)
    with pytest.raises(ValueError, match="0-999"):
        make_fodselsnummer(datetime.date(1985, 5, 17), 1000)


def _individuals_for(year: int) -> st.SearchStrategy[int]:
    yy = year % 100
    if year < 1900:
        return st.integers(500, 749)
    if year < 2000:
        high = st.integers(900, 999) if yy >= 40 else st.nothing()
        return st.integers(0, 499) | high
    return st.integers(500, 999)


@st.composite
def _birth(draw: st.DrawFn) -> tuple[datetime.date, int]:
    born = draw(st.dates(datetime.date(1854, 1, 1), datetime.date(2039, 12, 31)))
    return born, draw(_individuals_for(born.year))


@given(_birth(), st.sampled_from([0, 40, 80]))
def test_made_numbers_validate_and_every_single_digit_change_is_caught(
    birth: tuple[datetime.date, int], month_offset: int
) -> None:
    # Holds for all 11 positions: k2's weights 5,4,3,2,7,6,5,4,3,2 cover digits 1-10 and are all
    # non-zero mod 11 (a prime), so changing one digit by 1-9 always changes k2 (or makes it 10).
    born, individual = birth
    for make, check in (
        (make_fodselsnummer, fodselsnummer_problem),
        (make_d_nummer, d_nummer_problem),
    ):
        try:
            value = make(born, individual, month_offset=month_offset)
        except ValueError:
            continue  # check digit 10 for this date: the caller picks another individual number
        assert check(value) is None
        for position in range(11):
            for digit in "0123456789":
                if digit != value[position]:
                    assert check(_flip(value, position, digit)) is not None

"""Norwegian person identifiers: system URIs, fødselsnummer / D-nummer checks, fixture makers.

Systems are those of HL7 Norway no-basis (NamingSystem no-basis-foedselsnummer and
no-basis-dnummer): the OID is preferred, the hl7.no URI is an accepted alias, so both are checked.

Check digits follow today's rule: k1 and k2 are mod 11 with fixed weights, and a computed 10
means the number does not exist. Skatteetaten will issue numbers from 1 January 2032 whose k1
may also be the rule's value + 1, 2 or 3 (mod 11); this module rejects those until that is added.
"""

from __future__ import annotations

import calendar
import datetime
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
DNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.2"
HPR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.4"
ORGNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
HERID_SYSTEM = "urn:oid:2.16.578.1.12.4.1.2"
KOMMUNENUMMER_SYSTEM = (
    "https://register.geonorge.no/subregister/sosi-kodelister/kartverket/kommunenummer-alle"
)

_FNR_ALIAS = "http://hl7.no/fhir/NamingSystem/FNR"
_DNR_ALIAS = "http://hl7.no/fhir/NamingSystem/DNR"
# Every system a Patient may carry the numbers a person is one Patient by (CONTRACT section 3)
# under: REST and messages alike (the hl7.no URIs are aliases of the OIDs).
_PERSON_SYSTEMS_ANY = (FNR_SYSTEM, _FNR_ALIAS, DNR_SYSTEM, _DNR_ALIAS)

_K1_WEIGHTS = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_DIGITS = frozenset("0123456789")

# Month offsets that mark synthetic test persons: +80 in Skatteetaten's Tenor test data, +40 in
# NAV's Dolly (the same offset as an H-nummer, which is therefore let through too).
_MONTH_OFFSETS = (0, 40, 80)
_D_DAY_OFFSET = 40


def _check_digit(digits: str, weights: tuple[int, ...]) -> int | None:
    """The mod-11 check digit for `digits`, or None when it would be 10 (no such number)."""
    total = sum(int(d) * w for d, w in zip(digits, weights, strict=True))
    k = (11 - total % 11) % 11
    return None if k == 10 else k


def _check_digits(first_nine: str) -> str | None:
    """k1 and k2 for nine digits as a two-character string, or None when either would be 10."""
    k1 = _check_digit(first_nine, _K1_WEIGHTS)
    if k1 is None:
        return None
    k2 = _check_digit(first_nine + str(k1), _K2_WEIGHTS)
    return None if k2 is None else f"{k1}{k2}"


def _century(yy: int, individual: int) -> int | None:
    """The century an individual number gives a two-digit year, or None when the rules give none."""
    if individual <= 499:
        return 1900
    if individual <= 749 and yy >= 54:
        return 1800
    if yy <= 39:
        return 2000
    if individual >= 900:
        return 1900
    return None


def _date_ok(day: int, month_field: int, yy: int, individual: int) -> bool:
    """True when day and month (plain, +40 or +80) form a calendar date in the number's century."""
    month = next(
        (month_field - off for off in _MONTH_OFFSETS if 1 <= month_field - off <= 12), None
    )
    if month is None or day < 1:
        return False
    # Where the individual number gives no century, 2000+yy still gets leap years right for 19yy.
    year = (_century(yy, individual) or 2000) + yy
    return day <= calendar.monthrange(year, month)[1]


def _shape_problem(kind: str, value: str) -> str | None:
    """A reason when `value` is not exactly 11 ASCII digits; the value is not echoed (any size)."""
    if len(value) != 11:
        return f"{kind} must be exactly 11 digits, got {len(value)} characters"
    if not _DIGITS.issuperset(value):
        return f"{kind} must contain only the digits 0-9"
    return None


def _is_fnr_date(value: str) -> bool:
    return _date_ok(int(value[0:2]), int(value[2:4]), int(value[4:6]), int(value[6:9]))


def _is_dnr_date(value: str) -> bool:
    day = int(value[0:2]) - _D_DAY_OFFSET
    return _date_ok(day, int(value[2:4]), int(value[4:6]), int(value[6:9]))


def fodselsnummer_problem(value: str) -> str | None:
    """None when `value` is a valid fødselsnummer (11 digits, check digits, date), else why."""
    shape = _shape_problem("fødselsnummer", value)
    if shape is not None:
        return shape
    if _check_digits(value[:9]) != value[9:]:
        return f"fødselsnummer {value} has a wrong check digit"
    if not _is_fnr_date(value):
        if _is_dnr_date(value):
            return f"{value} is a D-nummer, not a fødselsnummer; send it with system {DNR_SYSTEM}"
        return f"fødselsnummer {value} does not start with a valid date of birth (DDMMYY)"
    return None


def d_nummer_problem(value: str) -> str | None:
    """None when `value` is a valid D-nummer (day + 40, both check digits, a date), else why."""
    shape = _shape_problem("D-nummer", value)
    if shape is not None:
        return shape
    if _check_digits(value[:9]) != value[9:]:
        return f"D-nummer {value} has a wrong check digit"
    if not _is_dnr_date(value):
        if _is_fnr_date(value):
            return f"{value} is a fødselsnummer, not a D-nummer; send it with system {FNR_SYSTEM}"
        return f"D-nummer {value} does not start with a valid date (the day plus 40, then MMYY)"
    return None


_CHECKS: dict[str, tuple[str, Callable[[str], str | None]]] = {
    FNR_SYSTEM: ("fødselsnummer", fodselsnummer_problem),
    _FNR_ALIAS: ("fødselsnummer", fodselsnummer_problem),
    DNR_SYSTEM: ("D-nummer", d_nummer_problem),
    _DNR_ALIAS: ("D-nummer", d_nummer_problem),
}

# A location is a linked list (parent, segment) so nothing is formatted unless a problem is found.
_Loc: TypeAlias = tuple["_Loc | None", str]


def person_numbers(resource: Mapping[str, Any]) -> list[str]:
    """The fødselsnummer and D-nummer values a Patient carries, under either system name."""
    idents = resource.get("identifier")
    if isinstance(idents, dict):
        idents = [idents]
    return sorted({str(i["value"]) for i in (idents if isinstance(idents, list) else [])
                   if isinstance(i, dict) and i.get("system") in _PERSON_SYSTEMS_ANY
                   and isinstance(i.get("value"), str) and i["value"]})


def person_identifier_pairs(numbers: Iterable[str]) -> list[tuple[str, str]]:
    """(system, value) of every way a stored Patient may carry each of `numbers` (once each,
    in order of number)."""
    return [(system, number) for number in sorted(set(numbers))
            for system in _PERSON_SYSTEMS_ANY]


def _render(loc: _Loc) -> str:
    parts: list[str] = []
    node: _Loc | None = loc
    while node is not None:
        parts.append(node[1])
        node = node[0]
    return "".join(reversed(parts))


def identifier_problems(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(location, reason) for every fødselsnummer / D-nummer Identifier anywhere in `resource`."""
    problems: list[tuple[str, str]] = []
    root: _Loc = (None, str(resource.get("resourceType") or "Resource"))
    # Iterative, so a deeply nested document cannot exhaust the interpreter stack.
    stack: list[tuple[object, _Loc]] = [(resource, root)]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, Mapping):
            system = node.get("system")
            if isinstance(system, str) and system in _CHECKS and "value" in node:
                kind, check = _CHECKS[system]
                value = node["value"]
                reason = check(value) if isinstance(value, str) else f"{kind} must be a string"
                if reason is not None:
                    problems.append((_render((loc, ".value")), reason))
            children = [
                (child, (loc, "." + key))
                for key, child in node.items()
                if isinstance(child, Mapping | list)
            ]
        elif isinstance(node, list):
            children = [
                (child, (loc, f"[{i}]"))
                for i, child in enumerate(node)
                if isinstance(child, Mapping | list)
            ]
        else:
            continue
        stack.extend(reversed(children))
    return problems


def _make(birth_date: datetime.date, individual: int, day_offset: int, month_offset: int) -> str:
    if not 0 <= individual <= 999:
        raise ValueError(f"individual number must be 0-999, got {individual}")
    if month_offset not in _MONTH_OFFSETS:
        raise ValueError(f"month_offset must be one of {_MONTH_OFFSETS}, got {month_offset}")
    yy = birth_date.year % 100
    if _century(yy, individual) != birth_date.year - yy:
        raise ValueError(
            f"individual number {individual:03d} does not belong to birth year {birth_date.year}"
        )
    first_nine = (
        f"{birth_date.day + day_offset:02d}{birth_date.month + month_offset:02d}"
        f"{yy:02d}{individual:03d}"
    )
    check = _check_digits(first_nine)
    if check is None:
        raise ValueError(
            f"individual number {individual:03d} gives check digit 10 on {birth_date}; pick another"
        )
    return first_nine + check


def make_fodselsnummer(birth_date: datetime.date, individual: int, *, month_offset: int = 0) -> str:
    """A valid fødselsnummer; ValueError if `individual` is not 0-999, off-century, or gives 10."""
    return _make(birth_date, individual, 0, month_offset)


def make_d_nummer(birth_date: datetime.date, individual: int, *, month_offset: int = 0) -> str:
    """A valid D-nummer; raises ValueError as make_fodselsnummer does."""
    return _make(birth_date, individual, _D_DAY_OFFSET, month_offset)

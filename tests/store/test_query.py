"""Parsing search values: FHIR's escapes (R4 search.html, "Escaping Search Parameters")."""

from __future__ import annotations

import pytest

from hub.errors import BadRequestError
from hub.store.query import MAX_VALUES, parse_request, split_escaped, unescape


@pytest.mark.parametrize(("value", "separator", "most", "parts"), [
    ("a,b", ",", -1, ["a", "b"]),
    ("a\\,b,c", ",", -1, ["a\\,b", "c"]),  # an escaped comma does not separate
    ("a\\\\,b", ",", -1, ["a\\\\", "b"]),  # an escaped backslash, then a separating comma
    ("s|a\\|T|x", "|", 1, ["s", "a\\|T|x"]),  # a token splits once, on the first unescaped |
    ("a\\|T", "|", 1, ["a\\|T"]),
    ("b\\T,", ",", -1, ["b\\T", ""]),
    ("end\\", ",", -1, ["end\\"]),
])
def test_split_on_unescaped_separators_only(value: str, separator: str, most: int,
                                            parts: list[str]) -> None:
    assert split_escaped(value, separator, most) == parts


@pytest.mark.parametrize(("value", "literal"), [
    ("a\\|T", "a|T"), ("b\\\\T", "b\\T"), ("c\\$T", "c$T"), ("Es\\,Comma", "Es,Comma"),
    ("b\\T", "b\\T"), ("c$T", "c$T"), ("a\\\\\\|", "a\\|"),  # unknown escapes stay as written
])
def test_unescape_gives_the_literal_character(value: str, literal: str) -> None:
    assert unescape(value) == literal


def test_escaped_commas_do_not_count_against_the_value_limit() -> None:
    many = ",".join(["x"] * MAX_VALUES)
    assert parse_request("Patient", [("name", many)], default_count=1, max_count=1).criteria
    with pytest.raises(BadRequestError, match="101 comma-separated values"):
        parse_request("Patient", [("name", many + ",y")], default_count=1, max_count=1)
    escaped = "\\,".join(["x"] * (MAX_VALUES + 5))
    assert parse_request("Patient", [("name", escaped)], default_count=1, max_count=1).criteria


@pytest.mark.parametrize("name", ["_count", "_offset"])
def test_a_negative_count_or_offset_is_refused_not_taken_as_zero(name: str) -> None:
    with pytest.raises(BadRequestError, match=f"{name} must not be negative"):
        parse_request("Patient", [(name, "-1")], default_count=20, max_count=500)
    # controls: zero and a positive number are taken as given
    for value, expected in (("0", 0), ("7", 7)):
        req = parse_request("Patient", [(name, value)], default_count=20, max_count=500)
        assert getattr(req, name.removeprefix("_")) == expected

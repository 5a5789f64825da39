"""What a FHIR string may hold, for every way text comes in: resource bodies (structure),
search values and the hub's own names (users, sign-in).

R4 datatypes, string: "Strings SHALL NOT contain Unicode character points below 32, except
for u0009 (horizontal tab), u0010 (carriage return) and u0013 (line feed)" (decimal code
points). Every FHIR primitive but boolean and the numbers is a string in JSON, and a search
value is compared with such strings, so a value holding one matches nothing that may be
stored. PostgreSQL's text cannot hold U+0000 at all: unchecked, such a value was a 500 there
where SQLite stored or searched it."""

from __future__ import annotations

import re
from typing import Any

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
"""One character a FHIR string may not hold."""

SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone surrogate: JSON's `"\\ud800"` escape gives a Python string one, which encodes no
character and cannot be written as UTF-8 (hub.fhir.jsonio refuses it in request bodies)."""

_UNRECORDABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")

RULE = "FHIR strings hold none below U+0020 but tab, line feed and carriage return"
"""The rule in words, for the diagnostics that refuse such a character."""


def forbidden_character(text: str) -> str | None:
    """The first character of `text` a FHIR string may not hold, as "U+0000"; None if none."""
    found = CONTROL.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def without_control(text: str) -> str:
    """`text` with each character a FHIR string may not hold (lone surrogates too) replaced by
    U+FFFD, for recording and looking up what a caller sent (nothing stored holds one)."""
    return _UNRECORDABLE.sub("\ufffd", text)


def without_control_in(node: Any) -> Any:
    """`node` (JSON: dicts, lists, strings, ...) with `without_control` applied to every
    string in it, keys too; what holds none comes back equal."""
    if isinstance(node, str):
        return without_control(node)
    if isinstance(node, dict):
        return {without_control(k): without_control_in(v) for k, v in node.items()}
    if isinstance(node, list):
        return [without_control_in(v) for v in node]
    return node

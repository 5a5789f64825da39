"""hub/fhir/jsonio.py writes JSON with orjson where it can and simplejson where it cannot:
the bytes must be simplejson's own (stored bodies, content hashes and the audit trail hash
them), decimals as written, and what neither can write fails as before."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import simplejson

from hub.errors import BadRequestError
from hub.fhir import jsonio
from hub.store.service import Wanted  # a dataclass
from tests.conftest import SHARED

EXAMPLES = sorted((SHARED / "fhir-r4-examples").glob("*/*.json"))


def _simplejson(data: Any, *, sort_keys: bool) -> bytes:
    text: str = simplejson.dumps(data, use_decimal=True, ensure_ascii=False,
                                 separators=(",", ":"), sort_keys=sort_keys)
    return text.encode("utf-8")


EDGES: list[Any] = [
    {"b": Decimal("0.40"), "a": Decimal("1E+2"), "c": Decimal("-0.000"), "d": 10**20},
    {"text": "Ærø \u2028\u2029 \x00\x1f\x7f \"q\" \\ / \b\f\n\r\t 😀", "é": 1, "e": 2, "Z": 3},
    {"deep": [[[{"z": None, "a": True, "m": False}]]], "n": -(2**63), "p": 2**64},
    [1, 1.5, -0.0, "x", (2, 3)],
    {"zz": {"b": 1, "a": {"d": 1, "c": 2}}, "aa": []},
]


@pytest.mark.parametrize("sort_keys", [False, True])
def test_bytes_are_simplejsons_over_the_hl7_examples_and_the_edges(sort_keys: bool) -> None:
    assert len(EXAMPLES) > 50
    write = jsonio.canonical_bytes if sort_keys else jsonio.dumps_bytes
    for path in EXAMPLES:
        data = jsonio.loads(path.read_bytes())
        assert write(data) == _simplejson(data, sort_keys=sort_keys), path.name
    for data in EDGES:
        assert write(data) == _simplejson(data, sort_keys=sort_keys), data
    assert jsonio.dumps(EDGES[1]) == _simplejson(EDGES[1], sort_keys=False).decode()


def test_decimals_stay_as_written_and_what_cannot_be_written_fails_alike() -> None:
    parsed = jsonio.loads(b'{"v": 0.40, "w": 1.0E-3, "i": 123456789012345678901234567890}')
    assert jsonio.dumps_bytes(parsed) == b'{"v":0.40,"w":0.0010,"i":123456789012345678901234567890}'
    for bad in ({"s": {1, 2}}, {"o": object()}, {"t": datetime(2026, 12, 4, tzinfo=UTC)},
                {"d": Wanted(None, "x", frozenset())}):
        with pytest.raises(TypeError):
            jsonio.dumps_bytes(bad)
        with pytest.raises(TypeError):
            _simplejson(bad, sort_keys=False)


def test_a_lone_surrogate_escape_is_refused_naming_where_and_a_pair_is_kept() -> None:
    with pytest.raises(BadRequestError, match="surrogate") as caught:
        jsonio.loads(b'{"resourceType":"Bundle","entry":[{"fullUrl":"urn:uuid:a\\udfff"}]}')
    assert caught.value.expression == "Bundle.entry[0].fullUrl"
    with pytest.raises(BadRequestError, match="surrogate"):
        jsonio.loads('["\\ud800"]')  # text as well as bytes
    with pytest.raises(BadRequestError, match="surrogate") as caught:
        jsonio.loads(b'{"a\\ud800b": 1}')  # a key
    assert "\ud800" not in caught.value.diagnostics
    # controls: a pair is one character; an escaped backslash before "ud800" is no escape
    assert jsonio.loads(b'{"a":"\\ud83d\\ude00"}') == {"a": "\U0001f600"}
    assert jsonio.loads(b'{"a":"\\\\ud800"}') == {"a": "\\ud800"}


def test_what_holds_a_lone_surrogate_is_still_written_escaped() -> None:
    """A diagnostic quoting what escaped the parser's check can always be written."""
    data = {"diagnostics": "'x\ud800' \u00f8", "n": 2 ** 70}
    raw = jsonio.dumps_bytes(data)
    assert raw == b'{"diagnostics":"\'x\\ud800\' \\u00f8","n":1180591620717411303424}'
    assert simplejson.loads(raw) == data

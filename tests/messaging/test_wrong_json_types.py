"""A message whose header or entries hold a value of the wrong JSON type is a 422 naming the
element, changes nothing and is audited: a list for eventCoding.code or a fullUrl, a number
for an endpoint and a null source were 500s (C2, C4)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.db.engine import Database
from hub.messaging.models import MessageRow
from tests.audit.trail import mark, since
from tests.messaging.test_story import EXAMPLES, hub, load, post  # noqa: F401 (fixture)


def _messages(database: Database) -> int:
    with database.session(write=False) as s:
        return int(s.execute(select(func.count()).select_from(MessageRow)).scalar_one())


@pytest.mark.parametrize(("path", "value", "where"), [
    (("entry", 0, "resource", "eventCoding", "code"), [],
     "Bundle.entry[0].resource.eventCoding.code"),
    (("entry", 0, "resource", "eventCoding", "system"), {"a": 1},
     "Bundle.entry[0].resource.eventCoding.system"),
    (("entry", 0, "fullUrl"), [], "Bundle.entry[0].fullUrl"),
    (("entry", 2, "fullUrl"), {}, "Bundle.entry[2].fullUrl"),
    (("entry", 0, "resource", "source", "endpoint"), 1,
     "Bundle.entry[0].resource.source.endpoint"),
    (("entry", 0, "resource", "destination", 0, "endpoint"), True,
     "Bundle.entry[0].resource.destination[0].endpoint"),
    (("entry", 0, "resource", "source"), None, "Bundle.entry[0].resource.source"),
    (("entry", 1, "resource", "class"), None, "Bundle.entry[1].resource.class"),
    (("entry", 1, "resource", "period", "start"), 1, "Bundle.entry[1].resource.period.start"),
])
def test_a_message_value_of_the_wrong_json_type_is_422_and_changes_nothing(
        hub: dict[str, TestClient], database: Database,  # noqa: F811
        path: tuple[Any, ...], value: Any, where: str) -> None:
    message = load(EXAMPLES[2])
    bad = copy.deepcopy(message)
    node: Any = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    before = mark(database)
    r = post(hub, bad)
    assert r.status_code == 422, r.text[:500]
    assert where in {e for i in r.json()["issue"] for e in i.get("expression", [])}, r.text
    assert _messages(database) == 0
    assert [rec.outcome for rec in since(database, before)] == ["4"]
    assert post(hub, message).status_code == 200  # control: the message as it was

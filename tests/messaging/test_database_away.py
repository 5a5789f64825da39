"""While the database is away (a restart, a failover, connections cut) a message is answered
503 with Retry-After, which clients send again, not 500; sent again once the database is
back, it is taken once."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.db.engine import Database
from hub.messaging.models import MessageRow
from tests.database_away import database_away
from tests.messaging.test_story import EXAMPLES, hub, load, post  # noqa: F401 (fixture)


def test_a_message_while_the_database_is_away_is_503_then_taken_once(
        hub: dict[str, TestClient], database: Database, db_url: str) -> None:  # noqa: F811
    if database.dialect != "postgresql":
        pytest.skip("needs a database server whose connections can be cut")
    message = load(EXAMPLES[2])  # the admission notice
    header_id = message["entry"][0]["resource"]["id"]
    with database_away(db_url):
        r = post(hub, message)
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "5"
        issue = r.json()["issue"][0]
        assert issue["code"] == "transient"
        assert "Send it again" in issue["diagnostics"]
    first = post(hub, message)
    assert first.status_code == 200, first.text
    again = post(hub, message)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()  # the first answer, not a second acceptance
    with database.session(write=False) as s:
        taken = s.scalar(select(func.count()).select_from(MessageRow)
                         .where(MessageRow.header_id == header_id))
    assert taken == 1

"""Integers past the 64 bits a column holds in /ui URLs are a 400 or 404, never a 500 (the
driver's OverflowError): the audit page's `after` cursor, a dead letter's id to replay."""

from __future__ import annotations

from typing import Any

import pytest

from hub.db.engine import Database
from hub.demo.scenario import KLEPP
from tests.ui.conftest import Browser, csrf_of, make_dead_letter, make_user, sign_in
from tests.ui.test_pending import _home, _status

BIG = str(2**63)


@pytest.mark.parametrize("after", [BIG, "9" * 30, "\u00b2"])
def test_an_audit_cursor_past_64_bits_is_400(database: Database, browser: Browser,
                                               after: str) -> None:
    make_user(database, "revisor")
    client = browser()
    assert sign_in(client, "revisor").status_code == 303
    refused = client.get("/ui/audit", params={"after": after})
    assert refused.status_code == 400, refused.text[:300]
    assert "not a paging cursor" in refused.text
    assert client.get("/ui/audit", params={"after": str(2**63 - 1)}).status_code == 200  # control


def test_replaying_a_delivery_id_past_64_bits_is_404(
        told: dict[str, Any], database: Database, browser: Browser) -> None:
    delivery_id = make_dead_letter(database, "ready-for-discharge", KLEPP)
    client, _page = _home(browser, "koordinator.dps")
    token = csrf_of(client.get("/ui"))
    for big in (BIG, str(-(2**63) - 1), "9" * 40):
        refused = client.post(f"/ui/deliveries/{big}/replay", data={"csrf_token": token})
        assert refused.status_code == 404, refused.text[:300]
    assert _status(database, delivery_id) == "dead-letter"
    done = client.post(f"/ui/deliveries/{delivery_id}/replay", data={"csrf_token": token})
    assert done.status_code == 303  # control
    assert _status(database, delivery_id) == "queued"

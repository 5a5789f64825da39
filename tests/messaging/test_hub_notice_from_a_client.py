"""Posting the hub's own notice (example 16, no sender) gets a refusal in plain words."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.conftest import SHARED


def test_a_message_without_sender_is_refused_in_plain_words(client: TestClient) -> None:
    raw = (SHARED / "examples" / "16-follow-up-overdue.json").read_text(encoding="utf-8")
    r = client.post("/fhir/$process-message", content=raw.encode())
    assert 400 <= r.status_code < 500, r.text
    text = r.json()["issue"][0]["diagnostics"]
    assert "None" not in text
    assert "sender" in text
    assert json.loads(raw)["entry"][0]["resource"].get("sender") is None

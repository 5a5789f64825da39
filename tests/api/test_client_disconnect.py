"""A client that closes the connection before sending its whole body is no failure of the
hub: logged in one line at info, no incident or traceback, recorded (outcome 4), nothing
changed. It was logged as a 500 incident with two tracebacks (C8)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.db.engine import Database
from tests.audit.trail import mark, since
from tests.factories import patient


def _send(client: TestClient, path: str, body: bytes, *, cut: bool) -> list[dict[str, Any]]:
    """Run one POST through the app as a server would, the client leaving after the first
    100 bytes when `cut`; what the app sent back."""
    headers = [(k.lower().encode(), v.encode()) for k, v in client.headers.items()
               if k.lower() in ("authorization", "content-type")]
    headers.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80), "state": {}}
    parts = ([{"type": "http.request", "body": body[:100], "more_body": True},
              {"type": "http.disconnect"}] if cut
             else [{"type": "http.request", "body": body, "more_body": False}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    assert client.portal is not None
    client.portal.call(client.app, scope, receive, send)
    return sent


@pytest.mark.parametrize("path", ["/fhir/Patient", "/fhir/$process-message"])
def test_a_client_leaving_mid_body_is_one_info_line_not_an_incident(
        client: TestClient, database: Database, caplog: pytest.LogCaptureFixture,
        path: str) -> None:
    body = json.dumps(patient("13116900216")).encode()
    before = mark(database)
    with caplog.at_level(logging.INFO):
        sent = _send(client, path, body, cut=True)
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "incident" not in caplog.text
    assert "closed the connection" in caplog.text
    assert [r.outcome for r in since(database, before)] == ["4"]
    assert client.get("/fhir/Patient").json().get("entry", []) == []
    if path == "/fhir/Patient":  # control: the whole body is taken
        assert _send(client, path, body, cut=False)[0]["status"] == 201

"""What the REST tests of refused input read from an answer."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def outcome(r: Any, status: int, *needles: str) -> str:
    """The diagnostics of an OperationOutcome answered with `status`, each needle in them."""
    assert r.status_code == status, r.text[:500]
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    text = " ".join(i["diagnostics"] for i in body["issue"])
    for needle in needles:
        assert needle in text, text
    return text


def patients(client: TestClient) -> list[dict[str, Any]]:
    """Every Patient the client sees (the first page)."""
    return [e["resource"] for e in client.get("/fhir/Patient").json().get("entry", [])]

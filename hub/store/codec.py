"""How stored bodies become bytes and back: the one place (encryption at rest will go here)."""

from __future__ import annotations

from typing import Any

from hub.fhir.jsonio import dumps_bytes, loads


def encode_body(resource: dict[str, Any]) -> bytes:
    """Bytes to store for a resource body."""
    return dumps_bytes(resource)


def decode_body(raw: bytes) -> dict[str, Any]:
    """The resource body from stored bytes."""
    data: dict[str, Any] = loads(raw, what="A stored body")
    return data

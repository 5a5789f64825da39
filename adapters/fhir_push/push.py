"""FHIR push over HTTP, an OutboundChannel: one POST of the message Bundle to the Endpoint's
address (`connectionType` hl7-fhir-msg).

2xx: delivered. A timeout, a network error, 5xx or 429 (with its Retry-After, seconds or an
HTTP date): try again later. An address that is not an http(s) URL, and any other status:
fatal (the dispatcher dead-letters it). The httpx client (or only its transport, which tests
replace with httpx.MockTransport) is the seam.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from adapters.channels import Sent


class FhirPush:
    """POSTs message Bundles with one shared httpx client (keep-alive, thread-safe)."""

    name = "fhir-push"

    def __init__(self, *, client: httpx.Client | None = None,
                 transport: httpx.BaseTransport | None = None, timeout: float = 10.0) -> None:
        self._own = client is None
        self.client = client or httpx.Client(transport=transport, timeout=timeout)

    def send(self, address: str, body: bytes, *, timeout: float) -> Sent:
        """One POST; the outcome as a Sent."""
        try:
            response = self.client.post(address, content=body, timeout=timeout, headers={
                "Content-Type": "application/fhir+json", "Accept": "application/fhir+json"})
        except httpx.TimeoutException as exc:
            return Sent(False, False, f"No answer within {timeout} s ({type(exc).__name__}) "
                                      f"from {address}")
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:  # the Endpoint is wrong
            return Sent(False, True, f"Cannot post to {address}: {exc}")
        except httpx.HTTPError as exc:
            return Sent(False, False, f"{type(exc).__name__} posting to {address}: {exc}")
        if 200 <= response.status_code < 300:
            return Sent(True)
        snippet = response.text[:300].strip()
        error = f"HTTP {response.status_code} from {address}" + (f": {snippet}" if snippet
                                                                 else "")
        if response.status_code == 429:
            return Sent(False, False, error, retry_after(response.headers.get("retry-after")))
        return Sent(False, not response.status_code >= 500, error)

    def close(self) -> None:
        """Close the client if this channel made it."""
        if self._own:
            self.client.close()


def retry_after(value: str | None, at: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks for (a number, or an HTTP date after `at`)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (at or datetime.now(UTC))).total_seconds())

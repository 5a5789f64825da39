"""The interfaces every channel implements; the hub knows channels only by these.

- `InboundChannel`: takes messages from outside systems into the hub (adapters/mllp).
- `OutboundChannel`: hands the hub's messages to receiving systems (adapters/fhir_push, the
  dispatcher's push); its answer is a `Sent`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class InboundChannel(Protocol):
    """A listener that takes messages from outside systems into the hub (e.g. MLLP).

    `start` binds its port and returns when it listens (raising OSError when the port is
    taken: a process that cannot take its port starts nothing else); `stop` closes it and
    lets messages under way finish."""

    name: str
    port: int  # the port it listens on (once started: port 0 asks for any free one)

    async def start(self) -> None:
        """Listen; raises OSError when the address cannot be taken."""

    async def stop(self) -> None:
        """Stop listening and close open connections."""


@dataclass(frozen=True)
class Sent:
    """The outcome of one attempt to hand a message to a receiver.

    `ok`: the receiver has it. Otherwise `fatal` says whether trying again can help (a
    refusal: no), `error` says what happened, for people, and `retry_after` (seconds) is the
    receiver's own word on when to try again, if it gave one. `sent`: the message went to
    the receiver, or may have (it answered with a refusal, or the answer was lost after the
    request went out), so the attempt is a disclosure even though it failed; not when no
    connection was made."""

    ok: bool
    fatal: bool = False
    error: str | None = None
    retry_after: float | None = None
    sent: bool = False


class OutboundChannel(Protocol):
    """A way to hand a message Bundle to a receiving system (FHIR push over HTTP; an
    e-message network or a queue would be others). Blocking; safe to call from several
    threads at once. The dispatcher decides what to send and records the outcome."""

    name: str

    def send(self, address: str, body: bytes, *, timeout: float) -> Sent:
        """Deliver `body` to `address`; never raises for the receiver's or the network's
        failures (they are a `Sent` with ok False)."""

    def close(self) -> None:
        """Release connections."""

"""The interfaces every channel implements; the hub knows channels only by these."""

from __future__ import annotations

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

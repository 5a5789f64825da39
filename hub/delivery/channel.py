"""The channel the dispatcher pushes through, registered by the composition root.

hub.delivery knows channels only by their interface (adapters/channels.py); the one place
that makes them (adapters/registry.py) registers its push channel here when it is imported,
as hub.app, hub.cli and the tests do. A dispatcher asked before that refuses.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from adapters.channels import OutboundChannel
from hub.config import Settings


class PushFactory(Protocol):
    """Makes the push channel for these settings (`client` or `transport`: a test's HTTP)."""

    def __call__(self, settings: Settings, *, client: httpx.Client | None = None,
                 transport: httpx.BaseTransport | None = None) -> OutboundChannel: ...


_registered: list[PushFactory] = []


def use(factory: PushFactory) -> None:
    """Register how push channels are made (adapters/registry.py does, on import)."""
    _registered[:] = [factory]


def push_channel(settings: Settings, *, client: httpx.Client | None = None,
                 transport: httpx.BaseTransport | None = None) -> OutboundChannel:
    """The registered push channel. RuntimeError when none is registered."""
    if not _registered:
        raise RuntimeError("No push channel is registered: import adapters.registry before "
                           "running the dispatcher.")
    return _registered[0](settings, client=client, transport=transport)

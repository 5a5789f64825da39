"""The one place channels are made: what a hub process serves, from its settings.

Add a channel here (and its folder beside `mllp/`); nothing else names channels.
"""

from __future__ import annotations

from adapters.channels import InboundChannel
from hub.audit.recorder import Auditor
from hub.config import Settings
from hub.db.engine import Database


def mllp_channel(database: Database, settings: Settings, auditor: Auditor, *,
                 host: str | None = None, port: int | None = None) -> InboundChannel:
    """The HL7 v2 MLLP listener on host:port (default HUB_MLLP_HOST, HUB_MLLP_PORT)."""
    from adapters.mllp.intake import Intake
    from adapters.mllp.server import MllpServer

    chosen = port if port is not None else settings.mllp_port
    if chosen is None:
        raise ValueError("no MLLP port: set HUB_MLLP_PORT or pass --port")
    return MllpServer(Intake(database, settings, auditor), host=host or settings.mllp_host,
                      port=chosen, max_bytes=settings.mllp_max_bytes)


def inbound_channels(database: Database, settings: Settings,
                     auditor: Auditor) -> list[InboundChannel]:
    """The inbound channels the settings turn on (MLLP when HUB_MLLP_PORT is set)."""
    channels: list[InboundChannel] = []
    if settings.mllp_port is not None:
        channels.append(mllp_channel(database, settings, auditor))
    return channels

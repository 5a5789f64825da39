"""The one place channels are made: what a hub process serves, from its settings.

Add a channel here (and its folder beside `mllp/`); nothing else names channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from adapters.channels import InboundChannel, OutboundChannel
from hub.audit.recorder import Auditor
from hub.config import Settings
from hub.db.engine import Database
from hub.delivery import channel as hub_channel

if TYPE_CHECKING:
    from adapters.email.notices import Notifier


def mllp_channel(database: Database, settings: Settings, auditor: Auditor, *,
                 host: str | None = None, port: int | None = None,
                 reuse_port: bool = False) -> InboundChannel:
    """The HL7 v2 MLLP listener on host:port (default HUB_MLLP_HOST, HUB_MLLP_PORT);
    `reuse_port`: the worker processes of one `hub serve --workers N` share the port."""
    from adapters.mllp.intake import Intake
    from adapters.mllp.server import MllpServer

    chosen = port if port is not None else settings.mllp_port
    if chosen is None:
        raise ValueError("no MLLP port: set HUB_MLLP_PORT or pass --port")
    return MllpServer(Intake(database, settings, auditor), host=host or settings.mllp_host,
                      port=chosen, max_bytes=settings.mllp_max_bytes, reuse_port=reuse_port)


def inbound_channels(database: Database, settings: Settings,
                     auditor: Auditor) -> list[InboundChannel]:
    """The inbound channels the settings turn on (MLLP when HUB_MLLP_PORT is set)."""
    channels: list[InboundChannel] = []
    if settings.mllp_port is not None:
        channels.append(mllp_channel(database, settings, auditor,
                                     reuse_port=settings.workers > 1))
    return channels


def push_channel(settings: Settings, *, client: httpx.Client | None = None,
                 transport: httpx.BaseTransport | None = None) -> OutboundChannel:
    """The channel the dispatcher pushes deliveries through: FHIR messaging over HTTP to the
    receiver's hl7-fhir-msg Endpoint (`client` or `transport` replace the HTTP client)."""
    from adapters.fhir_push import FhirPush

    return FhirPush(client=client, transport=transport, timeout=settings.delivery_timeout)


def notifier(database: Database, settings: Settings) -> Notifier | None:
    """The e-mail notice sweeper when HUB_SMTP_URL is set (not started), else None."""
    if not settings.smtp_url:
        return None
    from adapters.email.notices import Notifier
    from adapters.email.smtp import SmtpMailer

    mailer = SmtpMailer(settings.smtp_url, sender=settings.notify_from)
    return Notifier(database, settings, mailer,
                    every=min(settings.scheduler_interval, settings.notify_interval))


hub_channel.use(push_channel)  # the dispatcher pushes through it (hub/delivery/channel.py)

"""Run an inbound channel on an event loop of its own in a thread, for code that is not
async itself (`hub demo`, tests, benchmarks)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from adapters.channels import InboundChannel

C = TypeVar("C", bound=InboundChannel)


@contextmanager
def running(channel: C, *, timeout: float = 20.0) -> Iterator[C]:
    """`channel` started (its port taken) on a background loop; stopped on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"hub-{channel.name}",
                              daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(channel.start(), loop).result(timeout)
        try:
            yield channel
        finally:
            asyncio.run_coroutine_threadsafe(channel.stop(), loop).result(timeout)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()

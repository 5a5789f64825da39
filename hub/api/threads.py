"""Work handed from the event loop to a worker thread (a database transaction, a token's
look-up), cheaply.

Starlette's `run_in_threadpool` and anyio's `to_thread.run_sync` cost 68-89 us of CPU a
hand-over (a `queue.Queue` whose Condition is Python, a cancel scope, a limiter, run vars);
an asyncio executor's hand-over (a `SimpleQueue` in C, `call_soon_threadsafe` back) costs
24-28 us (a loop of 8,000 hand-overs of a function that does nothing, 8 at a time, on
uvloop, three runs each). Every request makes two: its token's look-up and its work.

`in_thread` keeps what the routes relied on in anyio's: the work runs with the caller's
context variables, and a caller that is cancelled still waits for its work to finish before
it goes on (a write's turn is not given back while its transaction is still running).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

THREADS = 40
"""Worker threads of a process at most: as many as anyio's default gave the routes."""

_POOL = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="hub-work")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on a worker thread, in a copy of the caller's context; its result or
    exception. Cancelled while it runs, the caller waits for it to end, then is cancelled."""
    loop = asyncio.get_running_loop()
    work = functools.partial(contextvars.copy_context().run, fn, *args)
    future = loop.run_in_executor(_POOL, work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                continue
            except Exception:  # the caller is cancelled: that is what it sees
                break
        raise

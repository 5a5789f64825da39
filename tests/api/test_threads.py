"""Work handed to a worker thread (hub/api/threads.py) sees the caller's context variables,
gives back its result or exception, and a caller cancelled meanwhile waits for the work to
end before it is cancelled (a write's turn is not given back while its transaction runs)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from hub.api.threads import in_thread

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def test_the_work_runs_on_another_thread_with_the_callers_context() -> None:
    async def main() -> tuple[str, int]:
        WHO.set("kari")
        return await in_thread(lambda: (WHO.get(), threading.get_ident()))

    who, ident = asyncio.run(main())
    assert who == "kari"
    assert ident != threading.get_ident()


def test_the_works_exception_reaches_the_caller() -> None:
    def fails(n: int) -> int:
        raise LookupError(f"no {n}")

    with pytest.raises(LookupError, match="no 7"):
        asyncio.run(in_thread(fails, 7))


def test_a_cancelled_caller_waits_for_its_work_to_end() -> None:
    started, release = threading.Event(), threading.Event()
    ended: list[float] = []

    def work() -> str:
        started.set()
        release.wait(5)
        time.sleep(0.05)
        ended.append(time.monotonic())
        return "done"

    async def main() -> tuple[bool, float]:
        task = asyncio.create_task(in_thread(work))
        while not started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.sleep(0.05)
        still_waiting = not task.done()  # cancelled, but its work has not ended
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return still_waiting, time.monotonic()

    still_waiting, seen = asyncio.run(main())
    assert still_waiting
    assert ended
    assert ended[0] <= seen  # the work had ended when the caller went on


def test_an_uncancelled_caller_gets_the_result() -> None:  # control for the test above
    assert asyncio.run(in_thread(lambda a, b: a + b, 2, 3)) == 5

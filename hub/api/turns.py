"""Turns for the write requests of one hub process: a bulkhead that narrows while people read.

A write request (a message, a REST or UI write) waits in the event loop, holding no thread,
until the process has a turn for it; reads never wait for one. How many turns there are
depends on whether the process is serving a read at that moment:

- while at least one read is in flight, and for GRACE seconds after the last:
  HUB_WRITE_CONCURRENCY (on PostgreSQL 1 unless set), so that a burst of messages cannot
  take the CPU (the GIL, the cores) from the people reading: under 8 writers and 8 readers,
  reads lost 62-70 % of their rate with no limit and 30-43 % with one write at a time per
  process (bench/mixed.py, 2 API processes, 2 cores);
- otherwise: HUB_WRITE_BURST (on PostgreSQL 4 unless set; HUB_WRITE_CONCURRENCY when only
  that is set). With nobody reading, one write at a time left the CPU idle while each
  message waited for its commit: bench/ingest.py on PostgreSQL (fsync on, 2 API processes)
  took 65-100 msg/s with one turn and 91-115 with four, in three interleaved pairs
  (2026-12-04); against the parent tree, six pairs gave means of 106 and 112 msg/s, within
  the noise: there ingest is close to using both cores anyway.

Narrowing does not stop writes already working; the next write waits until fewer than the
narrow number are. SQLite has no limit unless one is set: its writers queue for the one
write lock anyway and share commits (one at a time cost ingest 30 % there).

Counted as reads: requests served by `audited_transaction(..., reads_only=True)` (FHIR read,
vread, history, search, the audit and consent views, the coordinators' pages). The counts
change only on the event loop's thread, as anyio's limiter requires.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from anyio import CapacityLimiter

from hub.config import Settings

BURST_ON_POSTGRESQL = 4
"""Write turns a PostgreSQL hub process gives while it serves no read, unless set."""
GRACE = 0.5
"""Seconds the turns stay narrow after the last read in flight. Readers that keep coming
(8 clients, each sending its next read when it has the answer) leave moments with no read in
flight; widening at once let writes in then, which narrowing does not stop (bench/mixed.py on
PostgreSQL, 2 pairs: reads lost 43-47 % against 38 % with one turn throughout; with the
grace 32-36 % against 20-33 %, writes beside the reads 34-39/s against 36-45)."""


class WriteTurns:
    """The turns of one process: `with_reads` while a read is in flight and for `grace`
    seconds after the last one, `burst` otherwise."""

    def __init__(self, with_reads: int, burst: int, grace: float = GRACE) -> None:
        if with_reads < 1:
            raise ValueError("a bulkhead needs at least one turn")
        self.with_reads = with_reads
        self.burst = max(burst, with_reads)
        self.grace = grace
        self.limiter = CapacityLimiter(self.burst)
        self.reads = 0  # reads in flight (changed on the event loop's thread only)
        self._widening: asyncio.TimerHandle | None = None

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Count one read in flight for its duration: writes get `with_reads` turns meanwhile
        and for `grace` seconds after. Enter and leave on the event loop's thread."""
        self.reads += 1
        if self._widening is not None:
            self._widening.cancel()
            self._widening = None
        self.limiter.total_tokens = self.with_reads
        try:
            yield
        finally:
            self.reads -= 1
            if self.reads == 0:
                self._widening = asyncio.get_running_loop().call_later(self.grace, self._widen)

    def _widen(self) -> None:
        self._widening = None
        if self.reads == 0:
            self.limiter.total_tokens = self.burst  # wakes writes waiting meanwhile


def write_turns(settings: Settings, dialect: str) -> WriteTurns | None:
    """The turns of write requests in one process (None: no limit), for the app's state."""
    with_reads, burst = settings.write_concurrency, settings.write_burst
    if with_reads is None:
        with_reads = 1 if dialect == "postgresql" else 0
        if burst is None and dialect == "postgresql":
            burst = BURST_ON_POSTGRESQL
    if not with_reads:
        return None
    return WriteTurns(with_reads, with_reads if burst is None else burst)

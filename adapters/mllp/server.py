"""The MLLP listener: asyncio sockets, one task per connection, messages answered in order.

A connection carries any number of messages; each is answered with its ACK before the next
is taken (original mode: the sender waits for the ACK). The work of a message (database,
signing) runs on a thread pool, so one slow message holds up its own connection only.
Framing problems (adapters.mllp.framing) are answered when the message can still be told:
an oversized message gets an AE naming it (its MSH is kept), a frame without its start block
an AE when it begins with MSH; other stray bytes are logged and skipped.

A message whose ACK was not sent (the hub stopped or was killed in between) is simply sent
again by the PAS; it is idempotent on MSH-10 and the sending facility, so it has one effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from adapters.mllp import ack, adt
from adapters.mllp.framing import Deframer, Frame, Junk, TooLarge, frame
from adapters.mllp.intake import Intake

log = logging.getLogger("adapters.mllp")
READ_SIZE = 65536


class MllpServer:
    """HL7 v2 over MLLP into the hub (an adapters.channels.InboundChannel)."""

    name = "mllp"

    def __init__(self, intake: Intake, *, host: str, port: int, max_bytes: int,
                 workers: int = 8, reuse_port: bool = False) -> None:
        self.intake = intake
        self.host = host
        self.port = port
        self.max_bytes = max_bytes
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hub-mllp")
        self._server: asyncio.Server | None = None
        self.reuse_port = reuse_port  # several worker processes of one `hub serve` share it
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on host:port (port 0: any free port, then `self.port`). Raises OSError."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  limit=READ_SIZE,
                                                  reuse_port=self.reuse_port or None)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening, close connections, let messages under way finish."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self._pool.shutdown(wait=True))

    async def serve_forever(self) -> None:
        """Start and serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else None
        deframer = Deframer(max_bytes=self.max_bytes)
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    if not deframer.idle:
                        log.info("MLLP peer %s closed in the middle of a message", host)
                    break
                for piece in deframer.feed(data):
                    answer = await self._answer(loop, piece, host)
                    if answer is not None:
                        writer.write(frame(answer))
                        await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer(self, loop: asyncio.AbstractEventLoop, piece: Frame | Junk | TooLarge,
                      host: str | None) -> bytes | None:
        if isinstance(piece, Frame):
            return await loop.run_in_executor(self._pool, self.intake.handle, piece.payload,
                                              host)
        try:
            header = adt.read_header(piece.head)
        except adt.AdtError:
            log.warning("MLLP peer %s: %d bytes outside any message skipped", host, piece.size)
            return None
        if isinstance(piece, TooLarge):
            return ack.build(header, ack.ERROR, location="MSH", error_code=adt.SEGMENT_ERROR,
                             text=f"The message is {piece.size} bytes; the limit is "
                                  f"{self.max_bytes} (HUB_MLLP_MAX_BYTES).")
        return ack.build(header, ack.ERROR, location="MSH", error_code=adt.SEGMENT_ERROR,
                         text="The message was not framed as MLLP (start block 0x0B missing, "
                              "or cut off by the next message); send it again.")

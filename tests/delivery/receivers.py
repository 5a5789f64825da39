"""Real receiver servers on loopback for the delivery tests.

A `Receiver` is an HTTP server in a thread on 127.0.0.1 that takes POSTed message Bundles
and answers as told: `reply` (a function of the MessageHeader.id giving status, headers and
a delay before answering) or a queue of scripted replies (`script`). It records every
request as it arrives (`requests`) and every message it takes in, i.e. answers 2xx
(`accepted`, recorded before the delay: a slow receiver has the message even if the caller
gives up waiting). `stop()`
closes the listening socket, so attempts meet "connection refused"; `start()` opens it again
on the same port.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """What the receiver answers: status, headers, and seconds to wait first."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


OK = Reply(200)


@dataclass(frozen=True)
class Got:
    """One request as it arrived."""

    header_id: str
    bundle: dict[str, Any]
    at: float  # time.monotonic()
    content_type: str
    authorization: str | None = None  # the Authorization header, if any


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # a real server's listen backlog, not socketserver's 5


class Receiver:
    """A receiving organisation's FHIR messaging endpoint."""

    def __init__(self, name: str = "receiver", *, keep_alive: bool = False) -> None:
        self.name = name
        self.keep_alive = keep_alive  # HTTP/1.1 connections kept open, as most servers do
        self.port = free_port()
        self.reply: Callable[[str], Reply] = lambda _h: OK
        self.script: deque[Reply] = deque()
        self.requests: list[Got] = []
        self.accepted: list[Got] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The Endpoint address."""
        return f"http://127.0.0.1:{self.port}/fhir/$process-message"

    def start(self) -> Receiver:
        """Listen (again) on the port."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if receiver.keep_alive else "HTTP/1.0"

            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                bundle = json.loads(raw)
                header_id = bundle["entry"][0]["resource"]["id"]
                got = Got(header_id, bundle, time.monotonic(),
                          self.headers.get("content-type", ""),
                          self.headers.get("authorization"))
                with receiver._lock:
                    receiver.requests.append(got)
                    reply = receiver.script.popleft() if receiver.script else None
                reply = reply or receiver.reply(header_id)
                if 200 <= reply.status < 300:  # taken in (before any delay, as a slow
                    with receiver._lock:       # receiver stores it and then answers)
                        receiver.accepted.append(got)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    body = b'{"resourceType": "OperationOutcome", "issue": []}'
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                except OSError:  # the caller gave up (timeout) or died
                    return

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"receiver-{self.name}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket: attempts now meet connection refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def accepted_ids(self) -> list[str]:
        """MessageHeader.ids answered 2xx, in the order they arrived."""
        with self._lock:
            return [g.header_id for g in self.accepted]

    def requested_ids(self) -> list[str]:
        """MessageHeader.ids of every request, in the order they arrived."""
        with self._lock:
            return [g.header_id for g in self.requests]

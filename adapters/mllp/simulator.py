"""A patient administration system (PAS) as the hub meets it: builds ADT messages of a stay
and sends them over MLLP the way a PAS does (one connection, wait for each ACK; no ACK in
time or a closed connection: connect again and send the same message again).

Used by the tests, `hub demo` and bench/mllp.py. Messages are built as text (this is the
outside system's side; the hub parses with the `hl7` library).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from adapters.mllp.framing import Deframer, Frame, frame

CHARSET_NAMES = {"iso-8859-1": "8859/1", "utf-8": "UNICODE UTF-8"}


@dataclass(frozen=True)
class Stay:
    """One stay of one person at the centre, as the PAS knows it."""

    facility: str  # MSH-4: the centre's HER-id or organisasjonsnummer
    fnr: str  # PID-3, a fødselsnummer
    visit: str  # PV1-19
    kommunenummer: str  # PID-11.9
    admitted: datetime
    discharged: datetime | None = None
    family: str = "Nordmann"
    given: str = "Kari"
    birth: str = "19691113"
    sex: str = "F"
    street: str = "Storgata 1"
    city: str = "Bryne"
    postal_code: str = "4340"
    unit: str = "POST1"


def _ts(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def adt(stay: Stay, trigger: str, control_id: str, *, charset: str = "utf-8",
        sent: datetime | None = None, extra_segments: list[str] | None = None) -> bytes:
    """An ADT^<trigger> message about `stay`, encoded in `charset` (named in MSH-18)."""
    sent = sent or datetime.now(UTC)
    structure = {"A01": "ADT_A01", "A03": "ADT_A03", "A08": "ADT_A01", "A11": "ADT_A09",
                 "A13": "ADT_A01"}.get(trigger, "ADT_A01")
    msh = (f"MSH|^~\\&|PAS|{stay.facility}|CAREHUB|CAREHUB|{_ts(sent)}||ADT^{trigger}^"
           f"{structure}|{control_id}|P|2.5|||AL|NE|NOR|{CHARSET_NAMES[charset]}")
    pid = (f"PID|1||{stay.fnr}^^^NOR^FNR||{stay.family}^{stay.given}||{stay.birth}|{stay.sex}"
           f"|||{stay.street}^^{stay.city}^^{stay.postal_code}^NOR^H^^{stay.kommunenummer}")
    pv1 = ["PV1", "1", "I", stay.unit] + [""] * 15
    pv1.append(f"{stay.visit}^^^PAS^VN")  # PV1-19
    pv1 += [""] * 24
    pv1.append(_ts(stay.admitted))  # PV1-44
    if trigger == "A03" and stay.discharged is not None:
        pv1.append(_ts(stay.discharged))  # PV1-45
    segments = [msh, f"EVN|{trigger}|{_ts(sent)}", pid, "|".join(pv1),
                *(extra_segments or [])]
    return ("\r".join(segments) + "\r").encode(charset)


def ack_code(answer: bytes) -> str:
    """MSA-1 of an ACK ('' when there is none)."""
    for segment in answer.decode("iso-8859-1").split("\r"):
        if segment.startswith("MSA|"):
            return segment.split("|")[1]
    return ""


@dataclass
class Pas:
    """An MLLP sender to host:port that waits `timeout` s for each ACK and sends again (on a
    new connection) until it gets one, at most `attempts` times."""

    host: str
    port: int
    timeout: float = 10.0
    attempts: int = 20
    retry_pause: float = 0.2
    sent: int = 0  # frames written, repeats included
    _sock: socket.socket | None = field(default=None, repr=False)
    _deframer: Deframer = field(default_factory=lambda: Deframer(max_bytes=1 << 20),
                                repr=False)

    def close(self) -> None:
        """Close the connection (the next send opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._deframer = Deframer(max_bytes=1 << 20)
        return self._sock

    def send(self, message: bytes) -> bytes:
        """Send one message; its ACK. Raises TimeoutError after `attempts` tries."""
        last: Exception | None = None
        for _ in range(self.attempts):
            try:
                sock = self._connect()
                sock.sendall(frame(message))
                self.sent += 1
                return self._read_ack(sock)
            except OSError as exc:  # refused, reset, closed, timed out: connect and resend
                last = exc
                self.close()
                time.sleep(self.retry_pause)
        raise TimeoutError(f"no ACK after {self.attempts} attempts: {last}")

    def _read_ack(self, sock: socket.socket) -> bytes:
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("the hub closed the connection before its ACK")
            for piece in self._deframer.feed(data):
                if isinstance(piece, Frame):
                    return piece.payload

    def __enter__(self) -> Pas:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol): <VT> message <FS><CR>.

`Deframer` takes bytes as they arrive, in pieces of any size, and gives back whole frames in
order. TCP splits and joins writes as it likes, so a frame may arrive over many reads and
one read may hold several frames. What is not framed is judged, not guessed at:

- bytes before a start block (<VT>) are skipped (stray line ends between frames are common);
  a frame whose start block never came is reported once its end block arrives (`Junk`), so
  the caller can answer it rather than wait for ever;
- a second <VT> before the end block means the first frame was cut off: the partial frame is
  dropped as `Junk` and the new frame read;
- a frame longer than `max_bytes` is not kept whole: its first `head` bytes are kept (enough
  to read its MSH and answer it), the rest are counted and thrown away until its end block
  (`TooLarge`). Memory per connection stays bounded by `max_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass

START = b"\x0b"
END = b"\x1c\x0d"
_FS = 0x1C


@dataclass(frozen=True)
class Frame:
    """One whole message, without its framing bytes."""

    payload: bytes


@dataclass(frozen=True)
class Junk:
    """Bytes between frames that end like a frame but never started as one."""

    size: int
    head: bytes


@dataclass(frozen=True)
class TooLarge:
    """A frame over the size limit: its start (`head`) and its whole size."""

    size: int
    head: bytes


Piece = Frame | Junk | TooLarge


def frame(payload: bytes) -> bytes:
    """`payload` wrapped for the wire."""
    return START + payload + END


class Deframer:
    """Turns a byte stream into frames; feed it every read."""

    def __init__(self, *, max_bytes: int, head: int = 4096) -> None:
        self.max_bytes = max_bytes
        self.head = head
        self._buf = bytearray()
        self._in_frame = False
        self._scanned = 0  # bytes of the frame searched for an end block already
        self._over = 0  # bytes of an oversized frame thrown away so far
        self._head = b""  # the start of an oversized frame
        self._junk = 0  # bytes outside any frame since the last frame

    @property
    def idle(self) -> bool:
        """True between frames (nothing of a frame read yet): a close here loses nothing."""
        return not self._in_frame and not self._buf

    def feed(self, data: bytes) -> list[Piece]:
        """The frames (and framing problems) completed by `data`, in order."""
        out: list[Piece] = []
        self._buf += data
        while self._buf:
            if self._in_frame:
                if not self._inside(out):
                    break
                continue
            start = self._buf.find(START)
            end = self._buf.find(END)
            if end != -1 and (start == -1 or end < start):
                # An end block with no start before it: report what came (once).
                out.append(Junk(self._junk + end + len(END),
                                bytes(self._buf[:min(end, self.head)])))
                del self._buf[:end + len(END)]
                self._junk = 0
                continue
            if start == -1:
                keep = 1 if self._buf.endswith(END[:1]) else 0  # half an end block
                self._junk += len(self._buf) - keep
                del self._buf[:len(self._buf) - keep]
                break
            self._junk = 0
            del self._buf[:start + 1]
            self._in_frame, self._scanned, self._over, self._head = True, 0, 0, b""
        return out

    def _end_frame(self, cut: int) -> None:
        del self._buf[:cut]
        self._in_frame, self._scanned, self._over, self._head = False, 0, 0, b""

    def _inside(self, out: list[Piece]) -> bool:
        """Read on inside a frame; False when more bytes are needed."""
        at = max(self._scanned - 1, 0)  # an end block may straddle two reads
        end = self._buf.find(END, at)
        restart = self._buf.find(START, at)
        if restart != -1 and (end == -1 or restart < end):
            # A new start block inside a frame: the frame before it was cut off.
            out.append(Junk(self._over + restart,
                            self._head or bytes(self._buf[:min(restart, self.head)])))
            self._end_frame(restart)
            return True
        if end == -1:
            self._scanned = len(self._buf)
            if self._over + len(self._buf) > self.max_bytes:
                if not self._over:
                    self._head = bytes(self._buf[:self.head])
                drop = len(self._buf) - 1  # the last byte may be half an end block
                self._over += drop
                del self._buf[:drop]
                self._scanned = len(self._buf)
            return False
        size = self._over + end
        if size > self.max_bytes:
            out.append(TooLarge(size, self._head or bytes(self._buf[:min(end, self.head)])))
        else:
            out.append(Frame(bytes(self._buf[:end])))
        self._end_frame(end + len(END))
        return True

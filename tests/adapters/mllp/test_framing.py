"""MLLP framing on its own: frames across any split of the byte stream, and bad framing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapters.mllp.framing import Deframer, Frame, Junk, TooLarge, frame

MESSAGES = [b"MSH|^~\\&|A|1\rPID|1", b"MSH|^~\\&|B|2", "MSH|æøå".encode()]


def feed_in_pieces(data: bytes, cuts: list[int], *, max_bytes: int = 1000) -> list[object]:
    deframer = Deframer(max_bytes=max_bytes)
    out: list[object] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in zip(points, points[1:], strict=False):
        out += deframer.feed(data[a:b])
    return out


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_frames_come_out_whole_whatever_the_reads(cuts: list[int]) -> None:
    stream = b"".join(frame(m) for m in MESSAGES)
    assert feed_in_pieces(stream, cuts) == [Frame(m) for m in MESSAGES]


def test_one_byte_at_a_time_and_stray_line_ends_between_frames() -> None:
    stream = frame(MESSAGES[0]) + b"\r\n" + frame(MESSAGES[1])
    deframer = Deframer(max_bytes=100)
    out = [p for b in stream for p in deframer.feed(bytes([b]))]
    assert out == [Frame(MESSAGES[0]), Frame(MESSAGES[1])]
    assert deframer.idle


def test_a_frame_without_its_start_block_is_reported_and_the_next_one_read() -> None:
    out = Deframer(max_bytes=100).feed(b"MSH|no start\x1c\r" + frame(MESSAGES[1]))
    assert out == [Junk(14, b"MSH|no start"), Frame(MESSAGES[1])]


def test_a_frame_cut_off_by_the_next_start_block_is_dropped() -> None:
    out = Deframer(max_bytes=100).feed(b"\x0bMSH|cut off" + frame(MESSAGES[0]))
    assert out == [Junk(11, b"MSH|cut off"), Frame(MESSAGES[0])]


def test_an_oversized_frame_keeps_its_head_only_and_the_stream_goes_on() -> None:
    big = b"MSH|" + b"x" * 50_000
    deframer = Deframer(max_bytes=1000, head=64)
    out: list[object] = []
    wire = frame(big) + frame(MESSAGES[0])
    for i in range(0, len(wire), 977):
        out += deframer.feed(wire[i:i + 977])
        assert len(deframer._buf) <= 1000 + 977  # memory stays bounded by the limit
    assert out == [TooLarge(len(big), big[:64]), Frame(MESSAGES[0])]

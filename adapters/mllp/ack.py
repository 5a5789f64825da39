"""The HL7 v2 ACK the hub answers every ADT message with (original acknowledgement mode).

MSA-1: AA accepted, AE not accepted as sent (ERR names the field: ERR-2 the location, ERR-3
the HL7 table 0357 code, ERR-8 a sentence), AR not accepted now (send again later). The ACK
is in the character set the message declared (MSH-18, echoed).

An accepted message's ACK is made only from the hub's stored response to it (its id and
time give MSH-10 and MSH-7), so a message sent again is answered with the very same ACK.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from adapters.mllp.adt import Header

ACCEPTED, ERROR, REJECTED = "AA", "AE", "AR"


def _escape(text: str, header: Header) -> str:
    """`text` with the message's delimiters escaped (HL7 escape sequences), on one line."""
    fs, comp, rep, esc, sub = (header.field_sep, *(header.encoding_chars + "^~\\&")[:4])
    out = text.replace(esc, f"{esc}E{esc}")
    for char, code in ((fs, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return " ".join(out.split())


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def build(header: Header, code: str, *, text: str = "", location: str | None = None,
          error_code: str | None = None, control_id: str | None = None,
          at: datetime | None = None) -> bytes:
    """The ACK to `header`'s message, encoded as that message was."""
    fs = header.field_sep
    when = _timestamp(at or datetime.now(UTC))
    msh = fs.join([
        "MSH", header.encoding_chars, "CAREHUB", "CAREHUB",
        header.sending_application, header.sending_facility, when, "",
        _ack_type(header), control_id or uuid.uuid4().hex[:20], header.processing_id,
        header.version, "", "", "", "", "", header.charset])
    segments = [msh.rstrip(fs) if not header.charset else msh,
                fs.join(["MSA", code, _escape(header.control_id, header),
                         _escape(text[:80], header)])]
    if code != ACCEPTED:
        comp = (header.encoding_chars[:1] or "^")
        loc = _location(location, comp) if location else ""
        segments.append(fs.join([
            "ERR", "", loc,
            comp.join([error_code or "207", _ERROR_NAMES.get(error_code or "207", ""),
                       "HL70357"]),
            "E", "", "", "", _escape(text, header)]))
    return ("\r".join(segments) + "\r").encode(header.codec or "utf-8", errors="replace")


def _ack_type(header: Header) -> str:
    return f"ACK^{header.trigger}^ACK" if header.trigger else "ACK"


def _location(location: str, comp: str) -> str:
    """ERR-2 (ERL): segment id ^ sequence ^ field position ^ repetition ^ component, from
    'PID-11.9', 'MSH-10', 'PV1' or 'segment 4'."""
    if location.startswith("segment "):
        return comp.join(["", location.split()[1]])
    seg, _, rest = location.partition("-")
    field, _, component = rest.partition(".")
    parts = [seg, "1"] + ([field] if field else []) + (["1", component] if component else [])
    return comp.join(parts)


_ERROR_NAMES = {
    "100": "Segment sequence error", "101": "Required field missing",
    "102": "Data type error", "103": "Table value not found",
    "200": "Unsupported message type", "201": "Unsupported event code",
    "204": "Unknown key identifier", "205": "Duplicate key identifier",
    "207": "Application internal error",
}

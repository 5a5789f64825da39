"""HL7 v2 ADT as the hub reads it: the bytes of one frame -> `Adt`, or a `AdtError` naming
the field at fault (which the ACK's ERR segment names in turn).

Parsing is the `hl7` library's; this module only says which fields matter and checks them:
- MSH-18 picks the character set (`8859/1` ISO 8859-1, `UNICODE UTF-8` UTF-8; empty: UTF-8,
  as ASCII is a subset of it); MSH itself is ASCII in both, so it is read before decoding.
- MSH-9 ADT^A01 / A03 / A08 / A11 / A13; MSH-4 the sending facility; MSH-10 the control id.
- PID-3 the person: a repetition typed FNR or DNR (or NNNOR), or an 11-digit value, checked
  with the fødselsnummer / D-nummer rules of hub.fhir.identifiers. PID-5 name, PID-7 birth
  date, PID-8 sex, PID-11 address with the kommunenummer in component 9 (county/parish code).
- PV1-19 the visit number (the stay), PV1-44 admitted, PV1-45 discharged; times without an
  offset are local time in HUB_TIMEZONE.
Every segment must have an HL7 segment id (three capitals or digits); anything else is a
garbage segment and named by its position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import hl7

from hub.fhir.identifiers import (
    DNR_SYSTEM,
    FNR_SYSTEM,
    d_nummer_problem,
    fodselsnummer_problem,
)

TRIGGERS = ("A01", "A03", "A08", "A11", "A13")
CHARSETS = {"": "utf-8", "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "8859/1": "iso-8859-1",
            "ASCII": "ascii"}
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown", "A": "other",
           "N": "unknown"}

# HL7 table 0357 (message error condition codes) used in ERR-3
SEGMENT_ERROR = "100"
REQUIRED_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE = "103"
UNSUPPORTED_EVENT = "201"
UNSUPPORTED_TYPE = "200"
UNKNOWN_KEY = "204"
DUPLICATE_KEY = "205"
INTERNAL = "207"


class AdtError(Exception):
    """Why a message is not accepted: the field (e.g. `PID-3`, `segment 4`), an HL7 table
    0357 code and a sentence for people."""

    def __init__(self, location: str, code: str, text: str) -> None:
        super().__init__(text)
        self.location = location
        self.code = code
        self.text = text
        self.recorded = False  # already in the audit trail


@dataclass(frozen=True)
class Header:
    """What the ACK needs from MSH, as sent (raw field text)."""

    field_sep: str = "|"
    encoding_chars: str = "^~\\&"
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    trigger: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = "2.5"
    charset: str = ""
    codec: str = "utf-8"

    @property
    def facility_ids(self) -> list[str]:
        """The identifiers MSH-4 carries (HD.1 namespace id, HD.2 universal id)."""
        parts = self.sending_facility.split(self.encoding_chars[:1] or "^")
        return [p.strip() for p in parts[:2] if p.strip()]


@dataclass(frozen=True)
class Person:
    """PID: who the message is about."""

    system: str
    value: str
    family: str | None
    given: list[str]
    birth_date: date | None
    gender: str | None
    lines: list[str]
    city: str | None
    postal_code: str | None
    kommunenummer: str | None


@dataclass(frozen=True)
class Adt:
    """One ADT message as the hub uses it."""

    header: Header
    trigger: str
    person: Person
    visit_number: str | None
    admitted_at: datetime | None
    discharged_at: datetime | None
    sent_at: datetime


def read_header(payload: bytes) -> Header:
    """MSH of a frame (no decoding needed: MSH is ASCII). Raises AdtError."""
    first = re.split(rb"\r\n|\r|\n", payload, maxsplit=1)[0]
    text = first.decode("iso-8859-1")
    if not text.startswith("MSH") or len(text) < 8:
        raise AdtError("MSH", SEGMENT_ERROR, "The message does not begin with an MSH segment.")
    problem = _encoding_problem(text[3], text[4:].split(text[3], 1)[0])
    if problem:
        raise AdtError(*problem)
    try:
        msh = hl7.parse(text).segment("MSH")
    except Exception as exc:  # the library raises plain errors on malformed MSH
        raise AdtError("MSH", SEGMENT_ERROR, f"MSH cannot be read: {exc}") from None

    def f(n: int) -> str:
        return str(msh(n)) if len(msh) > n else ""

    charset = f(18).split(text[4:5] or "~")[0].strip().upper()
    header = Header(field_sep=text[3], encoding_chars=f(2) or "^~\\&",
                    sending_application=f(3), sending_facility=f(4),
                    receiving_application=f(5), receiving_facility=f(6),
                    trigger=_component(f(9), 2, text[4:5] or "^"), control_id=f(10).strip(),
                    processing_id=f(11) or "P", version=f(12) or "2.5", charset=f(18),
                    codec=CHARSETS.get(charset, ""))
    if not header.codec:
        raise AdtError("MSH-18", TABLE_VALUE, f"Character set '{charset}' is not supported; "
                      "send 8859/1 or UNICODE UTF-8.")
    if not header.control_id:
        raise AdtError("MSH-10", REQUIRED_MISSING, "MSH-10 (message control id) is empty.")
    kind = _component(f(9), 1, text[4:5] or "^")
    if kind != "ADT":
        raise AdtError("MSH-9", UNSUPPORTED_TYPE, f"Message type {kind or '(empty)'} is not "
                      "taken here; send ADT.")
    if header.trigger not in TRIGGERS:
        raise AdtError("MSH-9", UNSUPPORTED_EVENT, f"Event {header.trigger or '(empty)'} is not "
                      f"taken here; send one of {', '.join(TRIGGERS)}.")
    return header


def _encoding_problem(field_sep: str, chars: str) -> tuple[str, str, str] | None:
    """Where, the ERR-3 code and what is wrong with MSH-1 and MSH-2 (component, repetition,
    escape and subcomponent separators, and v2.7's truncation character); None when they can
    be read (the parser's own refusal of them named nothing)."""
    shown = "".join(c if c.isprintable() else "?" for c in chars[:10])
    rule = ("MSH-2 (encoding characters) must be four distinct characters, none of them the "
            f"field separator '{field_sep if field_sep.isprintable() else '?'}' nor a letter "
            "or digit; usually ^~\\&")
    if field_sep.isalnum() or not field_sep.isprintable():
        return ("MSH-1", DATA_TYPE_ERROR, "MSH-1 (field separator) must be a printable "
                "character that is not a letter or digit, usually |.")
    if not 4 <= len(chars) <= 5:
        return "MSH-2", DATA_TYPE_ERROR, f"{rule}; it is '{shown}' ({len(chars)} characters)."
    if len(set(chars)) != len(chars) or field_sep in chars:
        return "MSH-2", DATA_TYPE_ERROR, f"{rule}; '{shown}' repeats a character."
    if any(c.isalnum() or not c.isprintable() for c in chars):
        return "MSH-2", DATA_TYPE_ERROR, f"{rule}; '{shown}' holds one that is not."
    return None


def _component(field: str, n: int, sep: str) -> str:
    parts = field.split(sep)
    return parts[n - 1].strip() if len(parts) >= n else ""


def parse(payload: bytes, header: Header, zone: ZoneInfo) -> Adt:
    """The whole message, decoded per MSH-18 and checked. Raises AdtError."""
    try:
        text = payload.decode(header.codec)
    except UnicodeDecodeError as exc:
        raise AdtError("MSH-18", DATA_TYPE_ERROR,
                      f"The message is not valid {header.codec} (byte {exc.start}); say its "
                      "character set in MSH-18.") from None
    text = re.sub(r"\r\n|\n", "\r", text).strip("\r")
    message = hl7.parse(text)
    for n, segment in enumerate(message, start=1):
        seg_id = str(segment[0])
        if not _SEGMENT_ID.match(seg_id):
            shown = seg_id[:20] + ("..." if len(seg_id) > 20 else "")
            raise AdtError(f"segment {n}", SEGMENT_ERROR,
                          f"Segment {n} ('{shown}') is not an HL7 segment.")
        if seg_id == "MSH" and n > 1:
            # A frame holds one message (MLLP); the parser would read the second message's
            # segments as the first's, and its content would be lost behind an AA.
            raise AdtError(f"segment {n}", SEGMENT_ERROR,
                          f"Segment {n} is a second MSH: this frame holds more than one "
                          "message, and a frame holds one. Nothing in it was taken; send "
                          "each message in its own frame.")
    pid = _segment(message, "PID")
    pv1 = _segment(message, "PV1") if header.trigger != "A08" else _maybe(message, "PV1")
    person = _person(message, pid, zone)
    visit = _get(message, "PV1.F19.R1.C1") if pv1 is not None else None
    admitted = _time(message, "PV1.F44", zone) if pv1 is not None else None
    discharged = _time(message, "PV1.F45", zone) if pv1 is not None else None
    if header.trigger in ("A01", "A03", "A11", "A13"):
        if not visit:
            raise AdtError("PV1-19", REQUIRED_MISSING, "PV1-19 (visit number) is empty: the hub "
                          "knows the stay by it.")
        if admitted is None:
            raise AdtError("PV1-44", REQUIRED_MISSING, "PV1-44 (admit date/time) is empty.")
    if header.trigger == "A03":
        if discharged is None:
            raise AdtError("PV1-45", REQUIRED_MISSING,
                          "PV1-45 (discharge date/time) is empty in a discharge (A03).")
        if admitted is not None and discharged < admitted:
            raise AdtError("PV1-45", DATA_TYPE_ERROR,
                          "PV1-45 (discharge) is before PV1-44 (admission).")
    sent = _time(message, "MSH.F7", zone)
    if sent is None:
        raise AdtError("MSH-7", REQUIRED_MISSING, "MSH-7 (date/time of message) is empty.")
    return Adt(header, header.trigger, person, visit, admitted, discharged, sent)


def _maybe(message: hl7.Message, name: str) -> hl7.Segment | None:
    try:
        return message.segment(name)
    except KeyError:
        return None


def _segment(message: hl7.Message, name: str) -> hl7.Segment:
    found = _maybe(message, name)
    if found is None:
        raise AdtError(name, SEGMENT_ERROR, f"The message has no {name} segment.")
    return found


def _get(message: hl7.Message, path: str) -> str | None:
    try:
        value = str(message[path]).strip()
    except (KeyError, IndexError):
        return None
    return message.unescape(value) if value else None


def _time(message: hl7.Message, path: str, zone: ZoneInfo) -> datetime | None:
    raw = _get(message, path)
    if raw is None:
        return None
    try:
        when: datetime = hl7.parse_datetime(raw)
    except ValueError:
        field = path.replace(".F", "-").split(".")[0]
        raise AdtError(field, DATA_TYPE_ERROR,
                      f"{field} '{raw[:30]}' is not an HL7 date/time (YYYYMMDDHHMM[SS]).") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=zone)


def _person(message: hl7.Message, pid: hl7.Segment, zone: ZoneInfo) -> Person:
    system, value = _person_id(message, pid)
    birth = _time(message, "PID.F7", zone)
    sex = _get(message, "PID.F8")
    if sex is not None and sex.upper() not in _GENDER:
        raise AdtError("PID-8", TABLE_VALUE, f"PID-8 (sex) '{sex[:5]}' is not one of "
                      f"{', '.join(_GENDER)}.")
    given = [g for g in (_get(message, "PID.F5.R1.C2"), _get(message, "PID.F5.R1.C3")) if g]
    street = [s for s in (_get(message, "PID.F11.R1.C1"), _get(message, "PID.F11.R1.C2")) if s]
    kommune = _get(message, "PID.F11.R1.C9")
    if kommune is not None and not re.fullmatch(r"\d{4}", kommune):
        raise AdtError("PID-11.9", DATA_TYPE_ERROR, f"PID-11.9 (county/parish code) "
                      f"'{kommune[:10]}' is not a four-digit kommunenummer.")
    return Person(system, value, _get(message, "PID.F5.R1.C1"), given,
                  birth.date() if birth else None,
                  _GENDER[sex.upper()] if sex else None, street,
                  _get(message, "PID.F11.R1.C3"), _get(message, "PID.F11.R1.C5"), kommune)


_FNR_TYPES = {"FNR", "NNNOR", "NNO", "PNR"}
_DNR_TYPES = {"DNR"}


def _person_id(message: hl7.Message, pid: hl7.Segment) -> tuple[str, str]:
    """The fødselsnummer or D-nummer of PID-3 (check digits checked)."""
    reps = pid(3) if len(pid) > 3 else None
    count = len(reps) if isinstance(reps, hl7.Repetition) else 1
    candidates: list[tuple[str, str]] = []
    for n in range(1, min(count, 20) + 1):
        value = _get(message, f"PID.F3.R{n}.C1") or ""
        kind = (_get(message, f"PID.F3.R{n}.C5") or "").upper()
        if kind in _DNR_TYPES:
            candidates.append((DNR_SYSTEM, value))
        elif kind in _FNR_TYPES or (not kind and re.fullmatch(r"\d{11}", value)):
            is_d = not kind and value[:1] in "4567"
            candidates.append((DNR_SYSTEM if is_d else FNR_SYSTEM, value))
    if not candidates:
        raise AdtError("PID-3", REQUIRED_MISSING, "PID-3 carries no fødselsnummer or D-nummer "
                      "(identifier type FNR or DNR).")
    system, value = candidates[0]
    check = d_nummer_problem if system == DNR_SYSTEM else fodselsnummer_problem
    why = check(value)
    if why is not None:
        raise AdtError("PID-3", DATA_TYPE_ERROR, f"PID-3: {why}.")
    return system, value

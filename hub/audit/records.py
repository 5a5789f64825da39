"""Appending AuditEvents: `append_all` is a plain INSERT in the caller's transaction, and
takes no lock that other transactions share (no chain head, no counter row): writers in every
process append side by side. Tamper evidence comes later, when the sealer (seal.py) puts
committed records into the Merkle tree and signs a checkpoint.

Each record carries its RFC 9162 leaf hash, SHA-256(0x00 || body), and the writer's Ed25519
signature of it, so the sealer can refuse rows that did not come from a hub process.

The search columns (patient_ref, agent, action, subtype, recorded_at) repeat values that are
inside the signed body (`action`, `recorded` and the audit-index extension), so an edited
column is caught like an edited body (`columns_disagree`).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

import orjson
from sqlalchemy import insert
from sqlalchemy.orm import Session

from hub.audit.models import AuditRecordRow
from hub.audit.signing import Signer
from hub.db.direct import Direct
from hub.db.types import utcnow
from hub.fhir.strings import without_control, without_control_in
from hub.fhir.urls import CREDENTIALS, without_credentials_in

ACTIONS = frozenset({"C", "R", "U", "D", "E"})
INDEX_EXTENSION = "http://carehub.example/fhir/StructureDefinition/audit-index"
# Each occurs exactly once in a record's body (append makes sure), which lets verify compare
# the search columns with the body by finding their exact bytes instead of parsing the JSON.
_ONCE = (f'"{INDEX_EXTENSION}"'.encode(), b'"recorded":', b'"action":')


def canonical_json(event: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, UTF-8. Written by orjson, 20-30
    times faster than the json module (it runs inside SQLite's write lock, once a record),
    and the same bytes for what AuditEvents hold, strings, integers, booleans and nulls
    (tests/audit/test_trail.py compares them); the hub's events hold no numbers with a
    fraction. Verification hashes the stored bytes and never writes them again, so records
    written by the json module stay as they are."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
                        | orjson.OPT_PASSTHROUGH_DATACLASS)


def leaf_hex(body: bytes) -> str:
    """The record's RFC 9162 leaf hash, SHA-256(0x00 || body), as 64 hex digits."""
    return hashlib.sha256(b"\x00" + body).hexdigest()


def link_hash(prev_hash: str, body: bytes) -> str:
    """The legacy chain's hash_n = sha256(prev hash bytes || body), as 64 hex digits."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


def _instant(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _index_extension(patient_ref: str | None, agent: str, subtype: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if patient_ref is not None:
        parts.append({"url": "patient", "valueString": patient_ref})
    parts.append({"url": "agent", "valueString": agent})
    parts.append({"url": "subtype", "valueCode": subtype})
    return {"url": INDEX_EXTENSION, "extension": parts}


_TABLE = AuditRecordRow.metadata.tables["audit_records"]
# Built once: statement construction costs more than the statements themselves. Run on the
# driver's cursor (hub/db/direct.py): each row's seq comes back in the order given.
_INSERT_RECORDS = Direct(insert(_TABLE).returning(_TABLE.c.seq))
_STORE_RECORDS = Direct(insert(_TABLE))


@dataclass(frozen=True)
class Entry:
    """One AuditEvent (as JSON) to append, with its search columns."""

    event: Mapping[str, Any]
    patient_ref: str | None
    agent: str
    action: str
    subtype: str


def append(
    session: Session,
    signer: Signer,
    event: Mapping[str, Any],
    *,
    patient_ref: str | None,
    agent: str,
    action: str,
    subtype: str,
) -> int:
    """Append `event` (an AuditEvent as JSON) in the caller's transaction; its record id.
    See `append_all`."""
    return append_all(session, signer, [Entry(event, patient_ref, agent, action, subtype)])[0]


def append_all(session: Session, signer: Signer, entries: Sequence[Entry]) -> list[int]:
    """Insert `entries` as audit records in the caller's transaction, in one statement; their
    record ids (`seq`, increasing in the order given).

    The rows are `signed_rows(signer, entries)`; the caller commits. Raises ValueError for an
    unknown action or an event whose own `action` differs, before anything is written.

    No lock is shared with other appenders: ids come from a sequence (PostgreSQL) or the
    row id (SQLite, whose write transaction is exclusive anyway). The records are not yet
    tamper-evident: the sealer puts them into the tree once they are committed.
    """
    rows = signed_rows(signer, entries)
    if not rows:
        return []
    return insert_rows(session, rows)


def insert_rows(session: Session, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert rows made by `signed_rows` (or moved from the read spool, hub/audit/spool.py)
    as they are, in the caller's transaction (one pipelined executemany on PostgreSQL, one
    driver call per row on SQLite); their seqs, in order."""
    return [seq for (seq,) in _INSERT_RECORDS.rows_many(session.connection(), rows)]


def store_rows(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """`insert_rows` for a caller that needs no seqs back (the read spool's mover, the reads'
    records on PostgreSQL): one executemany, which on SQLite runs every row in one driver
    call instead of one each: a move of 1,000 spooled records, write lock and commit
    included, took 43-67 ms instead of 140-218 ms."""
    _STORE_RECORDS.run_many(session.connection(), rows)


# orjson writes a control character as \u00XX, or \b and \f (tab, line feed and carriage
# return, which FHIR strings may hold, as \t, \n and \r). An escaped backslash before a "b"
# also matches: then the records are only checked again, and come out the same.
_CONTROL_ESCAPE = re.compile(rb"\\(?:u00[01]|[bf])")


def _record(event: Mapping[str, Any], event_id: str, recorded: str, action: str,
            patient_ref: str | None, agent: str, subtype: str) -> dict[str, Any]:
    extensions = [e for e in event.get("extension", []) if e.get("url") != INDEX_EXTENSION]
    return {**event, "id": event_id, "recorded": recorded, "action": action,
            "extension": [*extensions, _index_extension(patient_ref, agent, subtype)]}


def signed_rows(signer: Signer, entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """The audit_records rows of `entries` (without seq), ready to insert anywhere.

    Sets each event's `id` (a new uuid4), `recorded` (now), `action` and the audit-index
    extension, then hashes and signs it. Raises ValueError for an unknown action or an event
    whose own `action` differs.
    """
    for entry in entries:
        if entry.action not in ACTIONS:
            raise ValueError(f"audit action must be one of C R U D E, not {entry.action!r}")
        if entry.event.get("action", entry.action) != entry.action:
            raise ValueError(
                f"event action {entry.event['action']!r} differs from {entry.action!r}")
    recorded_at = utcnow()
    rows = []
    for entry in entries:
        event, patient_ref, agent, subtype = (entry.event, entry.patient_ref, entry.agent,
                                              entry.subtype)
        event_id, recorded = str(uuid.uuid4()), _instant(recorded_at)
        record = _record(event, event_id, recorded, entry.action, patient_ref, agent, subtype)
        try:
            body = canonical_json(record)
            unwritable = _CONTROL_ESCAPE.search(body) is not None
        except orjson.JSONEncodeError:  # a lone surrogate, which UTF-8 cannot hold
            unwritable = True
        if unwritable:
            # What a caller sent (a URL, a client_id) may hold a character no FHIR string may,
            # U+0000 among them, which PostgreSQL's text refuses, or a lone surrogate, which
            # no UTF-8 can: such a record was lost. It is recorded with U+FFFD in its place,
            # in the body and its columns alike (verify compares them). A rare path: the check
            # is one scan of the bytes.
            event = without_control_in(event)
            patient_ref = None if patient_ref is None else without_control(patient_ref)
            agent, subtype = without_control(agent), without_control(subtype)
            record = _record(event, event_id, recorded, entry.action, patient_ref, agent,
                             subtype)
            body = canonical_json(record)
        if CREDENTIALS.search(body):
            # An Endpoint's address may carry a password (`https://user:password@host`): the
            # trail is append-only and signed, so what it records names the URL without its
            # userinfo, whoever built the event (an admin command's arguments, a delivery's
            # reason, an error). A rare path: the check is one scan of the bytes.
            event = without_credentials_in(event)
            record = _record(event, event_id, recorded, entry.action, patient_ref, agent,
                             subtype)
            body = canonical_json(record)
        if any(body.count(marker) != 1 for marker in _ONCE):
            raise ValueError("an AuditEvent may hold `recorded`, `action` and the audit-index "
                             "extension only once, at its top level")
        digest = hashlib.sha256(b"\x00" + body).digest()
        rows.append({
            "event_id": event_id, "recorded_at": recorded_at, "patient_ref": patient_ref,
            "agent": agent, "action": entry.action, "subtype": subtype,
            "body": body, "leaf_hash": digest.hex(), "signature": signer.sign(digest),
            "key_id": signer.key_id,
        })
    return rows


def instant_text(value: datetime | str) -> str:
    """A `recorded_at` column value as the body's `recorded` writes it; raw SQLite text (what
    a driver-level read returns, "YYYY-MM-DD HH:MM:SS.ffffff") is rewritten, not parsed."""
    if isinstance(value, str):
        if len(value) == 26 and value[10] == " ":
            return f"{value[:10]}T{value[11:]}Z"
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_INDEX_TAIL = f'],"url":"{INDEX_EXTENSION}"}}'


def index_bytes(patient_ref: str | None, agent: str, subtype: str) -> bytes:
    """canonical_json of the audit-index extension of these columns, written out directly
    (JSON strings by the json module's own encoder): what verify looks for in each body."""
    parts = [f'{{"url":"patient","valueString":{encode_basestring(patient_ref)}}},'
             if patient_ref is not None else "",
             f'{{"url":"agent","valueString":{encode_basestring(agent)}}},',
             f'{{"url":"subtype","valueCode":{encode_basestring(subtype)}}}']
    return f'{{"extension":[{"".join(parts)}{_INDEX_TAIL}'.encode()


def columns_agree(body: bytes, recorded: str, action: str, patient_ref: str | None,
                  agent: str, subtype: str) -> bool:
    """Whether the search columns are the values in `body`, found as exact bytes: the
    canonical audit-index extension they make, `"recorded":"<recorded>"` and
    `"action":"<action>"` each occur in it, where each of those keys occurs once (for a
    body append wrote). `recorded` as `instant_text` gives it. Several times faster than
    parsing the body; `columns_disagree` says what differs."""
    return (index_bytes(patient_ref, agent, subtype) in body
            and f'"recorded":"{recorded}"'.encode() in body
            and f'"action":"{action}"'.encode() in body
            and body.count(_ONCE[0]) == 1 and body.count(_ONCE[1]) == 1
            and body.count(_ONCE[2]) == 1)


def event_id_of(body: bytes) -> str | None:
    """The AuditEvent.id in a record's body (the event_id column's value), or None for a
    body that is not a JSON object with a string id."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    found = event.get("id") if isinstance(event, dict) else None
    return found if isinstance(found, str) else None


def id_bytes(event_id: str) -> bytes:
    """What the event_id column is in a canonical body, found as exact bytes (verify's
    quick check; `columns_disagree` decides when it is not found, as for an id that JSON
    would escape, which no FHIR id is)."""
    return b'"id":"' + event_id.encode() + b'"'


def columns_disagree(seq: int, body: bytes, recorded_at: datetime, action: str,
                     patient_ref: str | None, agent: str, subtype: str,
                     event_id: str | None) -> str | None:
    """Why a record's search columns (and its event_id) disagree with its body; None if
    they agree."""
    try:
        event = json.loads(body)
        index = next(e for e in event.get("extension", []) if e.get("url") == INDEX_EXTENSION)
        signed = {part["url"]: next(v for k, v in part.items() if k.startswith("value"))
                  for part in index["extension"]}
        values = (event["recorded"], event["action"], signed.get("patient"), signed["agent"],
                  signed["subtype"], event.get("id"))
    except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
        return f"record {seq}'s body is not a hub AuditEvent"
    stored = (_instant(recorded_at), action, patient_ref, agent, subtype, event_id)
    if values == stored:
        return None
    names = ("recorded_at", "action", "patient_ref", "agent", "subtype", "event_id")
    edited = [name for name, a, b in zip(names, values, stored, strict=True) if a != b]
    return (f"record {seq} was edited: its {', '.join(edited)} "
            f"{'differs' if len(edited) == 1 else 'differ'} from its body")

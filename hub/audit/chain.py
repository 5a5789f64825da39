"""The hash chain: `append` links one signed AuditEvent onto the trail, `verify` checks it all.

Record n stores body_n (canonical AuditEvent JSON), prev_hash = hash_{n-1} (hash_0 = 64 zeros),
hash_n = sha256(bytes.fromhex(hash_{n-1}) + body_n), and an Ed25519 signature of hash_n's
bytes. The one-row `audit_chain_head` holds (n, hash_n) of the newest record; it is what
writers lock, and it lets verify see a truncated tail.

The search columns (patient_ref, agent, action, subtype, recorded_at) repeat values that are
inside the signed body (`action`, `recorded` and the audit-index extension), so an edited
column is caught like an edited body.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from hub.audit.models import GENESIS_HASH, AuditChainHeadRow, AuditRecordRow
from hub.audit.signing import Signer, verify_signature
from hub.db.types import utcnow

ACTIONS = frozenset({"C", "R", "U", "D", "E"})
INDEX_EXTENSION = "http://carehub.example/fhir/StructureDefinition/audit-index"
BATCH_SIZE = 5000

SessionSource = Session | Callable[[], AbstractContextManager[Session]]
Progress = Callable[[int, int], None]
_Row = Row[*tuple[Any, ...]]  # an audit_records row of _COLUMNS


def canonical_json(event: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def link_hash(prev_hash: str, body: bytes) -> str:
    """hash_n = sha256(prev hash bytes || body), as 64 hex digits."""
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


# Built once: statement construction costs more than the statements themselves.
_HEAD = AuditChainHeadRow.metadata.tables["audit_chain_head"]
_LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_ADVANCE_HEAD = (update(_HEAD).where(_HEAD.c.id == 1)
                 .values(seq=bindparam("new_seq"), hash=bindparam("new_hash")))
_INSERT_RECORD = insert(AuditRecordRow.metadata.tables["audit_records"])


@dataclass(frozen=True)
class Entry:
    """One AuditEvent (as JSON) to link onto the chain, with its search columns."""

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
    """Link `event` (an AuditEvent as JSON) onto the chain in the caller's transaction; its seq.
    See `append_all`."""
    return append_all(session, signer, [Entry(event, patient_ref, agent, action, subtype)])[0]


def append_all(session: Session, signer: Signer, entries: Sequence[Entry]) -> list[int]:
    """Link `entries` onto the chain, in order, in the caller's transaction; their seqs
    (consecutive). One read and one update of the head and one insert however many there are.

    Sets each event's `id` (a new uuid4), `recorded` (now), `action` and the audit-index
    extension before hashing; the caller commits. Raises ValueError for an unknown action or an
    event whose own `action` differs, before anything is written.

    Cost: the head row stays locked until the caller's transaction ends, so every transaction
    that appends waits for the previous one to commit; append last, just before commit. On
    PostgreSQL that is the row lock taken here; on SQLite, use a write session (`BEGIN
    IMMEDIATE`) - it holds the database write lock anyway, and in a deferred transaction an
    append racing another one fails with "database is locked" instead of waiting.
    """
    for entry in entries:
        if entry.action not in ACTIONS:
            raise ValueError(f"audit action must be one of C R U D E, not {entry.action!r}")
        if entry.event.get("action", entry.action) != entry.action:
            raise ValueError(
                f"event action {entry.event['action']!r} differs from {entry.action!r}")
    if not entries:
        return []
    conn = session.connection()
    prev_seq, prev_hash = conn.execute(_LOCK_HEAD).one()
    seq = int(prev_seq)
    recorded_at = utcnow()  # under the lock, so that `recorded` follows seq order
    rows = []
    for entry in entries:
        seq += 1
        event = entry.event
        extensions = [e for e in event.get("extension", []) if e.get("url") != INDEX_EXTENSION]
        record = {
            **event,
            "id": str(uuid.uuid4()),
            "recorded": _instant(recorded_at),
            "action": entry.action,
            "extension": [*extensions,
                          _index_extension(entry.patient_ref, entry.agent, entry.subtype)],
        }
        body = canonical_json(record)
        digest = link_hash(prev_hash, body)
        rows.append({
            "seq": seq, "recorded_at": recorded_at, "patient_ref": entry.patient_ref,
            "agent": entry.agent, "action": entry.action, "subtype": entry.subtype,
            "body": body, "prev_hash": prev_hash, "hash": digest,
            "signature": signer.sign(bytes.fromhex(digest)), "key_id": signer.key_id,
        })
        prev_hash = digest
    conn.execute(_INSERT_RECORD, rows)
    conn.execute(_ADVANCE_HEAD, {"new_seq": seq, "new_hash": prev_hash})
    return [row["seq"] for row in rows]


# --- verify ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """ok, or the first broken record (by seq) and why. `count`: intact records before it."""

    ok: bool
    count: int
    first_broken_seq: int | None
    reason: str


@contextmanager
def _open(source: SessionSource) -> Iterator[Session]:
    if isinstance(source, Session):
        yield source
    else:
        with source() as session:
            yield session


_COLUMNS = (AuditRecordRow.seq, AuditRecordRow.recorded_at, AuditRecordRow.patient_ref,
            AuditRecordRow.agent, AuditRecordRow.action, AuditRecordRow.subtype,
            AuditRecordRow.body, AuditRecordRow.prev_hash, AuditRecordRow.hash,
            AuditRecordRow.signature, AuditRecordRow.key_id)


def verify(
    source: SessionSource,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    progress: Progress | None = None,
) -> VerifyResult:
    """Check the whole trail against the chain head and `public_keys` (key_id -> key).

    `source` is a session, or a factory of sessions (e.g. `lambda: db.session(write=False)`)
    from which each batch of BATCH_SIZE records is read in a short transaction of its own.
    Records appended while verify runs (after the head was read) are not checked.
    `progress(checked, total)` is called after each batch.
    """
    with _open(source) as session:
        # One statement, one snapshot: the head and the highest seq present at the same moment.
        top = select(func.max(AuditRecordRow.seq)).scalar_subquery()
        head = session.execute(
            select(AuditChainHeadRow.seq, AuditChainHeadRow.hash, top)
            .where(AuditChainHeadRow.id == 1)
        ).one_or_none()
    if head is None:
        return VerifyResult(False, 0, None, "the chain head row is missing")
    head_seq, head_hash, max_seq = int(head[0]), str(head[1]), head[2]

    checked, prev = 0, GENESIS_HASH
    while checked < head_seq:
        with _open(source) as session:
            rows = session.execute(
                select(*_COLUMNS)
                .where(AuditRecordRow.seq > checked, AuditRecordRow.seq <= head_seq)
                .order_by(AuditRecordRow.seq)
                .limit(BATCH_SIZE)
            ).all()
        if not rows:
            break
        broken = _check_batch(rows, checked, prev, public_keys)
        if isinstance(broken, VerifyResult):
            return broken
        checked, prev = broken
        if progress is not None:
            progress(checked, head_seq)

    if checked < head_seq:
        missing = (f"record {head_seq} is" if checked + 1 == head_seq
                   else f"records {checked + 1} to {head_seq} are")
        return VerifyResult(False, checked, checked + 1,
                            f"{missing} missing: the trail ends at record {checked} but the "
                            f"chain head says {head_seq} (truncated tail)")
    if max_seq is not None and int(max_seq) > head_seq:
        return VerifyResult(False, checked, head_seq + 1,
                            f"record {head_seq + 1} lies beyond the chain head ({head_seq}): "
                            "added behind the writer's back, or the head was edited")
    if head_hash != prev:
        return VerifyResult(False, checked, head_seq or None,
                            f"the chain head's hash is not record {head_seq}'s (head edited)")
    return VerifyResult(True, checked, None, f"{checked} records intact")


def _check_batch(
    rows: Sequence[_Row], checked: int, prev: str, keys: Mapping[str, Ed25519PublicKey]
) -> VerifyResult | tuple[int, str]:
    """(checked, hash of the last record) after `rows`, or the first broken record."""
    for row in rows:
        expected = checked + 1
        if row.seq != expected:
            gap = (f"record {expected} is" if row.seq == expected + 1
                   else f"records {expected} to {row.seq - 1} are")
            return VerifyResult(False, checked, expected,
                                f"{gap} missing (deleted): the chain jumps from record "
                                f"{checked} to {row.seq}")
        reason = _check_record(row, prev, keys)
        if reason is not None:
            return VerifyResult(False, checked, row.seq, reason)
        checked, prev = row.seq, row.hash
    return checked, prev


def _check_record(row: _Row, prev: str, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """Why record `row` is broken, given the previous record's hash; None if intact."""
    seq, body = row.seq, bytes(row.body)
    if link_hash(prev, body) != row.hash:
        if row.prev_hash != prev:
            return (f"record {seq} does not follow record {seq - 1}: inserted or reordered "
                    "(it names another record as its predecessor)")
        return f"record {seq} was edited: its content does not match its hash"
    if row.prev_hash != prev:
        return f"record {seq} was edited: its prev_hash is not record {seq - 1}'s hash"
    key = keys.get(row.key_id)
    if key is None:
        return f"record {seq} is signed by an unknown key ({row.key_id})"
    if not verify_signature(key, bytes.fromhex(row.hash), row.signature):
        return (f"record {seq} has a bad signature: its hash was recomputed without the "
                "signing key, or the signature was edited")
    return _check_columns(row)


def check_record(row: AuditRecordRow, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """Why one record, checked on its own, is broken (its hash over its predecessor's hash
    and its body, its signature, its search columns); None if intact. Whether the chain
    around it is whole is what `verify` checks."""
    return _check_record(cast("_Row", row), row.prev_hash, keys)  # same attributes


def _check_columns(row: _Row) -> str | None:
    """Why the search columns disagree with the signed body; None if they agree."""
    try:
        event = json.loads(row.body)
        index = next(e for e in event.get("extension", []) if e.get("url") == INDEX_EXTENSION)
        signed = {part["url"]: next(v for k, v in part.items() if k.startswith("value"))
                  for part in index["extension"]}
        values = {"recorded_at": event["recorded"], "action": event["action"],
                  "patient_ref": signed.get("patient"), "agent": signed["agent"],
                  "subtype": signed["subtype"]}
    except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
        return f"record {row.seq} is signed but its body is not a hub AuditEvent"
    stored = {"recorded_at": _instant(row.recorded_at), "action": row.action,
              "patient_ref": row.patient_ref, "agent": row.agent, "subtype": row.subtype}
    edited = [name for name, value in stored.items() if values[name] != value]
    if edited:
        return (f"record {row.seq} was edited: its {', '.join(edited)} "
                f"{'differs' if len(edited) == 1 else 'differ'} from the signed record")
    return None

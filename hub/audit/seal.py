"""The sealer: puts committed audit records into the Merkle tree and signs a checkpoint.

`seal_once` is one pass; any number of sealers (threads, `hub serve` processes, `hub audit
seal`) may run on one database, and each record is sealed exactly once:

1. Read (no lock): the unsealed records, oldest id first, at most `limit`. Each is checked
   before it may enter the tree: its leaf hash is SHA-256(0x00 || body) and its signature is
   by a trusted audit key (a legacy record from the hash chain: its link and signature), and
   no other record, sealed or with a lower id, holds its AuditEvent (copies.py: a byte copy
   of a genuine record passes the checks of its own). The pass stops at the first record
   that fails, which then stays unsealed and makes `hub audit verify` fail naming it: rows
   slipped into the table without the key, and copies of genuine ones, are never sealed.
2. Seal, in one write transaction that only sealers contend for (`pg_try_advisory_xact_lock`
   on PostgreSQL, so a second sealer skips the pass instead of waiting; SQLite's writer is
   exclusive anyway): read the latest checkpoint; if it moved since step 1 another sealer
   was faster and this pass ends. Check the checkpoint's signature and that the stored
   frontier gives its root (never extend a tree someone rewrote), give the records leaf
   indexes from the tree size on, in the order read, store the new complete nodes and sign a
   checkpoint of the new size.

Why no record is skipped: leaf indexes are handed out here, by scanning what is unsealed,
not by the record ids writers took. A record whose transaction commits after later ids were
sealed is simply unsealed at the next pass and gets the next free leaf index. Appenders never
wait for the sealer: it updates only rows that are committed and unsealed, which no writer
touches again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Row, bindparam, func, insert, select, text, update
from sqlalchemy.orm import Session

from hub.audit import copies, merkle
from hub.audit.checkpoint import Checkpoint
from hub.audit.models import GENESIS_HASH, AuditCheckpointRow, AuditRecordRow, AuditTreeNodeRow
from hub.audit.records import event_id_of, id_bytes, leaf_hex, link_hash
from hub.audit.signing import Signer, verify_signature
from hub.audit.spool import Batch, ReadAudit
from hub.audit.tree import fetch_nodes, latest_checkpoint
from hub.db.direct import Direct
from hub.db.engine import Database
from hub.db.locks import lock_key
from hub.db.types import utcnow

log = logging.getLogger("hub.audit.sealer")
SEAL_LOCK = lock_key("carehub:audit-sealer")
AnyRow = Row[*tuple[Any, ...]]
SEAL_BATCH = 5000
"""Records sealed per pass (and per checkpoint) at most."""

_R = AuditRecordRow
_T = AuditRecordRow.metadata.tables["audit_records"]
_SET_LEAF = Direct(update(_T).where(_T.c.seq == bindparam("b_seq"))
                    .values(leaf_index=bindparam("b_index"), leaf_hash=bindparam("b_hash")))
_INSERT_NODES = Direct(insert(AuditTreeNodeRow.metadata.tables["audit_tree_nodes"]))
_INSERT_CHECKPOINT = insert(AuditCheckpointRow.metadata.tables["audit_checkpoints"])
# PostgreSQL: a pass's leaves go as one UPDATE and its nodes as one INSERT, each given its
# rows as one JSON array (as the search index's rows go, hub/store/repository.py), instead of
# an executemany that runs one unprepared statement per row (two leaves and two nodes a
# message: four statements' parse, plan and run on the server, pg_stat_statements). In
# bench/ingest.py the sealer's CPU went from 0.64 to 0.54 ms a message.
_SET_LEAVES_PG = Direct(text(
    "UPDATE audit_records AS r SET leaf_index = n.b_index, leaf_hash = n.b_hash "
    "FROM json_to_recordset(CAST(:rows AS json)) AS n(b_seq bigint, b_index bigint, b_hash text) "
    "WHERE r.seq = n.b_seq"))
_INSERT_NODES_PG = Direct(text(
    "INSERT INTO audit_tree_nodes (level, idx, hash) SELECT level, idx, decode(hash, 'hex') "
    "FROM json_to_recordset(CAST(:rows AS json)) AS n(level integer, idx bigint, hash text)"))


class SealError(Exception):
    """The stored tree or its latest checkpoint was tampered with: sealing stops."""


@dataclass(frozen=True)
class SealReport:
    """What one pass did: records sealed, the tree size after it, and the record that
    stopped it (an unsealable record), if one did."""

    sealed: int
    tree_size: int
    blocked: str | None = None
    moved: int = 0  # records moved in from the read spools (`reads`), sealed or not

    def full(self, limit: int = SEAL_BATCH) -> bool:
        """Whether the pass reached its limit, in the trail or a spool: more may be waiting."""
        return self.sealed >= limit or self.moved >= limit


@dataclass(frozen=True)
class _Candidate:
    seq: int
    leaf: str


def _check(row: AnyRow, keys: Mapping[str, Ed25519PublicKey], prev_legacy: str | None
           ) -> tuple[str | None, str]:
    """(why `row` may not be sealed or None, its leaf hash hex)."""
    seq, body = row.seq, bytes(row.body)
    leaf = leaf_hex(body)
    key = keys.get(row.key_id)
    if row.prev_hash is not None:  # a legacy chain record
        if prev_legacy is None:
            return f"record {seq} is a hash-chain record after tree records", leaf
        if row.prev_hash != prev_legacy or link_hash(prev_legacy, body) != row.hash:
            return (f"record {seq} breaks the legacy hash chain: edited, or a record before "
                    "it was deleted"), leaf
        signed = bytes.fromhex(row.hash)
    else:
        if row.leaf_hash != leaf:
            return f"record {seq} was edited: its content does not match its hash", leaf
        signed = bytes.fromhex(leaf)
    if key is None:
        return f"record {seq} is signed by an unknown key ({row.key_id})", leaf
    if not verify_signature(key, signed, row.signature):
        return (f"record {seq} has a bad signature: not written by a hub process, or "
                "edited"), leaf
    return None, leaf


def _legacy_prev(session: Session, size: int) -> str | None:
    """The legacy chain hash a next legacy record must link to: the genesis hash on an empty
    tree, the last sealed record's chain hash if it is a legacy record, else None."""
    if size == 0:
        return GENESIS_HASH
    last = session.execute(select(_R.hash).where(_R.leaf_index == size - 1)).scalar()
    return str(last) if last is not None else None


def _read(db: Database, keys: Mapping[str, Ed25519PublicKey], limit: int
          ) -> tuple[int, list[_Candidate], str | None]:
    """Step 1: (tree size seen, the records that may be sealed, why the next may not)."""
    with db.session(write=False) as s:
        latest = latest_checkpoint(s)
        size = latest.tree_size if latest is not None else 0
        rows = s.execute(
            select(_R.seq, _R.body, _R.leaf_hash, _R.signature, _R.key_id, _R.prev_hash,
                   _R.hash, _R.event_id)
            .where(_R.leaf_index.is_(None)).order_by(_R.seq).limit(limit)).all()
        prev_legacy = _legacy_prev(s, size) if rows and rows[0].prev_hash is not None else None
        event_ids = {row.seq: _body_event_id(row.event_id, bytes(row.body)) for row in rows}
        held = copies.holders(s.connection(), [e for e in event_ids.values() if e is not None]
                              ) if rows else {}
    out: list[_Candidate] = []
    for row in rows:
        problem, leaf = _check(row, keys, prev_legacy)
        if problem is None:
            problem = _repeats(row.seq, event_ids[row.seq], held)
        if problem is not None:
            return size, out, problem
        prev_legacy = row.hash if row.prev_hash is not None else None
        out.append(_Candidate(row.seq, leaf))
    return size, out, None


def _body_event_id(column: str | None, body: bytes) -> str | None:
    """The AuditEvent id in `body` (what its signature covers): the event_id column where
    the body holds it, else read from the body."""
    if column is not None and id_bytes(column) in body:
        return column
    return event_id_of(body)


def _repeats(seq: int, event_id: str | None, held: dict[str, list[copies.Holder]]
             ) -> str | None:
    """Why unsealed record `seq` may not be sealed as a copy of another record's AuditEvent
    (one sealed, or unsealed with a lower seq: sealed first, it is the original); None if it
    is the first to hold it."""
    if event_id is None:
        return None
    others = held.get(event_id, [])
    if not others or others[0].seq == seq:
        return None
    return copies.copy_reason(copies.Holder.of(seq, None), others[0], event_id)


_FILL_EVENT_ID = (update(_T).where(_T.c.seq == bindparam("b_seq"), _T.c.event_id.is_(None))
                  .values(event_id=bindparam("b_event")))


def fill_event_ids(db: Database, limit: int = SEAL_BATCH) -> int:
    """Give records without an event_id their body's id (a derived column, like the search
    columns: the signed body is the record), sealed or not; how many. A record without one
    was written (or sealed) by a hub process older than migration 0014, still running while
    another process had migrated. Each pass does this first, so such a record has its id by
    the time the same pass seals it. A read finds none nearly always, and then no write
    transaction is taken."""
    with db.session(write=False) as s:
        rows = s.execute(select(_R.seq, _R.body).where(_R.event_id.is_(None))
                         .order_by(_R.seq).limit(limit)).all()
        bodies = {seq: event_id_of(bytes(body)) for seq, body in rows}
        # An id another record holds in its column already stays out (the column is unique,
        # migration 0015): a copy of a record, slipped in without one; verify and the
        # sealer know it by its body.
        wanted = sorted({e for e in bodies.values() if e is not None})
        taken: set[str | None] = set()
        for start in range(0, len(wanted), 1000):  # an SQLite before 3.32 binds 999 at most
            taken.update(s.connection().execute(select(_R.event_id).where(
                _R.event_id.in_(wanted[start:start + 1000]))).scalars())
    filled = []
    for seq, eid in bodies.items():
        if eid is not None and eid not in taken:
            taken.add(eid)
            filled.append({"b_seq": seq, "b_event": eid})
    if filled:
        with db.session(write=True) as s:
            s.connection().execute(_FILL_EVENT_ID, filled)
    return len(filled)


def _frontier(session: Session, latest: Checkpoint | None,
              keys: Mapping[str, Ed25519PublicKey]) -> merkle.Frontier:
    """The frontier of the stored tree, checked against its signed latest checkpoint."""
    if latest is None:
        if session.scalar(select(func.count()).select_from(AuditTreeNodeRow)):
            raise SealError("tree nodes are stored but there is no checkpoint")
        return merkle.Frontier()
    problem = latest.problem(dict(keys))
    if problem is not None:
        raise SealError(problem)
    wanted = merkle.frontier_nodes(latest.tree_size)
    nodes = fetch_nodes(session, wanted)
    if len(nodes) != len(wanted):
        raise SealError(f"the stored tree of checkpoint {latest.tree_size} is incomplete")
    frontier = merkle.Frontier(latest.tree_size, [nodes[k] for k in wanted])
    if frontier.root().hex() != latest.root_hash:
        raise SealError(f"the stored tree does not give checkpoint {latest.tree_size}'s root")
    return frontier


def seal_once(db: Database, signer: Signer, *,
              keys: Mapping[str, Ed25519PublicKey] | None = None,
              limit: int = SEAL_BATCH, reads: ReadAudit | None = None) -> SealReport | None:
    """One pass (see the module docstring); None when another sealer holds the tree now.
    `keys` (key_id -> public key) are the keys whose records may be sealed, default the
    signer's own. Raises SealError when the stored tree was tampered with.

    `reads` (SQLite): the pass also moves the records waiting in the read spools (up to
    `limit` of each, hub/audit/spool.py) in the same write transaction, inserting them
    sealed, after the unsealed records of audit_records: one transaction and no second
    write of each row, where a move and then a seal took two (and the seal an UPDATE of
    every moved row). A spool record that fails its checks goes in unsealed, as does all
    that follows it, and stops the sealing there, as an unsealable record does."""
    trusted = dict(keys) if keys is not None else {}
    trusted.setdefault(signer.key_id, signer.public_key)
    fill_event_ids(db, limit)
    if reads is None:
        return _seal(db, signer, trusted, limit, [], None)
    with reads.moving(limit, trusted) as batches:
        return _seal(db, signer, trusted, limit, batches, reads)


def _seal(db: Database, signer: Signer, trusted: Mapping[str, Ed25519PublicKey], limit: int,
          batches: list[Batch], reads: ReadAudit | None) -> SealReport | None:
    seen, candidates, blocked = _read(db, trusted, limit)
    if blocked is not None:
        log.error("audit sealer stopped before a record: %s", blocked)
    if not candidates and not any(b.rows for b in batches):
        return SealReport(0, seen, blocked)  # nothing to do: no write transaction
    with db.session(write=True) as s:
        if db.dialect == "postgresql" and not s.scalar(
                select(func.pg_try_advisory_xact_lock(SEAL_LOCK))):
            return None
        latest = latest_checkpoint(s)
        size = latest.tree_size if latest is not None else 0
        if size != seen:
            return None  # another sealer sealed meanwhile; the next pass starts from there
        frontier = _frontier(s, latest, trusted)
        nodes: list[dict[str, Any]] = []

        def push(leaf_hex: str) -> int:
            """Add a leaf to the tree; its index. The new nodes go into `nodes`."""
            index = frontier.size
            nodes.extend({"level": lv, "idx": i, "hash": h}
                         for lv, i, h in frontier.push(bytes.fromhex(leaf_hex)))
            return index

        leaves = [{"b_seq": c.seq, "b_index": push(c.leaf), "b_hash": c.leaf}
                  for c in candidates]
        conn = s.connection()
        postgres = db.dialect == "postgresql"
        if leaves and postgres:
            _SET_LEAVES_PG.run(conn, {"rows": orjson.dumps(leaves).decode()})
        elif leaves:  # SQLite: one executemany, on the driver's cursor (hub/db/direct.py)
            _SET_LEAF.run_many(conn, leaves)
        moved, sealed_moved = 0, 0
        if reads is not None:
            sealable = {id(r) for b in batches for r in b.rows[:b.sealable]}
            stopped = blocked is not None

            def leaf_index(row: Any) -> int | None:
                # In the order they go in: sealed up to the first that may not be. The leaf
                # is the hash the record was spooled with (checked by the spool's check).
                nonlocal stopped
                if stopped or id(row) not in sealable:
                    stopped = True
                    return None
                return push(str(row.leaf_hash))

            before = frontier.size
            moved = reads.move_in(s, batches, leaf_index)
            sealed_moved = frontier.size - before
            problem = next((b.problem for b in batches if b.problem is not None), None)
            if blocked is None and problem is not None and stopped:
                blocked = problem
                log.error("audit sealer stopped before a record: %s", blocked)
        if nodes and postgres:
            _INSERT_NODES_PG.run(conn, {"rows": orjson.dumps(
                [{**n, "hash": n["hash"].hex()} for n in nodes]).decode()})
        elif nodes:
            _INSERT_NODES.run_many(conn, nodes)
        if frontier.size != seen:
            cp = Checkpoint.sign(signer, frontier.size, frontier.root(), utcnow())
            conn.execute(_INSERT_CHECKPOINT, [{
                "tree_size": cp.tree_size, "root_hash": cp.root_hash, "signed_at": cp.signed_at,
                "key_id": cp.key_id, "signature": cp.signature}])
        return SealReport(len(candidates) + sealed_moved, frontier.size, blocked, moved)


def seal_all(db: Database, signer: Signer, *,
             keys: Mapping[str, Ed25519PublicKey] | None = None,
             limit: int = SEAL_BATCH, reads: ReadAudit | None = None) -> SealReport:
    """Seal passes until nothing sealable is left (with `reads`, the spools' records moved
    in by the same passes); the records sealed and moved in all, the size."""
    total, moved, size = 0, 0, 0
    while True:
        report = seal_once(db, signer, keys=keys, limit=limit, reads=reads)
        if report is None:
            continue
        total, moved, size = total + report.sealed, moved + report.moved, report.tree_size
        if not report.full(limit) or report.blocked is not None:
            return SealReport(total, size, report.blocked, moved)


class Sealer:
    """Seals in the background every `interval` seconds (passes back to back while there is
    a backlog); `start()`, then `stop()` on shutdown. Failures are logged, never raised.
    With `reads`, each pass also moves the audit records of reads from their spools into
    the trail (hub/audit/spool.py), sealed in the same transaction (`seal_once`)."""

    def __init__(self, db: Database, signer: Signer, *, interval: float,
                 keys: Mapping[str, Ed25519PublicKey] | None = None,
                 reads: ReadAudit | None = None) -> None:
        self.db, self.signer, self.interval, self.keys = db, signer, interval, keys
        self.reads = reads
        self.moved = 0
        self.passes = 0
        self.failures = 0
        self.sealed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)

    def run_once(self) -> SealReport | None:
        """One pass now; None when another sealer had the tree or the pass failed."""
        try:
            report = seal_once(self.db, self.signer, keys=self.keys, reads=self.reads)
        except Exception:
            self.failures += 1
            log.exception("audit seal failed; trying again next interval")
            return None
        finally:
            self.passes += 1
        if report is not None:
            self.sealed += report.sealed
            self.moved += report.moved
        return report

    def _run(self) -> None:
        while not self._stop.is_set():
            report = self.run_once()
            if report is not None and report.full():
                continue  # a backlog: keep going
            self._stop.wait(self.interval)

    def start(self) -> Sealer:
        """Start sealing in a background thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the pass under way."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

"""`verify`: check the whole audit trail against its signed checkpoints.

What it checks, and what each failure says:
- every checkpoint's Ed25519 signature under the given keys (and each checkpoint a witness
  kept, `witnessed`: a database without it, or with another root at its size, was rewritten);
- the sealed records in tree order: positions 0, 1, 2, ... without a gap (a gap is a deleted
  record), each record's leaf hash is SHA-256(0x00 || body) (else it was edited) and its search
  columns agree with its body;
- the tree: the root recomputed from the records equals each checkpoint's root at its size
  (else records were edited and rehashed, inserted, deleted or reordered; the records of that
  checkpoint are then checked one by one against their writers' signatures to name the first
  broken one), and every stored node equals the recomputed one (a stored node that differs
  names the record out of place under it, or says the node itself was edited: `_mismatch`);
  records beyond the latest checkpoint's size, or missing below it (a truncated tail), are
  named;
- the records not sealed yet: hash, signature and columns each (the sealer checks the same
  before it seals them);
- that no two records hold one AuditEvent (copies.py): a byte copy of a genuine record,
  inserted with another seq, passes every check of its own, since the writer's signature
  covers the body (and the AuditEvent id in it) but not the seq. The copy is named where it
  is, sealed (by its leaf, in tree order with the rest) or not.

Verify needs no private key; Ed25519 is checked only for checkpoints and unsealed records,
so it runs at hashing speed. A sealed record's writer's signature is redundant once the
signed checkpoints cover its body, but the disclosure log (`check_record`) checks it, so an
edit of a sealed record's `key_id` or `signature` columns must not pass here as intact
(session 22, finding D12): each sealed record's key_id must name a trusted key (a set
lookup), and `signatures=True` (`hub audit verify --signatures`) checks every sealed record's
signature with `record_signature_problem`, the function `check_record` uses. That is one
Ed25519 verification a record, 60-120 microseconds on the 2-core machine against about 11
for everything else, so it is not the default: checking it at hashing speed needs the
checkpoints to sign a digest of the signatures they cover (not done yet).

How: the tree is cut into chunks of 2**CHUNK_LEVEL leaves, each a complete subtree, so each
chunk is checked on its own (`_check_chunk`, one query for its records straight from the
driver, one per level for its stored nodes): its leaves, its nodes rebuilt bottom-up a level
at a time and compared with the stored ones as lists, and for each checkpoint whose size
falls inside it the hash of that checkpoint's frontier part within the chunk. The parent
takes the chunks in tree order, builds the few nodes above them from their roots, and gets
each checkpoint's root by folding the nodes left of the chunk over that part. Chunks need
nothing from each other, so with `jobs` > 1 they are checked in worker processes. The
first problem in tree order is named: a problem in a record before the stored nodes that
end at or after it, those before a checkpoint's root at a size past them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from multiprocessing import get_context
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Row, func, make_url, select
from sqlalchemy.orm import Session

from hub.audit import copies, merkle
from hub.audit.checkpoint import Checkpoint
from hub.audit.models import AuditCheckpointRow, AuditRecordRow, AuditTreeNodeRow
from hub.audit.records import (
    _ONCE,
    columns_disagree,
    event_id_of,
    id_bytes,
    index_bytes,
    instant_text,
    leaf_hex,
    link_hash,
)
from hub.audit.signing import verify_signature
from hub.audit.tree import checkpoints

BATCH_SIZE = 10_000
AnyRow = Row[*tuple[Any, ...]]

SessionSource = Session | Callable[[], AbstractContextManager[Session]]
Progress = Callable[[int, int], None]
_R = AuditRecordRow
_N = AuditTreeNodeRow
_COLUMNS = (_R.seq, _R.leaf_index, _R.body, _R.leaf_hash, _R.recorded_at, _R.action,
            _R.patient_ref, _R.agent, _R.subtype, _R.event_id)
_SIGNED = (_R.signature, _R.key_id, _R.prev_hash, _R.hash)
_WALKED = ("seq, leaf_index, {body}, leaf_hash, recorded_at, action, patient_ref, agent, "
           "subtype, event_id, key_id")  # the order of _check_chunk's loop variables
_SQLITE_BODY = "CAST(body AS BLOB)"
"""The body as the bytes SQLite holds, also when an edit in SQL left TEXT that is not UTF-8
(the driver would fail to decode it): hub.db.types.ExactBytes, at the driver."""


@dataclass(frozen=True)
class VerifyResult:
    """ok, or the first problem: the record (`first_broken_seq`, its id) and/or the tree
    position (`position`) it is at, and why. `count`: records found intact before it;
    `sealed`/`unsealed`: how those split; `tree_size`: the latest checkpoint's size."""

    ok: bool
    count: int
    first_broken_seq: int | None
    reason: str
    position: int | None = None
    sealed: int = 0
    unsealed: int = 0
    tree_size: int = 0


@contextmanager
def _open(source: SessionSource) -> Iterator[Session]:
    if isinstance(source, Session):
        yield source
    else:
        with source() as session:
            yield session


class _BrokenError(Exception):
    def __init__(self, reason: str, seq: int | None = None, position: int | None = None
                 ) -> None:
        super().__init__(reason)
        self.reason, self.seq, self.position = reason, seq, position


def record_signature_problem(row: AnyRow, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """Why a record's writer's signature does not hold (legacy chain records: their chain
    hash and its signature); None if it holds. Needs `signature`, `key_id`, `prev_hash`,
    `hash`, `body` and `leaf_hash` in `row`."""
    seq, body = row.seq, bytes(row.body)
    if row.prev_hash is not None:
        if link_hash(row.prev_hash, body) != row.hash:
            return f"record {seq} was edited: its content does not match its chain hash"
        signed = bytes.fromhex(row.hash)
    else:
        if row.leaf_hash != leaf_hex(body):
            return f"record {seq} was edited: its content does not match its hash"
        signed = bytes.fromhex(row.leaf_hash)
    key = keys.get(row.key_id)
    if key is None:
        return f"record {seq} is signed by an unknown key ({row.key_id})"
    if not verify_signature(key, signed, row.signature):
        return (f"record {seq} has a bad signature: it was edited and rehashed without the "
                "signing key, or not written by a hub process")
    return None


def check_record(row: AuditRecordRow, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """Why one record, checked on its own, is broken (its hash, its writer's signature, its
    search columns); None if intact. Whether the tree around it is whole is `verify`'s."""
    problem = record_signature_problem(cast(AnyRow, row), keys)  # the same attributes
    if problem is not None:
        return problem
    return columns_disagree(row.seq, bytes(row.body), row.recorded_at, row.action,
                            row.patient_ref, row.agent, row.subtype,
                            _event_id(row.event_id, bytes(row.body)))


def _event_id(column: str | None, body: bytes) -> str | None:
    """The event_id a record's body must have: its column's. A record may have none: one
    written (or sealed) by a hub process older than migration 0014, still running while
    another migrated. The sealer gives it the body's id (seal.fill_event_ids); until then
    read by id does not find it, but nothing it says is changed, so that is not an edit."""
    return column if column is not None else event_id_of(body)


CHUNK_LEVEL = 14
PROCESSES_ABOVE = 100_000
"""Worker processes are started only for a tree larger than this (each costs about a second
of CPU to start and import)."""
"""The walk checks the tree in chunks of 2**CHUNK_LEVEL leaves (complete subtrees), each read
in one short transaction and checked on its own, possibly in another process."""


@dataclass(frozen=True)
class _Chunk:
    """What checking the leaves [start, start + 2**level) found (`_check_chunk`)."""

    start: int
    walked: int  # leaves walked and intact, from start on
    leaf_problem: tuple[str, int | None, int] | None  # (reason, seq, position)
    node_problem: tuple[int, str, int | None, int] | None  # (last leaf, reason, seq, position)
    partial_roots: dict[int, bytes]  # checkpoint size -> hash of its frontier in this chunk
    root: bytes | None  # the chunk's node, when complete


def _levels(digests: list[bytes]) -> list[list[bytes]]:
    """Every complete node over `digests` (a run starting at a multiple of its length's
    power of two), level by level from the leaves, paired bottom-up."""
    levels = [digests]
    row = digests
    while len(row) > 1:
        row = [sha256(b"\x01" + left + right).digest()
               for left, right in zip(row[0::2], row[1::2], strict=False)]
        levels.append(row)
    return levels


def _check_chunk(cursor: Any, start: int, length: int, end: int, sizes: Sequence[int],
                 key_ids: frozenset[str]) -> _Chunk:
    """Check the sealed records at leaves [start, end) of the chunk [start, start + length)
    (length a power of two, start a multiple of it; end short of it at the tree's tail)
    with a DBAPI cursor: positions, hashes, columns, that each record's key_id names one of
    `key_ids`, the stored nodes within, and for each checkpoint size in `sizes` the hash of
    its frontier's part inside the chunk."""
    column = _SQLITE_BODY if isinstance(cursor, sqlite3.Cursor) else "body"
    cursor.execute(f"SELECT {_WALKED.format(body=column)} FROM audit_records "
                   f"WHERE leaf_index >= {int(start)} AND leaf_index < {int(end)} "
                   "ORDER BY leaf_index")
    rows = cursor.fetchall()
    digests: list[bytes] = []
    seqs: list[int] = []
    leaf_problem = None
    # The column values repeat across records (an agent, a request's time, five actions):
    # their bytes are made once a chunk.
    indexes: dict[tuple[str | None, str, str], bytes] = {}
    instants: dict[Any, bytes] = {}
    actions: dict[str, bytes] = {}
    extension, recorded_key, action_key = _ONCE
    expected = start
    for seq, leaf_index, body, leaf_hash, recorded_at, action, patient_ref, agent, subtype, \
            event_id, key_id in rows:
        if leaf_index != expected:
            leaf_problem = (_gap_reason(expected, seq, leaf_index), None, expected)
            break
        if type(body) is not bytes:
            body = bytes(body)
        digest = sha256(b"\x00" + body).digest()
        if digest.hex() != leaf_hash:
            leaf_problem = (f"record {seq} was edited: its content does not match its hash",
                            seq, expected)
            break
        if key_id not in key_ids:  # as record_signature_problem says it
            leaf_problem = (f"record {seq} is signed by an unknown key ({key_id})", seq,
                            expected)
            break
        index = indexes.get((patient_ref, agent, subtype))
        if index is None:
            index = indexes[(patient_ref, agent, subtype)] = index_bytes(
                patient_ref, agent, subtype)
        recorded = instants.get(recorded_at)
        if recorded is None:
            recorded = instants[recorded_at] = (
                f'"recorded":"{instant_text(recorded_at)}"'.encode())
        acted = actions.get(action)
        if acted is None:
            acted = actions[action] = f'"action":"{action}"'.encode()
        # records.columns_agree, with the bytes it looks for made once, and the event id.
        if not (index in body and recorded in body and acted in body
                and body.count(extension) == 1 and body.count(recorded_key) == 1
                and body.count(action_key) == 1
                and event_id is not None and id_bytes(event_id) in body):
            at = datetime.fromisoformat(recorded_at) if isinstance(recorded_at, str) \
                else recorded_at
            # The slow, exact comparison decides (and says what differs).
            problem = columns_disagree(seq, body, at.replace(tzinfo=at.tzinfo or UTC), action,
                                       patient_ref, agent, subtype,
                                       _event_id(event_id, body))
            if problem is not None:
                leaf_problem = (problem, seq, expected)
                break
        digests.append(digest)
        seqs.append(seq)
        expected += 1
    levels = _levels(digests)
    node_problem = _compare_levels(cursor, start, levels, seqs)
    partial: dict[int, bytes] = {}
    for size in sizes:
        rest = size - start
        if not 0 < rest <= len(digests) or rest == length:
            continue  # not reached, or the whole chunk (the caller's, from chunk roots)
        nodes, offset = [], 0
        for level in range(rest.bit_length() - 1, -1, -1):
            if rest >> level & 1:
                nodes.append(levels[level][offset >> level])
                offset += 1 << level
        digest = nodes[-1]
        for left in reversed(nodes[:-1]):
            digest = sha256(b"\x01" + left + digest).digest()
        partial[size] = digest
    root = levels[-1][0] if len(digests) == length else None
    return _Chunk(start, len(digests), leaf_problem, node_problem, partial, root)


def _gap_reason(expected: int, seq: int, leaf_index: int) -> str:
    gap = (f"the record at leaf {expected} is" if leaf_index == expected + 1
           else f"the records at leaves {expected} to {leaf_index - 1} are")
    return (f"{gap} missing (deleted): the tree jumps from leaf {expected - 1} to record "
            f"{seq} at leaf {leaf_index}")


def _compare_levels(cursor: Any, start: int, levels: list[list[bytes]], seqs: list[int]
                    ) -> tuple[int, str, int | None, int] | None:
    """Compare the nodes of level >= 1 rebuilt in `levels` with the stored ones; the first
    mismatch as (its last leaf, reason, seq, position), the node that ends first."""
    bad: list[tuple[int, int, int]] = []  # (last leaf, level, index)
    for level in range(1, len(levels)):
        made = levels[level]
        first = start >> level
        cursor.execute(f"SELECT hash FROM audit_tree_nodes WHERE level = {int(level)} AND idx "
                       f">= {int(first)} AND idx < {int(first + len(made))} ORDER BY idx")
        if [bytes(h) for (h,) in cursor.fetchall()] == made:
            continue
        cursor.execute(f"SELECT idx, hash FROM audit_tree_nodes WHERE level = {int(level)} "
                       f"AND idx >= {int(first)} AND idx < {int(first + len(made))}")
        stored = {int(i): bytes(h) for i, h in cursor.fetchall()}
        for k, digest in enumerate(made):
            if stored.get(first + k) != digest:
                bad.append((((first + k + 1) << level) - 1, level, first + k))
                break
    if not bad:
        return None
    last, level, index = min(bad)
    node_start = index << level
    node = _stored_node(cursor, level, index)
    if node is None:
        return (last, _node_reason(node_start, last, "is missing"), seqs[node_start - start],
                node_start)
    return (last, *_mismatch(cursor, start, levels, seqs, level, index, node))


def _mismatch(cursor: Any, start: int, levels: list[list[bytes]], seqs: list[int], level: int,
              index: int, stored: bytes) -> tuple[str, int | None, int]:
    """What a stored node that differs from the one rebuilt from its records says, as
    (reason, seq, position); the lowest such node of its stretch (`_compare_levels`), so
    the stored nodes below it equal the rebuilt ones.

    Over two leaves the node tells which of them is not the record sealed there: the stored
    node is H(left, x) or H(x, right) for the leaf hash x of a record of this chunk, sealed
    there and now at another leaf (it moved, and the record at the leaf moved in). A node
    higher up whose children the records give, or one whose parent the records give, was
    edited itself: no record is broken. Else it says what it found."""
    first, last = index << level, ((index + 1) << level) - 1
    digests = levels[0]
    parent = _stored_node(cursor, level + 1, index >> 1) if level + 1 < len(levels) else None
    if parent is not None and index >> 1 < len(levels[level + 1]) \
            and levels[level + 1][index >> 1] == parent:
        return (f"the stored tree node over leaves {first} to {last} was edited: the records "
                f"under it give the stored node above it (leaves {(index >> 1) << (level + 1)} "
                f"to {(((index >> 1) + 1) << (level + 1)) - 1})", None, first)
    if level > 1:
        return (f"the stored tree node over leaves {first} to {last} was edited: the records "
                "under it give the stored nodes below it", None, first)
    left, right = first - start, last - start
    if sha256(b"\x01" + digests[right] + digests[left]).digest() == stored:  # the two swapped
        return (_moved_reason(seqs[left], first, seqs[right], last), seqs[left], first)
    for offset in range(len(digests)):
        if offset in (left, right):
            continue
        if sha256(b"\x01" + digests[left] + digests[offset]).digest() == stored:
            return (_moved_reason(seqs[right], last, seqs[offset], start + offset),
                    seqs[right], last)
        if sha256(b"\x01" + digests[offset] + digests[right]).digest() == stored:
            return (_moved_reason(seqs[left], first, seqs[offset], start + offset),
                    seqs[left], first)
    return (_undecided(first, last, seqs[left], seqs[right]), seqs[left], first)


_UNDECIDED = "are not both the ones sealed there"


def _undecided(first: int, last: int, left: int, right: int) -> str:
    return (f"the records at leaves {first} and {last} (records {left} and {right}) "
            f"{_UNDECIDED}, or the stored node over them was edited: records were reordered "
            "or moved")


def _moved_reason(seq: int, leaf: int, sealed_seq: int, now: int) -> str:
    return (f"record {seq} is at leaf {leaf}, where record {sealed_seq} was sealed (now at "
            f"leaf {now}): records were reordered or moved")


def _stored_node(cursor: Any, level: int, index: int) -> bytes | None:
    cursor.execute(f"SELECT hash FROM audit_tree_nodes WHERE level = {int(level)} AND "
                   f"idx = {int(index)}")
    row = cursor.fetchone()
    return None if row is None else bytes(row[0])


def _node_reason(start: int, last: int, what: str) -> str:
    return (f"the stored tree node over leaves {start} to {last} {what}: those records were "
            "reordered or moved, or the node was edited")


class _Walk:
    """The sealed records in tree order, chunk by chunk, rebuilding the tree above the chunks
    from their roots and checking each checkpoint's root as the walk passes its size."""

    def __init__(self, source: SessionSource, keys: Mapping[str, Ed25519PublicKey],
                 roots: Mapping[int, str], progress: Progress | None, total: int,
                 jobs: int = 1, url: str | None = None, signatures: bool = False) -> None:
        self.source, self.keys, self.roots = source, keys, roots
        self.signatures = signatures
        self.size = max(roots, default=0)  # the walk stops at the largest checkpoint
        self.progress, self.total = progress, total
        self.jobs, self.url = jobs, url
        self.high = merkle.Frontier()  # over the chunks' roots
        self.checked = 0
        self.last_checkpoint = 0  # the size of the last checkpoint the walk has matched

    def _spans(self) -> list[tuple[int, int, int, list[int], frozenset[str]]]:
        chunk, sizes, key_ids = 1 << CHUNK_LEVEL, sorted(self.roots), frozenset(self.keys)
        return [(start, chunk, min(start + chunk, self.size),
                 [n for n in sizes if start < n <= start + chunk], key_ids)
                for start in range(0, self.size, chunk)]

    def _results(self, spans: list[tuple[int, int, int, list[int], frozenset[str]]]
                 ) -> Iterator[_Chunk]:
        url = self.url
        if (self.jobs > 1 and url is not None and _shareable(url) and len(spans) > 1
                and self.size > PROCESSES_ABOVE):
            with ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn"),
                                     initializer=_worker_open, initargs=(url,)) as pool:
                try:
                    yield from pool.map(_worker_chunk, *zip(*spans, strict=True))
                finally:
                    pool.shutdown(cancel_futures=True)
            return
        for start, length, end, sizes, key_ids in spans:
            with _open(self.source) as s:
                # At the driver: SQLAlchemy's rows and type processing would cost more than
                # all the checks (raw SQLite text for recorded_at: see instant_text).
                cursor = s.connection().connection.cursor()
                try:
                    yield _check_chunk(cursor, start, length, end, sizes, key_ids)
                finally:
                    cursor.close()

    def run(self) -> int:
        """Walk every sealed record; the number walked. Raises _BrokenError."""
        try:
            for chunk in self._results(self._spans()):
                if not self._take(chunk):
                    break
                if self.progress is not None:
                    self.progress(self.checked, self.total)
        except _BrokenError as broken:
            if broken.position is not None:
                self.checked = min(self.checked, broken.position)
            raise
        return self.checked

    def _take(self, chunk: _Chunk) -> bool:
        """Take one chunk's findings in tree order; whether the walk goes on."""
        start, walked = chunk.start, chunk.walked
        end = min(start + (1 << CHUNK_LEVEL), self.size)
        node = chunk.node_problem
        if self.signatures:  # the records found whole, before anything broken in the chunk
            try:
                self._signatures(start, node[3] if node is not None else start + walked)
            except _BrokenError as broken:
                self.checked = int(broken.position or start)  # those before it are intact
                raise
        for size in sorted(chunk.partial_roots):
            if node is not None and node[0] < size:
                break
            self._check_root(size, self.high.root_over(chunk.partial_roots[size]))
        if node is not None:
            if node[2] is not None and node[0] == node[3] + 1:  # over two records: one of
                self._signatures(node[3], node[0] + 1)  # them edited and rehashed?
            if _UNDECIDED in node[1]:  # what was sealed there may be in another chunk
                self._moved_far(node[3], node[0])
            raise _BrokenError(*node[1:])
        self.checked = start + walked
        if chunk.leaf_problem is not None:
            raise _BrokenError(*chunk.leaf_problem)
        if chunk.root is not None:
            made = [(level + CHUNK_LEVEL, index, digest)
                    for level, index, digest in self.high.push(chunk.root)]
            self._compare_high(made)
            if end in self.roots:
                self._check_root(end, self.high.root())
            return True
        if self.checked < end:  # the rows ran out inside the chunk: a gap, or the tail is cut
            self._gap()
            return False
        return True

    def _check_root(self, size: int, root: bytes) -> None:
        if root.hex() != self.roots[size]:
            self._localise(self.last_checkpoint, size)
        self.last_checkpoint = size

    def _compare_high(self, made: list[tuple[int, int, bytes]]) -> None:
        """Compare the nodes above the chunks, made by the chunk just taken."""
        if not made:
            return
        with _open(self.source) as s:
            cursor = s.connection().connection.cursor()
            try:
                for level, index, digest in made:  # lowest first: the first ends first
                    stored = _stored_node(cursor, level, index)
                    if stored != digest:
                        first, last = index << level, ((index + 1) << level) - 1
                        if stored is not None:  # its children, checked before, hold
                            raise _BrokenError(
                                f"the stored tree node over leaves {first} to {last} was "
                                "edited: the records under it give the stored nodes below "
                                "it", None, first)
                        cursor.execute("SELECT seq FROM audit_records WHERE leaf_index = "
                                       f"{int(first)}")
                        row = cursor.fetchone()
                        raise _BrokenError(_node_reason(first, last, "is missing"),
                                           None if row is None else int(row[0]), first)
            finally:
                cursor.close()

    def _gap(self) -> None:
        """The rows of the walk ran out at leaf `checked`: name the next sealed record, if
        any, as after a gap; none means the tail is cut, which `verify` says."""
        expected = self.checked
        with _open(self.source) as s:
            row = s.execute(select(_R.seq, _R.leaf_index)
                            .where(_R.leaf_index >= expected, _R.leaf_index < self.size)
                            .order_by(_R.leaf_index).limit(1)).first()
        if row is not None:
            raise _BrokenError(_gap_reason(expected, row.seq, int(row.leaf_index or 0)),
                               None, expected)

    def _signatures(self, start: int, end: int) -> list[AnyRow]:
        """Raise for the first record of leaves [start, end) whose writer's signature fails
        (a record edited and rehashed); the records, when none does."""
        with _open(self.source) as s:
            rows = s.execute(select(_R.seq, _R.leaf_index, _R.body, _R.leaf_hash, *_SIGNED)
                             .where(_R.leaf_index >= start, _R.leaf_index < end)
                             .order_by(_R.leaf_index)).all()
        for row in rows:
            problem = record_signature_problem(row, self.keys)
            if problem is not None:
                raise _BrokenError(problem, row.seq, row.leaf_index)
        return list(rows)

    def _moved_far(self, first: int, last: int) -> None:
        """The two records at leaves `first` and `last` do not give their stored node, and no
        record of their chunk fits in either's place (a chunk ends above them): raise saying
        that the node was edited if they give the stored node above it, else look through
        every sealed leaf for the one sealed there (`_mismatch`) and raise naming the record
        that moved in."""
        index = first >> 1
        with _open(self.source) as s:
            stored = s.scalar(select(_N.hash).where(_N.level == 1, _N.idx == index))
            sibling = s.scalar(select(_N.hash).where(_N.level == 1, _N.idx == index ^ 1))
            parent = s.scalar(select(_N.hash).where(_N.level == 2, _N.idx == index >> 1))
            at = {int(r.leaf_index): r for r in s.execute(
                select(_R.seq, _R.leaf_index, _R.leaf_hash)
                .where(_R.leaf_index.in_((first, last))))}
            if stored is None or first not in at or last not in at:
                return
            stored = bytes(stored)
            left, right = bytes.fromhex(at[first].leaf_hash), bytes.fromhex(at[last].leaf_hash)
            made = sha256(b"\x01" + left + right).digest()
            if sibling is not None and parent is not None and bytes(parent) == sha256(
                    b"\x01" + (bytes(sibling) + made if index & 1 else made + bytes(sibling))
            ).digest():
                raise _BrokenError(f"the stored tree node over leaves {first} to {last} was "
                                   "edited: the records under it give the stored node above it",
                                   None, first)
            for row in s.execute(select(_R.seq, _R.leaf_index, _R.leaf_hash)
                                 .where(_R.leaf_index.is_not(None))
                                 .execution_options(yield_per=BATCH_SIZE)):
                leaf = bytes.fromhex(row.leaf_hash)
                if sha256(b"\x01" + left + leaf).digest() == stored:
                    raise _BrokenError(_moved_reason(at[last].seq, last, row.seq,
                                                     row.leaf_index), at[last].seq, last)
                if sha256(b"\x01" + leaf + right).digest() == stored:
                    raise _BrokenError(_moved_reason(at[first].seq, first, row.seq,
                                                     row.leaf_index), at[first].seq, first)

    def _localise(self, start: int, end: int) -> None:
        """The records of leaves [start, end) do not give their checkpoint's root: name the
        first whose signature fails, else say what is left."""
        rows = self._signatures(start, end)
        raise _BrokenError(f"the records at leaves {start} to {end - 1} do not give checkpoint "
                      f"{end}'s root: records were inserted, deleted, reordered or moved "
                      "among them", rows[0].seq if rows else None, start)


_WORKER: dict[str, Any] = {}


def _shareable(url: str) -> bool:
    """Whether another process can open the database at `url` (not an in-memory SQLite)."""
    parsed = make_url(url)
    return not (parsed.get_backend_name() == "sqlite"
                and (parsed.database in (None, "", ":memory:") or "mode=memory" in url))


def _worker_open(url: str) -> None:
    """In a worker process: one raw connection to the database for its chunks."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    _WORKER["connection"] = create_engine(url, poolclass=NullPool).raw_connection()


def _worker_chunk(start: int, length: int, end: int, sizes: list[int],
                  key_ids: frozenset[str]) -> _Chunk:
    """`_check_chunk` in a worker process."""
    connection = _WORKER["connection"]
    cursor = connection.cursor()
    try:
        return _check_chunk(cursor, start, length, end, sizes, key_ids)
    finally:
        cursor.close()
        connection.rollback()  # each chunk in a short read transaction of its own


def _checkpoints(source: SessionSource, keys: Mapping[str, Ed25519PublicKey],
                 witnessed: Sequence[Checkpoint]) -> dict[int, str]:
    """tree size -> root of every signed checkpoint (stored and witnessed). Raises _BrokenError."""
    with _open(source) as s:
        stored = checkpoints(s)
    roots: dict[int, str] = {}
    for cp in stored:
        problem = cp.problem(dict(keys))
        if problem is not None:
            raise _BrokenError(problem)
        roots[cp.tree_size] = cp.root_hash
    for cp in witnessed:
        problem = cp.problem(dict(keys))
        if problem is not None:
            raise _BrokenError(f"the witnessed {problem}")
        if roots.get(cp.tree_size, cp.root_hash) != cp.root_hash:
            raise _BrokenError(f"checkpoint {cp.tree_size} differs from the witnessed one: the "
                          "trail was rewritten and re-signed")
        roots[cp.tree_size] = cp.root_hash
    return roots


def _unsealed(source: SessionSource, keys: Mapping[str, Ed25519PublicKey],
              repeats: Mapping[int, str]) -> int:
    """Check the records not sealed yet; their number. `repeats`: why each unsealed copy
    of another record (by seq) is one. Raises _BrokenError."""
    n, last = 0, None
    while True:
        with _open(source) as s:
            stmt = select(*_COLUMNS, *_SIGNED).where(_R.leaf_index.is_(None))
            if last is not None:
                stmt = stmt.where(_R.seq > last)
            rows = s.execute(stmt.order_by(_R.seq).limit(BATCH_SIZE)).all()
        if not rows:
            return n
        for row in rows:
            problem = record_signature_problem(row, keys) or columns_disagree(
                row.seq, bytes(row.body), row.recorded_at, row.action, row.patient_ref,
                row.agent, row.subtype, _event_id(row.event_id, bytes(row.body)))
            problem = problem or repeats.get(row.seq)
            if problem is not None:
                raise _BrokenError(f"{problem} (not sealed yet)", row.seq)
            n += 1
        last = rows[-1].seq


@dataclass(frozen=True)
class _Copies:
    """The records that repeat another's AuditEvent (copies.py): the first sealed one by
    tree position, and why each unsealed one is a copy, by seq."""

    first_sealed: _BrokenError | None
    unsealed: dict[int, str]

    def before(self, broken: _BrokenError) -> _BrokenError:
        """The first of `broken` and the first sealed copy, in tree order (a problem with
        no position, in a checkpoint, comes first; at one position the record's own)."""
        copy = self.first_sealed
        if (copy is not None and copy.position is not None and broken.position is not None
                and copy.position < broken.position):
            return copy
        return broken


def _copies(source: SessionSource) -> _Copies:
    """Look for records that repeat another record's AuditEvent (inserted copies, which
    pass every check of their own: copies.py)."""
    with _open(source) as s:
        found = copies.repeated(s.connection())
    first: _BrokenError | None = None
    unsealed: dict[int, str] = {}
    for event_id, held in found.items():
        original = held[0]
        for copy in held[1:]:
            reason = copies.copy_reason(copy, original, event_id)
            if copy.unsealed:
                unsealed[copy.seq] = reason
            elif first is None or first.position is None or copy.leaf_index < first.position:
                first = _BrokenError(reason, copy.seq, copy.leaf_index)
    return _Copies(first, unsealed)


def verify(
    source: SessionSource,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    witnessed: Sequence[Checkpoint] = (),
    progress: Progress | None = None,
    jobs: int = 1,
    url: str | None = None,
    signatures: bool = False,
) -> VerifyResult:
    """Check the whole trail (see the module docstring) with `public_keys` (key_id -> key).

    `source` is a session, or a factory of sessions (e.g. `lambda: db.session(write=False)`)
    from which each chunk is read in a short transaction of its own; records sealed while
    verify runs are checked up to the checkpoints read at the start. With `jobs` > 1 and the
    database's `url`, a tree of more than PROCESSES_ABOVE leaves is checked chunk by chunk in
    that many worker processes, each reading committed data on its own connection (so not with a
    session whose changes are uncommitted). `progress(checked, total)` is called after each
    chunk. Each sealed record's key_id must name one of `public_keys`; with `signatures`
    its writer's Ed25519 signature is checked too, as `check_record` (the disclosure log)
    checks a record (see the module docstring for what that costs)."""
    sealed = unsealed = size = 0
    try:
        roots = _checkpoints(source, public_keys, witnessed)
        size = max(roots, default=0)
        with _open(source) as s:
            total = int(s.scalar(select(func.count()).select_from(_R)) or 0)
        repeats = _copies(source)
        walk = _Walk(source, public_keys, roots, progress, total, jobs, url, signatures)
        try:
            walked = walk.run()
        except _BrokenError as broken:
            first = repeats.before(broken)
            sealed = walk.checked if first is broken else int(first.position or 0)
            raise first from None
        sealed = walked
        if repeats.first_sealed is not None and (repeats.first_sealed.position or 0) < walked:
            sealed = int(repeats.first_sealed.position or 0)
            raise repeats.first_sealed
        with _open(source) as s:  # one statement: what is sealed and signed at one moment
            top_leaf, top_checkpoint = s.execute(select(
                select(func.max(_R.leaf_index)).scalar_subquery(),
                select(func.max(AuditCheckpointRow.tree_size)).scalar_subquery())).one()
        # Records sealed while verify ran come with a checkpoint of their own (one seal, one
        # transaction), which the next verify checks; a sealed record that no checkpoint
        # covers was sealed behind the sealer's back (or its checkpoints were deleted).
        if top_leaf is not None and top_leaf >= max(size, top_checkpoint or 0):
            with _open(source) as s:
                seq = s.scalar(select(_R.seq).where(_R.leaf_index == size))
            raise _BrokenError(f"record {seq} at leaf {size} is sealed but no checkpoint covers "
                               f"it: the latest checkpoint is of {size} records (sealed behind "
                               "the sealer's back, or checkpoints were deleted)", seq, size)
        if walked < size:
            missing = (f"the record at leaf {walked} is" if walked + 1 == size
                       else f"the records at leaves {walked} to {size - 1} are")
            raise _BrokenError(f"{missing} missing: the tree ends at leaf {walked - 1} but "
                               f"checkpoint {size} covers {size} records (truncated tail)",
                               None, walked)
        unsealed = _unsealed(source, public_keys, repeats.unsealed)
    except _BrokenError as broken:
        return VerifyResult(False, sealed, broken.seq, broken.reason, broken.position, sealed,
                            0, size)
    count = sealed + unsealed
    waiting = f", {unsealed} waiting for the sealer" if unsealed else ""
    return VerifyResult(True, count, None,
                        f"{count} records intact ({sealed} sealed under checkpoint {size}"
                        f"{waiting})", None, sealed, unsealed, size)

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
  names the records it covers: reordered, or the node edited); records beyond the latest
  checkpoint's size, or missing below it (a truncated tail), are named;
- the records not sealed yet: hash, signature and columns each (the sealer checks the same
  before it seals them).

Verify needs no private key; Ed25519 is checked only for checkpoints and unsealed records,
so it runs at hashing speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from hub.audit import merkle
from hub.audit.checkpoint import Checkpoint
from hub.audit.models import AuditCheckpointRow, AuditRecordRow, AuditTreeNodeRow
from hub.audit.records import (
    columns_agree,
    columns_disagree,
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
            _R.patient_ref, _R.agent, _R.subtype)
_SIGNED = (_R.signature, _R.key_id, _R.prev_hash, _R.hash)
_WALKED = ("seq, leaf_index, body, leaf_hash, recorded_at, action, patient_ref, agent, "
           "subtype")  # the order of _Walk._record's parameters


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
                            row.patient_ref, row.agent, row.subtype)


class _Walk:
    """The sealed records in tree order, rebuilding the tree as they stream by."""

    def __init__(self, source: SessionSource, keys: Mapping[str, Ed25519PublicKey],
                 roots: Mapping[int, str], progress: Progress | None, total: int) -> None:
        self.source, self.keys, self.roots = source, keys, roots
        self.size = max(roots, default=0)  # the walk stops at the largest checkpoint
        self.progress, self.total = progress, total
        self.frontier = merkle.Frontier()
        self.checked = 0
        self.last_checkpoint = 0  # the size of the last checkpoint the walk has matched
        self.made: list[tuple[int, int, bytes]] = []  # nodes rebuilt, not yet compared
        self.seqs: dict[int, int] = {}  # leaf index -> record id, within the batch

    def run(self) -> int:
        """Walk every sealed record; the number walked. Raises _BrokenError."""
        while True:
            with _open(self.source) as s:
                # At the driver: SQLAlchemy's rows and type processing would cost more than
                # all the checks (raw SQLite text for recorded_at: see instant_text).
                cursor = s.connection().connection.cursor()
                try:
                    cursor.execute(f"SELECT {_WALKED} FROM audit_records WHERE leaf_index >= "
                                   f"{int(self.checked)} AND leaf_index < {int(self.size)} "
                                   f"ORDER BY leaf_index LIMIT {int(BATCH_SIZE)}")
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
            if not rows:
                return self.checked
            self.seqs = {}
            for row in rows:
                self._record(*row)
            self._compare_nodes()
            if self.progress is not None:
                self.progress(self.checked, self.total)

    def _record(self, seq: int, leaf_index: int, body: bytes, leaf_hash: str,
                recorded_at: datetime | str, action: str, patient_ref: str | None, agent: str,
                subtype: str) -> None:
        expected = self.checked
        if leaf_index != expected:
            gap = (f"the record at leaf {expected} is" if leaf_index == expected + 1
                   else f"the records at leaves {expected} to {leaf_index - 1} are")
            raise _BrokenError(f"{gap} missing (deleted): the tree jumps from leaf "
                               f"{expected - 1} to record {seq} at leaf {leaf_index}",
                               None, expected)
        body = bytes(body)
        digest = sha256(b"\x00" + body).digest()
        if digest.hex() != leaf_hash:
            raise _BrokenError(f"record {seq} was edited: its content does not match its hash",
                               seq, expected)
        if not columns_agree(body, instant_text(recorded_at), action, patient_ref, agent,
                             subtype):
            at = datetime.fromisoformat(recorded_at) if isinstance(recorded_at, str) \
                else recorded_at
            # The slow, exact comparison decides (and says what differs).
            problem = columns_disagree(seq, body, at.replace(tzinfo=at.tzinfo or UTC), action,
                                       patient_ref, agent, subtype)
            if problem is not None:
                raise _BrokenError(problem, seq, expected)
        self.seqs[expected] = seq
        self.made.extend(self.frontier.push(digest))
        self.checked = expected + 1
        root = self.roots.get(self.checked)
        if root is not None:
            if self.frontier.root().hex() != root:
                self._compare_nodes()
                self._localise(self.last_checkpoint, self.checked)
            self.last_checkpoint = self.checked

    def _compare_nodes(self) -> None:
        """Compare the nodes rebuilt since the last comparison with the stored ones."""
        made, self.made = self.made, []
        if not made:
            return
        by_level: dict[int, list[tuple[int, bytes]]] = {}
        for level, index, digest in made:
            by_level.setdefault(level, []).append((index, digest))
        where = " OR ".join(f"(level = {int(level)} AND idx BETWEEN {int(items[0][0])} AND "
                            f"{int(items[-1][0])})" for level, items in by_level.items())
        with _open(self.source) as s:
            cursor = s.connection().connection.cursor()
            try:
                cursor.execute(f"SELECT level, idx, hash FROM audit_tree_nodes WHERE {where}")
                stored = {(lv, i): bytes(h) for lv, i, h in cursor.fetchall()}
            finally:
                cursor.close()
        # The first broken leaf is in the mismatching node that ends first (the lowest one
        # of those that end there): the smallest range that holds it.
        bad = [((index + 1) << level, level, index) for level, index, digest in made
               if stored.get((level, index)) != digest]
        if bad:
            after, level, index = min(bad)
            start, end = index << level, after - 1
            what = "is missing" if (level, index) not in stored else "does not match them"
            raise _BrokenError(f"the stored tree node over leaves {start} to {end} {what}: those "
                          "records were reordered or moved, or the node was edited",
                          self.seqs.get(start), start)

    def _localise(self, start: int, end: int) -> None:
        """The records of leaves [start, end) do not give their checkpoint's root: name the
        first whose signature fails, else say what is left."""
        with _open(self.source) as s:
            rows = s.execute(select(_R.seq, _R.leaf_index, _R.body, _R.leaf_hash, *_SIGNED)
                             .where(_R.leaf_index >= start, _R.leaf_index < end)
                             .order_by(_R.leaf_index)).all()
        for row in rows:
            problem = record_signature_problem(row, self.keys)
            if problem is not None:
                raise _BrokenError(problem, row.seq, row.leaf_index)
        raise _BrokenError(f"the records at leaves {start} to {end - 1} do not give checkpoint "
                      f"{end}'s root: records were inserted, deleted, reordered or moved "
                      "among them", rows[0].seq if rows else None, start)


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


def _unsealed(source: SessionSource, keys: Mapping[str, Ed25519PublicKey]) -> int:
    """Check the records not sealed yet; their number. Raises _BrokenError."""
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
                row.agent, row.subtype)
            if problem is not None:
                raise _BrokenError(f"{problem} (not sealed yet)", row.seq)
            n += 1
        last = rows[-1].seq


def verify(
    source: SessionSource,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    witnessed: Sequence[Checkpoint] = (),
    progress: Progress | None = None,
) -> VerifyResult:
    """Check the whole trail (see the module docstring) with `public_keys` (key_id -> key).

    `source` is a session, or a factory of sessions (e.g. `lambda: db.session(write=False)`)
    from which each batch is read in a short transaction of its own; records sealed while
    verify runs are checked up to the checkpoints read at the start. `progress(checked,
    total)` is called after each batch of sealed records."""
    sealed = unsealed = size = 0
    try:
        roots = _checkpoints(source, public_keys, witnessed)
        size = max(roots, default=0)
        with _open(source) as s:
            total = int(s.scalar(select(func.count()).select_from(_R)) or 0)
        walk = _Walk(source, public_keys, roots, progress, total)
        try:
            walked = walk.run()
        except _BrokenError:
            sealed = walk.checked
            raise
        sealed = walked
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
        unsealed = _unsealed(source, public_keys)
    except _BrokenError as broken:
        return VerifyResult(False, sealed, broken.seq, broken.reason, broken.position, sealed,
                            0, size)
    count = sealed + unsealed
    waiting = f", {unsealed} waiting for the sealer" if unsealed else ""
    return VerifyResult(True, count, None,
                        f"{count} records intact ({sealed} sealed under checkpoint {size}"
                        f"{waiting})", None, sealed, unsealed, size)

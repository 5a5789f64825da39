"""The stored tree: its complete nodes, its checkpoints, and proofs read from them.

Leaves are audit_records.leaf_hash by leaf_index; nodes of level >= 1 are audit_tree_nodes.
A proof asks merkle.py which nodes it needs, reads them in one query, computes, and checks
itself against the signed checkpoint before it is handed out: a damaged stored node gives
an error, never a wrong proof.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from hub.audit import merkle
from hub.audit.checkpoint import Checkpoint
from hub.audit.models import AuditCheckpointRow, AuditRecordRow, AuditTreeNodeRow

T = TypeVar("T")
_CP = AuditCheckpointRow
_R = AuditRecordRow
_N = AuditTreeNodeRow


class TreeError(Exception):
    """The stored tree cannot answer: a node or record is missing or does not fit."""


def _checkpoint(row: AuditCheckpointRow) -> Checkpoint:
    return Checkpoint(row.tree_size, row.root_hash, row.signed_at, row.key_id, row.signature)


_LATEST = select(_CP.tree_size, _CP.root_hash, _CP.signed_at, _CP.key_id, _CP.signature) \
    .order_by(_CP.tree_size.desc()).limit(1)


def latest_checkpoint(session: Session) -> Checkpoint | None:
    """The checkpoint of the largest tree, or None before the first seal."""
    row = session.connection().execute(_LATEST).first()
    return Checkpoint(*row) if row is not None else None


def checkpoint_at(session: Session, tree_size: int) -> Checkpoint | None:
    """The checkpoint of the tree of `tree_size` leaves, if one was signed."""
    row = session.get(_CP, tree_size)
    return _checkpoint(row) if row is not None else None


def checkpoints(session: Session) -> list[Checkpoint]:
    """Every checkpoint, smallest tree first."""
    return [_checkpoint(r) for r in session.scalars(select(_CP).order_by(_CP.tree_size))]


def fetch_nodes(session: Session, keys: Iterable[tuple[int, int]]
                ) -> dict[tuple[int, int], bytes]:
    """The stored hashes of the nodes `keys` (level 0: the records' leaf hashes); absent ones
    are left out."""
    wanted = set(keys)
    leaves = sorted(i for level, i in wanted if level == 0)
    by_level: dict[int, list[int]] = {}
    for level, i in sorted(wanted):
        if level > 0:
            by_level.setdefault(level, []).append(i)
    out: dict[tuple[int, int], bytes] = {}
    conn = session.connection()
    # SQL written out (the keys are ints): building these statements with SQLAlchemy's
    # expression language costs more than running them. One index search per level: a
    # row-value IN would make SQLite scan the table.
    if leaves:
        listed = ",".join(str(int(i)) for i in leaves)
        for index, digest in conn.exec_driver_sql(
                "SELECT leaf_index, leaf_hash FROM audit_records "
                f"WHERE leaf_index IN ({listed})"):
            if index is not None and digest is not None:
                out[(0, int(index))] = bytes.fromhex(digest)
    if by_level:
        where = " OR ".join(f"(level = {int(level)} AND idx IN "
                            f"({','.join(str(int(i)) for i in indexes)}))"
                            for level, indexes in by_level.items())
        for level, index, digest in conn.exec_driver_sql(
                f"SELECT level, idx, hash FROM audit_tree_nodes WHERE {where}"):
            out[(int(level), int(index))] = bytes(digest)
    return out


def from_stored(session: Session, compute: Callable[[merkle.NodeGetter], T]) -> T:
    """`compute(getter)` with the nodes it needs read in one query; raises TreeError when
    one is not stored."""
    nodes = fetch_nodes(session, merkle.needed_nodes(compute))

    def get(level: int, index: int) -> bytes:
        try:
            return nodes[(level, index)]
        except KeyError:
            raise TreeError(f"tree node ({level}, {index}) is not stored") from None

    return compute(get)


_LEAF_OF = select(_R.leaf_index, _R.leaf_hash).where(_R.seq == bindparam("seq"))


@dataclass(frozen=True)
class InclusionProof:
    """Record `seq` is leaf `leaf_index` (hash `leaf_hash`) of the tree of `checkpoint`."""

    seq: int
    leaf_index: int
    leaf_hash: bytes
    path: list[bytes]
    checkpoint: Checkpoint

    def to_json(self) -> dict[str, object]:
        """The proof as JSON, checkpoint included (RFC 9162 order of the path: leaf up)."""
        return {"record": self.seq, "leaf_index": self.leaf_index,
                "leaf_hash": self.leaf_hash.hex(), "tree_size": self.checkpoint.tree_size,
                "root_hash": self.checkpoint.root_hash,
                "inclusion_path": [p.hex() for p in self.path],
                "checkpoint": self.checkpoint.to_json()}


def inclusion_proof(session: Session, seq: int, checkpoint: Checkpoint | None = None
                    ) -> InclusionProof:
    """The proof that record `seq` is in the tree of `checkpoint` (default the latest).
    Raises TreeError when the record is missing, not sealed under that checkpoint yet, or the
    stored tree does not give the checkpoint's root."""
    checkpoint = checkpoint or latest_checkpoint(session)
    row = session.connection().execute(_LEAF_OF, {"seq": seq}).first()
    if row is None:
        raise TreeError(f"there is no record {seq}")
    if checkpoint is None or row.leaf_index is None or row.leaf_index >= checkpoint.tree_size:
        raise TreeError(f"record {seq} is not sealed yet: the sealer has not reached it")
    index, size = int(row.leaf_index), checkpoint.tree_size
    path = from_stored(session, lambda get: merkle.inclusion_path(get, index, size))
    leaf = bytes.fromhex(str(row.leaf_hash))
    if merkle.root_from_inclusion(index, size, leaf, path) != bytes.fromhex(checkpoint.root_hash):
        raise TreeError(f"the stored tree does not prove record {seq} under checkpoint {size}: "
                        "run `hub audit verify`")
    return InclusionProof(seq, index, leaf, path, checkpoint)


def consistency_proof(session: Session, old: Checkpoint, new: Checkpoint) -> list[bytes]:
    """The proof that the tree of `old` is a prefix of the tree of `new`; raises TreeError
    when the stored tree does not give one that holds."""
    if old.tree_size > new.tree_size:
        raise TreeError(f"checkpoint {old.tree_size} is larger than {new.tree_size}")
    proof = from_stored(
        session, lambda get: merkle.consistency_path(get, old.tree_size, new.tree_size))
    if not merkle.consistent(old.tree_size, new.tree_size, bytes.fromhex(old.root_hash),
                             bytes.fromhex(new.root_hash), proof):
        raise TreeError(f"checkpoint {old.tree_size} is not consistent with checkpoint "
                        f"{new.tree_size}: the trail was rewritten")
    return proof

"""Merkle tree hashing and proofs as RFC 9162 (Certificate Transparency 2.0) defines them; pure.

leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right); the tree over n leaves
splits at k, the largest power of two below n (RFC 9162 section 2.1.1). A node is named
(level, index): level 0 are the leaves, node (L, i) covers leaves [i * 2^L, (i + 1) * 2^L).
Such complete nodes never change as the tree grows, so they can be stored once and read back;
every subtree a proof needs is one of them or is made of a few of them (`subtree`).

Proof functions take `node(level, index) -> bytes`, a getter of complete nodes, so the caller
decides where nodes come from (a dict, a database query); `needed_nodes` lists the nodes a
computation will ask for, so they can be fetched in one query first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

NodeGetter = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree (RFC 9162: the hash of the empty string)."""


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes, by the recursive definition (for tests and small trees)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


class Frontier:
    """The right edge of a growing tree: one complete subtree per set bit of its size
    (a compact range). `push` adds a leaf hash and returns the complete nodes it completed,
    as (level, index, hash) with level >= 1; `root` is the tree's root now."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """A frontier of a tree of `size` leaves from its complete subtrees' hashes, largest
        (leftmost) first (see `frontier_nodes`)."""
        levels = [lv for lv in range(size.bit_length() - 1, -1, -1) if size >> lv & 1]
        if len(levels) != len(hashes):
            raise ValueError(f"a tree of {size} leaves has {len(levels)} frontier nodes, "
                             f"not {len(hashes)}")
        self.size = size
        self._stack: list[tuple[int, bytes]] = list(zip(levels, hashes, strict=True))

    def push(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append one leaf hash; the nodes of level >= 1 it completes, lowest first."""
        made: list[tuple[int, int, bytes]] = []
        level, digest = 0, leaf
        stack = self._stack
        while stack and stack[-1][0] == level:
            _lv, left = stack.pop()
            digest = node_hash(left, digest)
            level += 1
            made.append((level, self.size >> level, digest))
        stack.append((level, digest))
        self.size += 1
        return made

    def root(self) -> bytes:
        """The root of the tree of `size` leaves."""
        if not self._stack:
            return EMPTY_ROOT
        return self.root_over(self._stack[-1][1], self._stack[:-1])

    def root_over(self, right: bytes,
                  stack: Sequence[tuple[int, bytes]] | None = None) -> bytes:
        """The root of this tree's leaves followed by a run whose own frontier folds to
        `right` (a run smaller than this tree's smallest frontier node): the root is the
        right fold of all frontier nodes, so this one's fold over `right`."""
        digest = right
        for _level, left in reversed(self._stack if stack is None else stack):
            digest = node_hash(left, digest)
        return digest


def frontier_nodes(size: int) -> list[tuple[int, int]]:
    """The complete nodes (level, index) whose hashes make the frontier of a tree of `size`
    leaves, largest first."""
    out, start = [], 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


def subtree(node: NodeGetter, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range that RFC 9162's recursion produces: `start` a multiple
    of the largest power of two not above end - start. Complete aligned ranges are one node;
    others split like the tree does."""
    n = end - start
    if n <= 0:
        raise ValueError(f"empty range {start}..{end}")
    if n & (n - 1) == 0 and start % n == 0:
        return node(n.bit_length() - 1, start // n)
    k = _split(n)
    return node_hash(subtree(node, start, start + k), subtree(node, start + k, end))


def inclusion_path(node: NodeGetter, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 section 2.1.3.1, from the leaf up."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    path: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:  # collect top-down, then reverse: the RFC's order is bottom-up
        k = _split(end - start)
        if m < k:
            path.append(subtree(node, start + k, end))
            end = start + k
        else:
            path.append(subtree(node, start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The root that `path` proves `leaf` at `index` under (RFC 9162 2.1.3.2), or None when the
    path has the wrong length for the position."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def consistency_path(node: NodeGetter, old: int, new: int) -> list[bytes]:
    """PROOF(old, D[0:new]) of RFC 9162 section 2.1.4.1 (empty when old is 0 or old == new)."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from {old} to {new}")
    if old == 0 or old == new:
        return []
    proof: list[bytes] = []

    def sub(m: int, start: int, end: int, whole: bool) -> None:
        n = end - start
        if m == n:
            if not whole:
                proof.append(subtree(node, start, end))
            return
        k = _split(n)
        if m <= k:
            sub(m, start, start + k, whole)
            proof.append(subtree(node, start + k, end))
        else:
            sub(m - k, start + k, end, False)
            proof.append(subtree(node, start, start + k))

    sub(old, 0, new, True)
    return proof


def consistent(old: int, new: int, old_root: bytes, new_root: bytes,
               proof: Sequence[bytes]) -> bool:
    """Whether `proof` shows the tree of `old` leaves (old_root) is a prefix of the tree of
    `new` leaves (new_root): RFC 9162 section 2.1.4.2."""
    if not 0 <= old <= new:
        return False
    if old == new:
        return not proof and old_root == new_root
    if old == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is itself a node of the proof
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


def needed_nodes(compute: Callable[[NodeGetter], object]) -> set[tuple[int, int]]:
    """The (level, index) of every node `compute(getter)` asks for, found by running it with a
    getter that records and returns placeholder hashes."""
    asked: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        asked.add((level, index))
        return b"\x00" * 32

    compute(record)
    return asked


def nodes_of_leaves(leaves: Iterable[bytes]) -> dict[tuple[int, int], bytes]:
    """Every complete node (level >= 0) of the tree over `leaves` (for tests)."""
    out: dict[tuple[int, int], bytes] = {}
    frontier = Frontier()
    for i, leaf in enumerate(leaves):
        out[(0, i)] = leaf
        for level, index, digest in frontier.push(leaf):
            out[(level, index)] = digest
    return out

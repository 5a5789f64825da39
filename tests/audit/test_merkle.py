"""RFC 9162 hashing and proofs (pure): roots, the frontier of a growing tree, inclusion and
consistency proofs, each checked against the recursive definitions of the RFC."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_path,
    consistent,
    frontier_nodes,
    inclusion_path,
    leaf_hash,
    needed_nodes,
    node_hash,
    nodes_of_leaves,
    root_from_inclusion,
    root_of,
)


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"record {i}".encode()) for i in range(n)]


def rfc_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) exactly as RFC 9162 2.1.3.1 writes it."""
    if len(d) == 1:
        return []
    k = 1 << ((len(d) - 1).bit_length() - 1)
    if m < k:
        return [*rfc_path(m, d[:k]), root_of(d[k:])]
    return [*rfc_path(m - k, d[k:]), root_of(d[:k])]


def rfc_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) exactly as RFC 9162 2.1.4.1 writes it."""
    n = len(d)
    if m == n:
        return [] if b else [root_of(d)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*rfc_subproof(m, d[:k], b), root_of(d[k:])]
    return [*rfc_subproof(m - k, d[k:], False), root_of(d[:k])]


def test_hashes_are_domain_separated_as_the_rfc_says() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    left, right = b"a" * 32, b"b" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert root_of([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    one, two, three = leaves(3)
    assert root_of([one, two, three]) == node_hash(node_hash(one, two), three)


def test_known_root_of_the_certificate_transparency_test_vector() -> None:
    """The 8-leaf tree of the CT reference tests (certificate-transparency-go merkle tests)."""
    data = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243",
                                       "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
    root = root_of([leaf_hash(x) for x in data])
    assert root.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


@given(st.integers(min_value=0, max_value=300))
def test_frontier_root_and_nodes_match_the_recursive_definition(n: int) -> None:
    ls = leaves(n)
    frontier = Frontier()
    for i, leaf in enumerate(ls):
        frontier.push(leaf)
        if i % 37 == 0:
            assert frontier.root() == root_of(ls[:i + 1])
    assert frontier.root() == root_of(ls)
    nodes = nodes_of_leaves(ls)
    for level, index in nodes:
        width = 1 << level
        assert nodes[(level, index)] == root_of(ls[index * width:(index + 1) * width])
    # a frontier rebuilt from stored nodes continues the same tree
    rebuilt = Frontier(n, [nodes[key] for key in frontier_nodes(n)])
    more = leaves(n + 5)[n:]
    for leaf in more:
        rebuilt.push(leaf)
    assert rebuilt.root() == root_of(ls + more)


def test_a_frontier_needs_one_hash_per_set_bit() -> None:
    assert frontier_nodes(13) == [(3, 0), (2, 2), (0, 12)]
    with pytest.raises(ValueError, match="3 frontier nodes"):
        Frontier(13, [b"x" * 32])


@given(st.integers(min_value=1, max_value=200), st.data())
def test_inclusion_proofs_are_the_rfcs_and_verify(n: int, data: st.DataObject) -> None:
    ls = leaves(n)
    nodes = nodes_of_leaves(ls)
    m = data.draw(st.integers(min_value=0, max_value=n - 1))
    path = inclusion_path(lambda lv, i: nodes[(lv, i)], m, n)
    assert path == rfc_path(m, ls)
    assert root_from_inclusion(m, n, ls[m], path) == root_of(ls)
    # another leaf, another position or a shortened path proves nothing
    other = (m + 1) % n
    if other != m:
        assert root_from_inclusion(other, n, ls[m], path) != root_of(ls)
    assert root_from_inclusion(m, n, leaf_hash(b"forged"), path) != root_of(ls)
    if path:
        assert root_from_inclusion(m, n, ls[m], path[:-1]) != root_of(ls)


@given(st.integers(min_value=1, max_value=160), st.data())
def test_consistency_proofs_are_the_rfcs_and_verify(n: int, data: st.DataObject) -> None:
    ls = leaves(n)
    nodes = nodes_of_leaves(ls)
    old = data.draw(st.integers(min_value=1, max_value=n))
    proof = consistency_path(lambda lv, i: nodes[(lv, i)], old, n)
    assert proof == ([] if old == n else rfc_subproof(old, ls, True))
    assert consistent(old, n, root_of(ls[:old]), root_of(ls), proof)
    if old < n:
        # a rewritten history (one old leaf changed) is not consistent with the new tree
        forged = [*ls[:old - 1], leaf_hash(b"forged")]
        assert not consistent(old, n, root_of(forged), root_of(ls), proof)
        assert not consistent(old, n, root_of(ls[:old]), root_of(ls), [])


def test_needed_nodes_lists_what_a_proof_reads() -> None:
    asked = needed_nodes(lambda get: inclusion_path(get, 5, 13))
    assert asked == {(0, 4), (1, 3), (2, 0), (2, 2), (0, 12)}

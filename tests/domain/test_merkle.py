"""domain.ledger.merkle against RFC 6962 section 2.1 read literally, and a known vector.

The reference below is the RFC's recursive text (MTH, PATH, PROOF/SUBPROOF) transcribed
with slices, slow and obviously right; the module under test is the fast one. Every tree
size 0..70, every leaf index and every old size is compared, and every proof is then
tampered with in each way a forger could (an element, the leaf, the index, the sizes, the
roots) to show the verifiers say no.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.ledger import merkle
from domain.ledger.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

SIZES = range(71)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- RFC 6962 section 2.1, as written (the leaves given here are already leaf hashes) ---


def k_for(n: int) -> int:
    """'the largest power of two smaller than n (i.e., k < n <= 2k)'."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return sha256(b"")
    if len(d) == 1:
        return d[0]
    k = k_for(len(d))
    return sha256(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = k_for(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = k_for(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def proof(m: int, d: list[bytes]) -> list[bytes]:
    return subproof(m, d, True)


# --- fixtures ---

LEAVES = [sha256(b"\x00" + i.to_bytes(4, "big")) for i in range(max(SIZES) + 1)]
ROOTS = [mth(LEAVES[:n]) for n in range(len(LEAVES) + 1)]


def flipped(h: bytes, at: int = 0) -> bytes:
    return h[:at] + bytes([h[at] ^ 1]) + h[at + 1 :]


def test_the_reference_is_not_the_module_under_test() -> None:
    """A sanity check of the reference itself: the RFC's three-leaf shape, by hand."""
    a, b, c = LEAVES[:3]
    assert mth([a, b, c]) == sha256(b"\x01" + sha256(b"\x01" + a + b) + c)
    assert path(2, [a, b, c]) == [sha256(b"\x01" + a + b)]
    assert proof(2, [a, b, c]) == [c]


def test_the_rfc_6962_eight_leaf_vector() -> None:
    inputs = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
              bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]  # fmt: skip
    leaves = [sha256(b"\x00" + d) for d in inputs]
    expected = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    assert mth(leaves) == expected
    assert root_of(leaves) == expected
    frontier = Frontier()
    frontier.extend(leaves)
    assert frontier.root() == expected


def test_the_empty_tree() -> None:
    assert EMPTY_ROOT == sha256(b"")
    assert root_of([]) == EMPTY_ROOT
    assert Frontier().root() == EMPTY_ROOT and Frontier().size == 0


def test_node_hash_is_the_rfc_interior_node() -> None:
    assert node_hash(LEAVES[0], LEAVES[1]) == sha256(b"\x01" + LEAVES[0] + LEAVES[1])


@pytest.mark.parametrize("n", SIZES)
def test_roots_match_the_rfc_at_every_size(n: int) -> None:
    assert root_of(LEAVES[:n]) == ROOTS[n]


def test_the_frontier_gives_the_root_at_every_size_of_one_pass() -> None:
    frontier = Frontier()
    assert frontier.root() == ROOTS[0]
    for n, leaf in enumerate(LEAVES, start=1):
        frontier.append(leaf)
        assert (frontier.size, frontier.root()) == (n, ROOTS[n])
        assert frontier.root() == ROOTS[n], "root() must not consume the frontier"


def test_extend_is_append_and_copy_is_independent() -> None:
    streamed = Frontier()
    streamed.extend(LEAVES[:37])
    twin = streamed.copy()
    streamed.extend(iter(LEAVES[37:]))
    assert (twin.size, twin.root()) == (37, ROOTS[37])
    assert (streamed.size, streamed.root()) == (len(LEAVES), ROOTS[-1])
    twin.append(LEAVES[37])
    assert twin.root() == ROOTS[38] and streamed.root() == ROOTS[-1]


def test_an_iterator_that_fails_leaves_a_consistent_frontier() -> None:
    def failing():  # type: ignore[no-untyped-def]
        yield from LEAVES[:5]
        raise OSError("the store went away")

    frontier = Frontier()
    with pytest.raises(OSError):
        frontier.extend(failing())
    assert (frontier.size, frontier.root()) == (5, ROOTS[5])


@pytest.mark.parametrize("n", SIZES)
def test_a_resumed_frontier_goes_on_as_if_never_stopped(n: int) -> None:
    """What a checkpoint records (size, roots) is all the next one needs of the old leaves."""
    before = Frontier()
    before.extend(LEAVES[:n])
    assert len(before.roots) == n.bit_count()
    resumed = Frontier.resume(before.size, before.roots)
    resumed.extend(LEAVES[n:])
    assert (resumed.size, resumed.root()) == (len(LEAVES), ROOTS[-1])


@pytest.mark.parametrize(
    ("size", "roots"),
    [
        (3, [LEAVES[0]]),
        (4, [LEAVES[0], LEAVES[1]]),
        (0, [LEAVES[0]]),
        (-1, []),
        (1, [LEAVES[0][:31]]),
        (1, [LEAVES[0].hex()]),
    ],
)
def test_a_frontier_of_the_wrong_shape_is_not_resumed(size: int, roots: list[bytes]) -> None:
    with pytest.raises(ValueError):
        Frontier.resume(size, roots)


@pytest.mark.parametrize("n", range(1, max(SIZES) + 1))
def test_inclusion_proofs_at_every_size_and_index(n: int) -> None:
    for m in range(n):
        made = inclusion_proof(LEAVES, m, n)
        assert made == path(m, LEAVES[:n]), (m, n)
        assert verify_inclusion(LEAVES[m], m, n, made, ROOTS[n])
        assert_inclusion_tampering_fails(m, n, made)


def assert_inclusion_tampering_fails(m: int, n: int, good: list[bytes]) -> None:
    leaf, root = LEAVES[m], ROOTS[n]
    for i in range(len(good)):
        assert not verify_inclusion(leaf, m, n, [*good[:i], flipped(good[i]), *good[i + 1 :]], root)
        assert not verify_inclusion(leaf, m, n, good[:i] + good[i + 1 :], root)  # one dropped
    assert not verify_inclusion(leaf, m, n, [*good, LEAVES[0]], root)  # one too many
    assert not verify_inclusion(flipped(leaf, 31), m, n, good, root)
    assert not verify_inclusion(leaf, m, n, good, flipped(root))
    for other in {m - 1, m + 1, n, -1} - {m}:
        assert not verify_inclusion(leaf, other, n, good, root), ("index", other)
    # Another size with *its own* root (a root is never claimed without its size).
    for other in range(max(m + 1, n - 3), min(n + 4, len(ROOTS))):
        if other != n:
            assert not verify_inclusion(leaf, m, other, good, ROOTS[other]), ("size", other)


@pytest.mark.parametrize("n", SIZES)
def test_consistency_proofs_at_every_pair_of_sizes(n: int) -> None:
    for m in range(n + 1):
        made = consistency_proof(LEAVES, m, n)
        assert made == ([] if m in (0, n) else proof(m, LEAVES[:n])), (m, n)
        assert verify_consistency(m, n, ROOTS[m], ROOTS[n], made), (m, n)
        if 0 < m < n:
            assert_consistency_tampering_fails(m, n, made)


def assert_consistency_tampering_fails(m: int, n: int, good: list[bytes]) -> None:
    old, new = ROOTS[m], ROOTS[n]
    for i in range(len(good)):
        assert not verify_consistency(m, n, old, new, [*good[:i], flipped(good[i]), *good[i + 1 :]])
        assert not verify_consistency(m, n, old, new, good[:i] + good[i + 1 :])
    assert not verify_consistency(m, n, old, new, [*good, LEAVES[0]])
    assert not verify_consistency(m, n, flipped(old), new, good)
    assert not verify_consistency(m, n, old, flipped(new), good)
    assert not verify_consistency(m, n, old, new, [])
    for other in range(max(1, m - 3), min(m + 4, n + 1)):
        if other != m:
            assert not verify_consistency(other, n, ROOTS[other], new, good), ("old size", other)
    for other in range(max(m, n - 3), min(n + 4, len(ROOTS))):
        if other != n:
            assert not verify_consistency(m, other, old, ROOTS[other], good), ("new size", other)
    assert not verify_consistency(n, m, new, old, good)


def test_consistency_edges() -> None:
    """Equal sizes: equal roots and no proof. Old size 0: the empty root and no proof."""
    assert verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    assert not verify_consistency(5, 5, ROOTS[5], ROOTS[6], [])
    assert not verify_consistency(5, 5, ROOTS[5], ROOTS[5], [ROOTS[5]])
    assert verify_consistency(0, 9, EMPTY_ROOT, ROOTS[9], [])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(0, 9, ROOTS[9], ROOTS[9], [])
    assert not verify_consistency(0, 9, EMPTY_ROOT, ROOTS[9], [ROOTS[9]])
    assert not verify_consistency(-1, 9, EMPTY_ROOT, ROOTS[9], [])
    assert not verify_consistency(True, 9, ROOTS[1], ROOTS[9], proof(1, LEAVES[:9]))  # type: ignore[arg-type]
    assert verify_consistency(1, 9, ROOTS[1], ROOTS[9], proof(1, LEAVES[:9]))


def test_verifiers_refuse_what_is_not_a_32_byte_hash() -> None:
    good = inclusion_proof(LEAVES, 3, 10)
    assert not verify_inclusion(LEAVES[3], 3, 10, [*good[:-1], good[-1] + b"\x00"], ROOTS[10])
    assert not verify_inclusion(LEAVES[3][:31], 3, 10, good, ROOTS[10])
    assert not verify_inclusion(LEAVES[3], 3, 10, good, ROOTS[10].hex())  # type: ignore[arg-type]
    assert not verify_inclusion(LEAVES[0], 0, 0, [], EMPTY_ROOT)
    hex_path = [good[0].hex(), *good[1:]]
    assert not verify_inclusion(LEAVES[3], 3, 10, hex_path, ROOTS[10])  # type: ignore[list-item]
    old = consistency_proof(LEAVES, 3, 10)
    assert not verify_consistency(3, 10, ROOTS[3], ROOTS[10], [old[0].hex(), *old[1:]])  # type: ignore[list-item]


@pytest.mark.parametrize(("index", "size"), [(0, 0), (-1, 5), (5, 5), (0, len(LEAVES) + 1)])
def test_inclusion_proof_refuses_sizes_outside_the_leaves(index: int, size: int) -> None:
    with pytest.raises(ValueError):
        inclusion_proof(LEAVES, index, size)


@pytest.mark.parametrize(("old", "new"), [(-1, 5), (6, 5), (0, len(LEAVES) + 1)])
def test_consistency_proof_refuses_sizes_outside_the_leaves(old: int, new: int) -> None:
    with pytest.raises(ValueError):
        consistency_proof(LEAVES, old, new)


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = hashlib.sha256

    def counting(data: bytes = b"") -> Any:
        calls[0] += 1
        return real(data)

    monkeypatch.setattr(merkle, "_sha256", counting)
    return calls


def test_appends_cost_one_hash_amortised(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_hashes(monkeypatch)
    frontier = Frontier()
    frontier.extend(LEAVES[:1] * 5000)
    frontier.append(LEAVES[1])
    assert calls[0] == 5001 - bin(5001).count("1")


def test_proofs_hash_each_leaf_at_most_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """O(n) per proof: the sibling subtrees are disjoint, so quadratic work would show."""
    leaves = LEAVES[:1] * 5000
    calls = count_hashes(monkeypatch)
    for index in (0, 2047, 2048, 4999):
        calls[0] = 0
        inclusion_proof(leaves, index, 5000)
        assert calls[0] < 5000, index
    for old in (1, 2048, 3333, 4999):
        calls[0] = 0
        consistency_proof(leaves, old, 5000)
        assert calls[0] < 5000 + 5000, old


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=600),
    data=st.data(),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_bigger_random_trees(size: int, data: st.DataObject, seed: int) -> None:
    rng = random.Random(seed)
    leaves = [rng.randbytes(32) for _ in range(size)]
    root = mth(leaves)
    frontier = Frontier()
    frontier.extend(leaves)
    assert root_of(leaves) == frontier.root() == root
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    made = inclusion_proof(leaves, index, size)
    assert made == path(index, leaves)
    assert verify_inclusion(leaves[index], index, size, made, root)
    old = data.draw(st.integers(min_value=0, max_value=size), label="old size")
    made = consistency_proof(leaves, old, size)
    assert verify_consistency(old, size, mth(leaves[:old]), root, made)
    if 0 < old < size:
        assert made == proof(old, leaves)
        assert not verify_consistency(old, size, mth(leaves[: old - 1] + leaves[old:][:1]),
                                      root, made)  # fmt: skip

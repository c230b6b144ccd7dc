"""RFC 6962 Merkle trees over leaf hashes: roots, inclusion and consistency proofs.

The leaves are already RFC 6962 leaf hashes (``chain.event_digest`` is SHA-256 of 0x00 and
the leaf input), so this module only ever hashes interior nodes, ``SHA-256(0x01 || l || r)``;
the empty tree's root is ``SHA-256("")``. Keeping to the RFC's shapes rather than any
simpler tree is what lets an auditor check our heads and proofs with any RFC 6962 or
RFC 9162 verifier, or with the few lines of scripts/check_ledger_proof.py.

Two kinds of caller, two ways to fail: the generators (``inclusion_proof``,
``consistency_proof``) are called by our own code with sizes it chose, so a size outside
the leaves is a bug and raises ValueError; the verifiers are fed what an untrusted proof
file claims, so every bad input, sizes included, is simply ``False``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final

_sha256 = hashlib.sha256  # one module-level name, so a test can count the hashes

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""The root of the tree of no leaves (RFC 6962 section 2.1: MTH({}) = SHA-256())."""


def node_hash(left: bytes, right: bytes) -> bytes:
    """An interior node; the 0x01 prefix keeps it from ever passing for a leaf."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two below ``n`` (n > 1): where RFC 6962 splits a tree of n."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The roots of the perfect subtrees a tree of ``size`` leaves decomposes into.

    One root per set bit of the size, biggest (leftmost) first: all a stream needs to know
    to give the root at any size, in O(log n) memory. An append merges equal-sized
    neighbours the way a binary counter carries, so it costs one hash amortised.
    """

    __slots__ = ("_roots", "_size")

    def __init__(self) -> None:
        self._roots: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        roots, carry, sha256 = self._roots, self._size, _sha256
        while carry & 1:
            leaf_hash = sha256(b"\x01" + roots.pop() + leaf_hash).digest()
            carry >>= 1
        roots.append(leaf_hash)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """`append` with the lookups hoisted: a verifier feeds it millions of leaves."""
        roots, size, sha256 = self._roots, self._size, _sha256
        pop, push = roots.pop, roots.append
        try:
            for leaf_hash in leaf_hashes:
                carry = size
                while carry & 1:
                    leaf_hash = sha256(b"\x01" + pop() + leaf_hash).digest()
                    carry >>= 1
                push(leaf_hash)
                size += 1
        finally:  # a failing iterator leaves the leaves it gave, and a size that agrees
            self._size = size

    def root(self) -> bytes:
        """MTH of every leaf so far; the frontier itself is left as it was.

        Folding from the right is the RFC's recursion: the left part of a tree of n is the
        perfect subtree of the highest bit of n, the right part the tree of the rest.
        """
        if not self._roots:
            return EMPTY_ROOT
        roots, sha256 = self._roots, _sha256
        acc = roots[-1]
        for i in range(len(roots) - 2, -1, -1):
            acc = sha256(b"\x01" + roots[i] + acc).digest()
        return acc

    def copy(self) -> Frontier:
        twin = Frontier()
        twin._roots = list(self._roots)
        twin._size = self._size
        return twin

    @property
    def roots(self) -> list[bytes]:
        """The perfect subtree roots, biggest first: what `resume` continues from."""
        return list(self._roots)

    @classmethod
    def resume(cls, size: int, roots: Sequence[bytes]) -> Frontier:
        """The frontier of a tree of ``size`` leaves from its recorded roots, so a
        checkpoint continues where the last one stopped without rereading its leaves."""
        if size < 0 or len(roots) != bin(size).count("1") or any(len(r) != 32 for r in roots):
            raise ValueError(f"{len(roots)} roots are not the frontier of {size} leaves")
        frontier = cls()
        frontier._roots = list(roots)
        frontier._size = size
        return frontier


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of the leaves, level by level: an odd last node rises to the next level unchanged.

    Promoting the odd node is exactly the RFC's unbalanced right subtree, seen bottom up,
    and pairing a whole level at once is the fastest way through many leaves in Python.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    sha256 = _sha256
    level = list(leaf_hashes)
    while len(level) > 1:
        odd = level[-1:] if len(level) & 1 else []
        pairs = zip(level[::2], level[1::2], strict=False)  # the odd node has no partner
        level = [sha256(b"\x01" + a + b).digest() for a, b in pairs] + odd
    return level[0]


def _check_range(what: str, low: int, value: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is outside {low}..{high}")


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]): the siblings from the leaf up to the root.

    Walks down from the root, so each sibling subtree is hashed once: they are disjoint,
    and all of them together are fewer than ``size`` leaves (O(n) hashes, not O(n log n)).
    """
    _check_range("tree size", 1, size, len(leaf_hashes))
    _check_range("leaf index", 0, index, size - 1)
    siblings: list[bytes] = []
    low, high = 0, size
    while high - low > 1:
        middle = low + _split(high - low)
        if index < middle:
            siblings.append(root_of(leaf_hashes[middle:high]))
            high = middle
        else:
            siblings.append(root_of(leaf_hashes[low:middle]))
            low = middle
    siblings.reverse()
    return siblings


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """RFC 6962 PROOF(old_size, D[0:new_size]), by SUBPROOF with its flag ``b``.

    ``b`` stays true while the old tree is the left edge of the subtree in hand, whose root
    the verifier then already knows; it is empty for equal sizes and for an old size of 0
    (the empty tree is a prefix of every tree: nothing to prove).
    """
    _check_range("new size", 0, new_size, len(leaf_hashes))
    _check_range("old size", 0, old_size, new_size)
    if old_size in (0, new_size):
        return []
    siblings: list[bytes] = []
    low, high, m, known = 0, new_size, old_size, True
    while m != high - low:
        k = _split(high - low)
        if m <= k:
            siblings.append(root_of(leaf_hashes[low + k : high]))
            high = low + k
        else:
            siblings.append(root_of(leaf_hashes[low : low + k]))
            low, m, known = low + k, m - k, False
    siblings.reverse()
    return siblings if known else [root_of(leaf_hashes[low:high]), *siblings]


def _well_formed(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` puts ``leaf_hash`` at ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 section 2.1.3.2, step for step: ``fn`` and ``sn`` are the leaf's and the last
    leaf's positions at the current level; where they coincide, the leaf's subtree is the
    right edge and has no right sibling at that level, so the walk climbs past it.
    """
    if not (_is_int(index) and _is_int(size) and 0 <= index < size):
        return False
    if not _well_formed(leaf_hash, root, *proof):
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether the tree of ``new_size`` with ``new_root`` extends the one of ``old_size``.

    RFC 9162 section 2.1.4.2 for 0 < old_size < new_size. Its edges, decided here: equal
    sizes need an empty proof and equal roots; old size 0 needs an empty proof and the
    empty tree's root as ``old_root`` (a head of size 0 claiming any other root is false,
    and the new root cannot be checked against nothing); old > new, negative or non-integer
    sizes, and hashes that are not 32 bytes are False.
    """
    if not (_is_int(old_size) and _is_int(new_size) and 0 <= old_size <= new_size):
        return False
    if not _well_formed(old_root, new_root, *proof):
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
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
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root

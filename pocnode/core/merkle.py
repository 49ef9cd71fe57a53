"""RFC 6962 Merkle tree hashes over a chain's event ids (PROTOCOL.md §13.2).

Each author's chain is a transparency log whose leaves are its event ids, oldest first.
Hashes follow RFC 6962 §2.1 (restated by RFC 9162 §2.1.1): a leaf hashes as
``SHA-256(0x00 || id)``, an interior node as ``SHA-256(0x01 || left || right)``, the
split at the largest power of two below the size, and the empty tree as ``SHA-256("")``.
Consistency proofs follow RFC 9162 §2.1.4, so checkpoint tooling that speaks RFC 6962
(tlog-tiles, witnesses) can check that one of our checkpoints extends another.

:class:`Frontier` keeps a tree's right edge (one hash per set bit of its size), so a
chain's root at each new checkpoint costs a few hashes per appended leaf, not a pass
over the whole chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(_LEAF + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2): RFC 6962's k."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (not leaves), by the definition."""
    n = len(hashes)
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(_subtree(hashes[:k]), _subtree(hashes[k:]))


def tree_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 §2.1 over the leaves themselves (event ids)."""
    if not leaves:
        return EMPTY_ROOT
    return Frontier.of(leaves).root()


class Frontier:
    """The perfect subtrees along a tree's right edge: ``(height, hash)``, tallest first.

    Appending a leaf merges equal heights, as a binary counter carries; the root folds
    the edge from the right. Same result as :func:`tree_hash` by construction of
    RFC 6962's split (the left subtree is always the largest perfect one).
    """

    __slots__ = ("size", "_edge")

    def __init__(self) -> None:
        self.size = 0
        self._edge: list[tuple[int, bytes]] = []

    @classmethod
    def of(cls, leaves: Sequence[bytes]) -> Frontier:
        f = cls()
        for leaf in leaves:
            f.append(leaf)
        return f

    def copy(self) -> Frontier:
        f = Frontier()
        f.size = self.size
        f._edge = list(self._edge)
        return f

    def append(self, leaf: bytes) -> None:
        height, h = 0, leaf_hash(leaf)
        while self._edge and self._edge[-1][0] == height:
            _, left = self._edge.pop()
            h = node_hash(left, h)
            height += 1
        self._edge.append((height, h))
        self.size += 1

    def root(self) -> bytes:
        if not self._edge:
            return EMPTY_ROOT
        h = self._edge[-1][1]
        for _, left in reversed(self._edge[:-1]):
            h = node_hash(left, h)
        return h


# -- consistency proofs (RFC 9162 §2.1.4) ---------------------------------------------------


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1: the hashes that show the tree of the first
    ``old_size`` leaves is a prefix of the tree of all of them. Empty when there is
    nothing to prove (m = 0 or m = n)."""
    n = len(leaves)
    if not 0 <= old_size <= n:
        raise ValueError(f"old size {old_size} outside 0..{n}")
    if old_size in (0, n):
        return []
    return _subproof(old_size, [leaf_hash(x) for x in leaves], True)


def _subproof(m: int, hashes: Sequence[bytes], whole: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if whole else [_subtree(hashes)]
    k = _split(n)
    if m <= k:
        return _subproof(m, hashes[:k], whole) + [_subtree(hashes[k:])]
    return _subproof(m - k, hashes[k:], False) + [_subtree(hashes[:k])]


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2, with its trivial cases: a tree is consistent with itself, and
    the empty tree with every tree."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
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
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0

"""RFC 6962 Merkle hash trees (RFC 9162 section 2.1): roots, inclusion and consistency proofs.

Pure functions over a list of leaf hashes, no I/O: the audit log's lines are the leaves
(docs/FORMATS.md section 6, "The log as a transparency log"), and these proofs are the ones
C2SP tlog tools and golang.org/x/mod/sumdb/tlog speak, so a verifier needs nothing of edge.
Generation follows RFC 6962's recursive definitions (PATH, PROOF, SUBPROOF); verification
follows RFC 9162's iterative algorithms, so the two check each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree: SHA-256 of the empty string."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): a leaf, domain-separated from the inner nodes."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaves: Sequence[bytes], size: int | None = None) -> bytes:
    """MTH of the first `size` leaf hashes (all by default)."""
    size = len(leaves) if size is None else size
    _check_size(leaves, size)
    return _subtree(leaves, 0, size) if size else EMPTY_ROOT


def roots(leaves: Iterable[bytes], sizes: Iterable[int]) -> dict[int, bytes]:
    """The roots of the trees of several sizes in one pass over the leaves: the perfect
    subtrees so far are kept on a stack (at most log2 of the count), and a root is them folded
    from the right, as MTH splits (what `audit verify` needs for every cosignature kept)."""
    wanted = set(sizes)
    found = {0: EMPTY_ROOT} if 0 in wanted else {}
    stack: list[tuple[bytes, int]] = []  # (hash, height), left to right, heights decreasing
    count = 0
    for count, leaf in enumerate(leaves, start=1):
        digest, height = leaf, 0
        while stack and stack[-1][1] == height:
            digest, height = node_hash(stack.pop()[0], digest), height + 1
        stack.append((digest, height))
        if count in wanted:
            folded = digest
            for left, _ in reversed(stack[:-1]):
                folded = node_hash(left, folded)
            found[count] = folded
    if any(size < 0 or size > count for size in wanted):
        raise ValueError(f"a tree of {max(wanted)} leaves, but there are {count}")
    return found


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """The audit path of leaf `index` (from 0) in the tree of the first `size` leaves
    (RFC 6962 2.1.1 PATH), nearest the leaf first."""
    _check_size(leaves, size)
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    return _path(leaves, index, 0, size)


def consistency_proof(leaves: Sequence[bytes], old: int, size: int) -> list[bytes]:
    """The proof that the tree of the first `old` leaves is a prefix of the tree of the first
    `size` (RFC 6962 2.1.2 PROOF); empty when `old` is 0 or `size`."""
    _check_size(leaves, size)
    if not 0 <= old <= size:
        raise ValueError(f"a tree of {old} leaves cannot be a prefix of one of {size}")
    if old in (0, size):
        return []
    return _subproof(leaves, old, 0, size, True)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """Whether `proof` shows the leaf hash `leaf` at `index` in the tree of `size` leaves whose
    root is `expected_root` (RFC 9162 2.1.3.2)."""
    if not 0 <= index < size or not _hashes(proof, leaf, expected_root):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == expected_root


def verify_consistency(old: int, size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """Whether `proof` shows the tree of `old` leaves with root `old_root` to be a prefix of the
    tree of `size` leaves with root `new_root` (RFC 9162 2.1.4.2; the empty tree is a prefix of
    every tree, and a tree of itself, with empty proofs)."""
    if not 0 <= old <= size or not _hashes(proof, old_root, new_root):
        return False
    if old == 0:
        return not proof and old_root == EMPTY_ROOT
    if old == size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old - 1, size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


# -- internals: RFC 6962's recursive definitions, over leaves[lo:hi] without copying ---------


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(leaves[lo:hi]), hi > lo. A power-of-two range is reduced level by level (no
    recursion per node: a log of a million lines is hashed in about a second)."""
    n = hi - lo
    if n & (n - 1):
        k = _split(n)
        return node_hash(_subtree(leaves, lo, lo + k), _subtree(leaves, lo + k, hi))
    level = list(leaves[lo:hi])
    while len(level) > 1:
        level = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


def _path(leaves: Sequence[bytes], m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, leaves[lo:hi])."""
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return _path(leaves, m, lo, lo + k) + [_subtree(leaves, lo + k, hi)]
    return _path(leaves, m - k, lo + k, hi) + [_subtree(leaves, lo, lo + k)]


def _subproof(leaves: Sequence[bytes], m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
    """SUBPROOF(m, leaves[lo:hi], whole)."""
    n = hi - lo
    if m == n:
        return [] if whole else [_subtree(leaves, lo, hi)]
    k = _split(n)
    if m <= k:
        return _subproof(leaves, m, lo, lo + k, whole) + [_subtree(leaves, lo + k, hi)]
    return _subproof(leaves, m - k, lo + k, hi, False) + [_subtree(leaves, lo, lo + k)]


def _check_size(leaves: Sequence[bytes], size: int) -> None:
    if not 0 <= size <= len(leaves):
        raise ValueError(f"a tree of {size} leaves, but there are {len(leaves)}")


def _hashes(proof: Sequence[bytes], *more: bytes) -> bool:
    return all(len(h) == HASH_SIZE for h in (*proof, *more))

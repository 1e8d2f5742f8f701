"""edge/audit/merkle.py against the RFC 6962 test vectors of the Certificate Transparency
reference implementations (transparency-dev/merkle testonly/constants.go), and every proof
of every small tree against its own verifier, with every hash of it altered."""

from __future__ import annotations

import pytest

from edge.audit import merkle

LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = {  # (leaf index, tree size): audit path
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}  # fmt: skip
CONSISTENCY = {  # (old size, new size): proof
    (1, 1): [],
    (1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}  # fmt: skip
HASHES = [merkle.leaf_hash(leaf) for leaf in LEAVES]


def test_roots_of_the_reference_vectors() -> None:
    assert [merkle.root(HASHES, size).hex() for size in range(9)] == ROOTS
    assert merkle.EMPTY_ROOT.hex() == ROOTS[0]


@pytest.mark.parametrize(("index", "size"), sorted(INCLUSION))
def test_inclusion_proofs_of_the_reference_vectors(index: int, size: int) -> None:
    proof = merkle.inclusion_proof(HASHES, index, size)
    assert [h.hex() for h in proof] == INCLUSION[index, size]
    assert merkle.verify_inclusion(HASHES[index], index, size, proof, bytes.fromhex(ROOTS[size]))


@pytest.mark.parametrize(("old", "size"), sorted(CONSISTENCY))
def test_consistency_proofs_of_the_reference_vectors(old: int, size: int) -> None:
    proof = merkle.consistency_proof(HASHES, old, size)
    assert [h.hex() for h in proof] == CONSISTENCY[old, size]
    assert merkle.verify_consistency(old, size, bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[size]), proof)


def test_every_proof_of_every_small_tree_verifies_and_no_altered_one_does() -> None:
    leaves = [merkle.leaf_hash(str(n).encode()) for n in range(33)]
    roots = [merkle.root(leaves, size) for size in range(len(leaves) + 1)]
    other = merkle.leaf_hash(b"other")
    for size in range(1, len(leaves) + 1):
        for index in range(size):
            proof = merkle.inclusion_proof(leaves, index, size)
            assert merkle.verify_inclusion(leaves[index], index, size, proof, roots[size])
            assert not merkle.verify_inclusion(other, index, size, proof, roots[size])
            assert not merkle.verify_inclusion(leaves[index], index, size, proof, roots[size - 1])
            assert not merkle.verify_inclusion(leaves[index], index, size, [*proof, other], roots[size])
            for at in range(len(proof)):
                assert not merkle.verify_inclusion(leaves[index], index, size, _altered(proof, at), roots[size])
        for old in range(size + 1):
            proof = merkle.consistency_proof(leaves, old, size)
            assert merkle.verify_consistency(old, size, roots[old], roots[size], proof)
            if old:
                assert not merkle.verify_consistency(old, size, other, roots[size], proof)
                assert not merkle.verify_consistency(old, size, roots[old], other, proof)
            for at in range(len(proof)):
                assert not merkle.verify_consistency(old, size, roots[old], roots[size], _altered(proof, at))
            if 0 < old < size:
                assert not merkle.verify_consistency(old, size, roots[old], roots[size], proof[:-1])


def test_the_roots_of_many_sizes_in_one_pass_are_those_of_each() -> None:
    leaves = [merkle.leaf_hash(str(n).encode()) for n in range(70)]
    assert merkle.roots(leaves, range(71)) == {size: merkle.root(leaves, size) for size in range(71)}
    assert merkle.roots(HASHES, [3, 8]) == {3: bytes.fromhex(ROOTS[3]), 8: bytes.fromhex(ROOTS[8])}
    with pytest.raises(ValueError, match="there are 8"):
        merkle.roots(HASHES, [9])


def test_sizes_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="not in a tree of 3"):
        merkle.inclusion_proof(HASHES, 3, 3)
    with pytest.raises(ValueError, match="cannot be a prefix"):
        merkle.consistency_proof(HASHES, 4, 3)
    with pytest.raises(ValueError, match="there are 8"):
        merkle.root(HASHES, 9)
    assert not merkle.verify_inclusion(HASHES[0], 1, 1, [], HASHES[0])
    assert not merkle.verify_consistency(2, 1, HASHES[0], HASHES[0], [])
    assert not merkle.verify_consistency(0, 1, HASHES[0], HASHES[0], [])


def _altered(proof: list[bytes], at: int) -> list[bytes]:
    changed = list(proof)
    changed[at] = bytes([changed[at][0] ^ 1]) + changed[at][1:]
    return changed

"""Cumulative-rewards Merkle trees whose leaves and proofs match OpenZeppelin's MerkleProof.

A leaf is `keccak256(bytes.concat(keccak256(abi.encode(account, cumulative))))`, the double hash
OpenZeppelin's StandardMerkleTree uses so a leaf can never be mistaken for an inner node; inner
nodes hash the sorted pair, as `MerkleProof.verify` expects. Written here rather than taken from a
library because the only maintained implementation of this exact scheme is OpenZeppelin's
JavaScript `merkle-tree`; the layout below is the same as its `StandardMerkleTree` (leaves sorted
by hash and stored in reverse at the end of a `2n - 1` array, node `i` hashing nodes `2i + 1` and
`2i + 2`), so roots agree with OpenZeppelin's tools for every size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from eth_abi import encode
from eth_utils import keccak, to_checksum_address


def leaf_hash(account: str, cumulative: int) -> bytes:
    """The leaf of `account` with cumulative entitlement `cumulative` (wei or token units)."""
    if cumulative < 0:
        raise ValueError("cumulative amounts are non-negative")
    return keccak(keccak(encode(["address", "uint256"], [to_checksum_address(account), cumulative])))


def _hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


def verify(proof: list[bytes], root: bytes, leaf: bytes) -> bool:
    """The same check as `MerkleProof.verify`."""
    node = leaf
    for sibling in proof:
        node = _hash_pair(node, sibling)
    return node == root


@dataclass(frozen=True)
class RewardTree:
    """A tree over `{account: cumulative}`; `root` goes on chain, `proof(account)` to the trainer."""

    amounts: dict[str, int]
    root: bytes
    _tree: tuple[bytes, ...]
    _index: dict[str, int]

    @classmethod
    def build(cls, amounts: Mapping[str, int]) -> RewardTree:
        if not amounts:
            raise ValueError("a reward tree needs at least one account")
        norm: dict[str, int] = {to_checksum_address(a): int(v) for a, v in amounts.items()}
        if len(norm) != len(amounts):
            raise ValueError("duplicate accounts (addresses differing only in case)")
        leaves = sorted((leaf_hash(a, v), a) for a, v in norm.items())
        size = 2 * len(leaves) - 1
        tree: list[bytes] = [b""] * size
        index: dict[str, int] = {}
        for k, (h, a) in enumerate(leaves):
            tree[size - 1 - k] = h
            index[a] = size - 1 - k
        for i in range(size - 1 - len(leaves), -1, -1):
            tree[i] = _hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        return cls(amounts=norm, root=tree[0], _tree=tuple(tree), _index=index)

    def proof(self, account: str) -> list[bytes]:
        """Sibling hashes from the account's leaf up to the root."""
        i = self._index[to_checksum_address(account)]
        proof = []
        while i > 0:
            proof.append(self._tree[i - 1 if i % 2 == 0 else i + 1])
            i = (i - 1) // 2
        return proof

    def proofs_hex(self) -> dict[str, list[str]]:
        """Every account's proof as 0x-hex strings, for the round record."""
        return {a: ["0x" + p.hex() for p in self.proof(a)] for a in self.amounts}

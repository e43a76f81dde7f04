"""Fakes shared by the receipt and correction tests: a record paying given amounts, a store that
serves blobs by CID, a round whose root is given."""

from __future__ import annotations

from market.errors import ContentNotFound
from market.protocol.documents import RoundRecord
from market.protocol.merkle import RewardTree

ETHER = 10**18


def record_paying(pid: int, round_: int, amounts: dict[str, int], contract: str = "0x" + "00" * 20) -> RoundRecord:
    tree = RewardTree.build(amounts)
    return RoundRecord(
        project_id=pid, round=round_, chain_id=31337, contract=contract, code_version="test", seed=0,
        base_model_cid="QmBase", model_cid="QmModel", model_digest="0x" + "00" * 32, validation_cid="QmVal",
        rule="mean", filters={}, scorer="none", hyperparams={}, inputs=[], verdicts=[], scores={},
        cumulative_scores={}, rewards=dict(tree.amounts), cumulative_rewards=dict(tree.amounts), allocation=ETHER,
        rewards_root="0x" + tree.root.hex(), proofs=tree.proofs_hex(), metrics={},
    )


class BlobStore:
    def __init__(self, blobs: dict[str, bytes]):
        self.blobs = blobs

    def cat(self, cid: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
        if cid not in self.blobs:
            raise ContentNotFound(f"no provider for {cid} within 1 s: pin it somewhere")
        return self.blobs[cid]


class RoundWithRoot:
    def __init__(self, root: bytes):
        self.rewards_root = "0x" + root.hex()

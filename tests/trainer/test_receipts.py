"""Records and proofs the trainer keeps (issue 13): `trainer claim` still works once IPFS no longer
serves a round's record, and a kept copy the chain's root no longer accepts is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from devnet.ports import free_ports
from market.chain import Finalized, MarketClient, ProjectParams
from market.chain.accounts import dev_account
from market.chain.deployment import Deployment
from market.errors import ContentNotFound, StorageError
from market.protocol.merkle import RewardTree
from market.storage import IpfsStore
from tests.conftest import needs_jsipfs
from tests.trainer.support import BlobStore, RoundWithRoot, record_paying
from trainer.errors import StaleReceipt
from trainer.participant import Participant
from trainer.receipts import Receipts

ETHER = 10**18
OWNER, AGG, ARB = dev_account(0), dev_account(1), dev_account(2)
T, U, RESCUE = dev_account(12), dev_account(13), dev_account(14)


# ---------------------------------------------------------------------- unit: no chain, no IPFS


class _Client:
    def __init__(self, root: bytes):
        self.root = root

    def round(self, project_id: int, round_: int) -> RoundWithRoot:
        return RoundWithRoot(self.root)


def test_a_kept_proof_answers_when_the_store_does_not_and_a_tampered_one_is_refused(tmp_path: Path) -> None:
    tree = RewardTree.build({T.address: 3 * ETHER // 4, U.address: ETHER // 4})
    data = record_paying(1, 0, dict(tree.amounts), OWNER.address).to_bytes()
    f = Finalized(1, 0, "QmModel", "QmRecord", tree.root, ETHER, 10)
    receipts = Receipts(tmp_path)
    client: Any = _Client(tree.root)
    with pytest.raises(ContentNotFound, match="no copy of round 0's record is kept"):
        receipts.obtain(BlobStore({}), client, f, T.address)
    fetched = receipts.obtain(BlobStore({"QmRecord": data}), client, f, T.address)
    assert receipts.kept_record(1, 0) == data
    offline = receipts.obtain(BlobStore({}), client, f, T.address.lower())
    assert offline == fetched and offline.cumulative == 3 * ETHER // 4 and offline.proves(tree.root)
    assert offline.proof_bytes == tree.proof(T.address)
    path = receipts.proof_path(1, 0, T.address)
    body = json.loads(path.read_text())
    path.write_text(json.dumps(body | {"cumulative": ETHER}))  # claims more than the tree gives
    with pytest.raises(StaleReceipt) as e:
        receipts.obtain(BlobStore({}), client, f, T.address)
    assert "\n" not in str(e.value) and "does not match the round's rewards root" in str(e.value)


# ---------------------------------------------------------------------- integration: anvil + js-ipfs


def _settled_round(market: MarketClient, anvil: Anvil, store: IpfsStore, *, corrected: bool) -> tuple[int, RewardTree]:
    """A one-round project in which T and U revealed, finalized with a record on IPFS, settled;
    `corrected`: an upheld dispute replaced the record's root on chain."""
    pid, _ = market.create_project(ProjectParams(
        aggregator=AGG.address, arbiter=ARB.address, num_rounds=1, reward_per_round=ETHER, commit_window=8,
        reveal_window=6, challenge_window=3, spec_cid="QmSpec", stake=ETHER // 10, dispute_bond=ETHER // 20,
    ))
    from market.chain import commitment_of

    info = market.project(pid)
    secrets = {}
    for a in (T, U):
        me = market.with_account(a)
        me.register(pid)
        secrets[a.address] = (f"Qm{os.urandom(8).hex()}", os.urandom(32), os.urandom(32))
        me.commit(pid, 0, commitment_of(pid, 0, a.address, *secrets[a.address]))
    anvil.mine(info.commit_deadline - market.block_number + 1)
    for a in (T, U):
        market.with_account(a).reveal(pid, 0, *secrets[a.address])
    anvil.mine(info.reveal_deadline - market.block_number + 1)
    tree = RewardTree.build({T.address: 3 * ETHER // 4, U.address: ETHER // 4})
    record_cid = store.add(record_paying(pid, 0, dict(tree.amounts), market.address).to_bytes())
    market.with_account(AGG).finalize_round(pid, 0, "QmModel", record_cid, tree.root)
    if corrected:
        market.with_account(U).dispute(pid, 0, "QmEvidence")
        fixed = RewardTree.build({T.address: ETHER // 2, U.address: ETHER // 2})
        market.with_account(ARB).resolve_dispute(pid, 0, True, "QmReason", corrected_root=fixed.root)
    anvil.mine(market.settles_after(pid, 0) - market.block_number + 1)
    return pid, tree


def _trainer(*args: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    return subprocess.run([sys.executable, "-m", "trainer.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=180, check=False)


@needs_jsipfs
@pytest.mark.integration
def test_claim_works_from_the_kept_copy_after_ipfs_stops_and_a_stale_copy_is_refused(
    market: MarketClient, anvil: Anvil, anvil_deployment: Deployment, tmp_path: Path
) -> None:
    api, gateway, rpc = free_ports(3)
    node = IpfsNode(tmp_path / "ipfs", api, gateway, rpc)
    node.start(timeout=90)
    try:
        store = IpfsStore(node.api_multiaddr, find_timeout=1.0, timeout=30, retries=1)
        honest, _ = _settled_round(market, anvil, store, corrected=False)
        stale, _ = _settled_round(market, anvil, store, corrected=True)
        state = tmp_path / "state"
        me = Participant(market.with_account(T), store, state)
        # reading a settled round keeps its record and the trainer's proof
        assert me.claimable(honest) is not None and me.receipts.kept_record(honest, 0) is not None
        # the corrected round's ruling names no corrected record ("QmReason"): nothing to prove from
        with pytest.raises(StaleReceipt, match="does not match the round's rewards root on chain"):
            me.claimable(stale)
        store.close()
    finally:
        node.stop()
    assert not node.is_running()

    dep = tmp_path / "deployment.json"
    anvil_deployment.save(dep)
    common = ["--rpc", anvil.url, "--deployment", dep, "--ipfs", node.api_multiaddr, "--state", state,
              "--dev-account", 12, "--json"]
    out = _trainer("claim", honest, *common, "--to", RESCUE.address)
    assert out.returncode == 0, out.stderr
    claimed = json.loads(out.stdout)
    assert (claimed["amount"], claimed["recipient"], claimed["round"]) == (3 * ETHER // 4, RESCUE.address, 0)
    assert market.claimed_by(honest, T.address) == 3 * ETHER // 4
    refused = _trainer("claim", stale, *common)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "does not match the round's rewards root on chain" in refused.stderr
    assert market.claimed_by(stale, T.address) == 0
    # a trainer that never read the record has nothing to fall back on: the store's own error, one line
    fresh = Participant(market.with_account(U), IpfsStore(node.api_multiaddr, retries=0), tmp_path / "other")
    with pytest.raises(StorageError, match="no copy of round 0's record is kept"):
        fresh.claim(honest)

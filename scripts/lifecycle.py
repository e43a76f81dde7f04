"""Exercise one project's whole lifecycle on the running local stack, with real transactions:
create (budget escrowed), three trainers register with stakes, commit, reveal, the aggregator
finalizes with a cumulative-rewards Merkle root, trainers claim with proofs, the owner ends the
project and gets back only what no round allocated. Prints a gas-per-role summary.

Usage: .venv/bin/python scripts/lifecycle.py --rpc http://127.0.0.1:8545 --deployment .market/deployment.json
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from market.accounts import dev_account  # noqa: E402
from market.anvil import rpc_call  # noqa: E402
from market.chain import ProjectParams, commitment_of, connect  # noqa: E402
from market.deployment import Deployment  # noqa: E402
from market.merkle import RewardTree  # noqa: E402

ETHER = 10**18


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rpc", default="http://127.0.0.1:8545")
    ap.add_argument("--deployment", default=".market/deployment.json")
    args = ap.parse_args()
    console = Console()
    w3 = connect(args.rpc)
    owner, agg, arb = dev_account(0), dev_account(1), dev_account(2)
    trainers = [dev_account(i) for i in (3, 4, 5)]
    market = Deployment.load(Path(args.deployment)).client(w3, owner)
    gas: dict[str, int] = {"owner": 0, "aggregator": 0, "trainers": 0}

    def mine_to(block: int) -> None:
        gap = block - w3.eth.block_number + 1
        if gap > 0:
            rpc_call(args.rpc, "anvil_mine", [hex(gap)])

    rounds, reward = 2, ETHER
    pid, rc = market.create_project(
        ProjectParams(
            aggregator=agg.address, arbiter=arb.address, num_rounds=rounds, reward_per_round=reward,
            commit_window=10, reveal_window=10, challenge_window=5, spec_cid="QmLifecycleSpec", stake=ETHER // 10,
        )
    )
    gas["owner"] += rc.gas_used
    console.print(f"project {pid}: {rounds} rounds x {reward} wei escrowed")
    for t in trainers:
        gas["trainers"] += market.with_account(t).register(pid, ETHER // 10).gas_used
    cumulative = {t.address: 0 for t in trainers}
    for r in range(rounds):
        info = market.project(pid)
        secrets = {}
        for t in trainers:
            cid, digest, salt = f"QmUpdate{r}{t.address[2:10]}", os.urandom(32), os.urandom(32)
            secrets[t.address] = (cid, digest, salt)
            gas["trainers"] += market.with_account(t).commit(pid, r, commitment_of(pid, r, t.address, cid, digest, salt)).gas_used
        mine_to(info.commit_deadline)
        for t in trainers:
            gas["trainers"] += market.with_account(t).reveal(pid, r, *secrets[t.address]).gas_used
        mine_to(info.reveal_deadline)
        # a fixed split standing in for contribution scores: 50% / 30% / 20%
        for t, share in zip(trainers, (5, 3, 2)):
            cumulative[t.address] += reward * share // 10
        tree = RewardTree.build(cumulative)
        gas["aggregator"] += market.with_account(agg).finalize_round(pid, r, f"QmModel{r}", f"QmRecord{r}", tree.root, reward).gas_used
        console.print(f"round {r} finalized; root 0x{tree.root.hex()[:16]}...")
    rpc_call(args.rpc, "anvil_mine", [hex(6)])
    paid = {}
    for t in trainers:
        before = w3.eth.get_balance(t.address)
        rc = market.with_account(t).claim(pid, rounds - 1, t.address, cumulative[t.address], tree.proof(t.address))
        gas["trainers"] += rc.gas_used
        paid[t.address] = w3.eth.get_balance(t.address) - before + rc.fee_wei
    gas["owner"] += market.end_project(pid).gas_used
    p = market.project(pid)
    table = Table("trainer", "paid (wei)")
    for a, v in paid.items():
        table.add_row(a, str(v))
    console.print(table)
    console.print(f"allocated {p.allocated}, claimed {p.claimed}, ended {p.ended}; gas per role: {gas}")
    assert sum(paid.values()) == rounds * reward == p.claimed


if __name__ == "__main__":
    main()

"""Gas table of the LearningMarket protocol on a real anvil node, beside the naive design.

Run: .venv/bin/python benchmarks/gas.py [--max-trainers 1000]

Every figure is `gasUsed` from a mined receipt (transaction base cost included). Finalize is
measured with 10, 100 and 1,000 trainers in the round; the naive design writes one storage slot
per trainer per round, measured for the same counts.
Targets: commit + reveal <= 110k per trainer per round; finalize <= 120k and constant in the number
of trainers; claim <= 80k.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from eth_account import Account
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devnet.anvil import Anvil, rpc_call
from devnet.compiler import compile_contracts
from devnet.ports import free_port
from market.chain import MarketClient, ProjectParams, RevertDecoder, TxSender, commitment_of, connect
from market.chain.accounts import dev_account
from market.chain.deployment import deploy
from market.protocol.merkle import RewardTree

ETHER = 10**18
CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"  # a realistic 46-character CIDv0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-trainers", type=int, default=1000)
    ap.add_argument("--smoke", action="store_true", help="10 trainers only: checks the script runs (seconds)")
    args = ap.parse_args()
    counts = [n for n in (10, 100, 1000) if n <= (10 if args.smoke else args.max_trainers)]
    console = Console()

    with tempfile.TemporaryDirectory() as tmp:
        anvil = Anvil(Path(tmp), port=free_port())
        anvil.start()
        try:
            rows, naive = run(anvil, counts, console)
        finally:
            anvil.stop()

    t = Table(title="LearningMarket gas (gasUsed per transaction, anvil)")
    t.add_column("operation")
    t.add_column("gas", justify="right")
    t.add_column("target", justify="right")
    for name, gas, target in rows:
        ok = "" if target is None else ("[green]ok[/]" if gas <= target else "[red]over[/]")
        t.add_row(name, f"{gas:,}", f"<= {target:,} {ok}" if target else "")
    console.print(t)
    n = Table(title="finalize: this design vs naive (one storage write per trainer per round)")
    n.add_column("trainers in round", justify="right")
    n.add_column("LearningMarket.finalizeRound", justify="right")
    n.add_column("naive finalize", justify="right")
    n.add_column("naive / ours", justify="right")
    for count, ours, theirs in naive:
        n.add_row(str(count), f"{ours:,}", f"{theirs:,}", f"{theirs / ours:.1f}x")
    console.print(n)


def run(anvil: Anvil, counts: list[int], console: Console) -> tuple[list[tuple[str, int, int | None]], list[tuple[int, int, int]]]:
    w3 = connect(anvil.url)
    owner, agg, arb = dev_account(0), dev_account(1), dev_account(2)
    dep = deploy(w3, owner, anvil.url)
    market = dep.client(w3, owner)
    rows: list[tuple[str, int, int | None]] = []
    finalize_gas: dict[int, int] = {}
    commit_reveal: list[int] = []
    register_gas = commit_gas = reveal_gas = 0
    claim_gas = 0

    for count in counts:
        console.print(f"[dim]round with {count} trainers...[/]")
        pid, rc = market.create_project(
            ProjectParams(
                aggregator=agg.address, arbiter=arb.address, num_rounds=2, reward_per_round=ETHER,
                commit_window=2 * count + 20, reveal_window=count + 20, challenge_window=10, spec_cid=CID,
                stake=ETHER // 100, dispute_bond=ETHER // 100,
            )
        )
        create_gas = rc.gas_used
        trainers = [Account.create() for _ in range(count)]
        for t in trainers:
            rpc_call(anvil.url, "anvil_setBalance", [t.address, hex(10 * ETHER)])
        secrets = {t.address: (os.urandom(32), os.urandom(32)) for t in trainers}

        def join_and_commit(t: object, pid: int = pid, secrets: dict = secrets) -> tuple[int, int]:  # type: ignore[type-arg]
            c = market.with_account(t)  # type: ignore[arg-type]
            g1 = c.register(pid).gas_used
            d, s = secrets[c.account_address]
            g2 = c.commit(pid, 0, commitment_of(pid, 0, c.account_address, CID, d, s)).gas_used
            return g1, g2

        with ThreadPoolExecutor(8) as ex:
            regs = list(ex.map(join_and_commit, trainers))
        info = market.project(pid)
        anvil.mine(max(0, info.commit_deadline - market.block_number + 1))

        def do_reveal(t: object, pid: int = pid, secrets: dict = secrets) -> int:  # type: ignore[type-arg]
            c = market.with_account(t)  # type: ignore[arg-type]
            d, s = secrets[c.account_address]
            return c.reveal(pid, 0, CID, d, s).gas_used

        with ThreadPoolExecutor(8) as ex:
            reveals = list(ex.map(do_reveal, trainers))
        anvil.mine(max(0, info.reveal_deadline - market.block_number + 1))
        amounts = {t.address: ETHER // count for t in trainers}
        tree = RewardTree.build(amounts)
        fin = market.with_account(agg).finalize_round(pid, 0, CID, CID, tree.root)  # bond posted first, apart
        finalize_gas[count] = fin.gas_used
        register_gas, commit_gas, reveal_gas = max(r[0] for r in regs), max(r[1] for r in regs), max(reveals)
        commit_reveal.append(max(a[1] + b for a, b in zip(regs, reveals)))
        anvil.mine(11)
        first = trainers[0]
        claim_gas = max(
            claim_gas,
            market.with_account(first).claim(pid, 0, first.address, amounts[first.address], tree.proof(first.address)).gas_used,
        )
        last_pid, last_tree, last_trainers, last_amounts = pid, tree, trainers, amounts

    # dispute / resolve / end on a small project
    pid, _ = market.create_project(
        ProjectParams(
            aggregator=agg.address, arbiter=arb.address, num_rounds=1, reward_per_round=ETHER,
            commit_window=5, reveal_window=5, challenge_window=5, spec_cid=CID, dispute_bond=ETHER // 100,
        )
    )
    anvil.mine(12)
    tree = RewardTree.build({owner.address: ETHER})
    market.with_account(agg).finalize_round(pid, 0, CID, CID, tree.root)
    dispute_gas = market.dispute(pid, 0, CID, ETHER // 100).gas_used
    resolve_gas = market.with_account(arb).resolve_dispute(pid, 0, False, CID).gas_used
    anvil.mine(12)
    end_gas = market.end_project(pid).gas_used
    # trust-model paths: an expired round on a project whose aggregator never shows up
    pid, _ = market.create_project(
        ProjectParams(
            aggregator=agg.address, arbiter=arb.address, num_rounds=1, reward_per_round=ETHER,
            commit_window=5, reveal_window=5, challenge_window=5, spec_cid=CID,
        )
    )
    anvil.mine(12)
    expire_gas = market.expire_round(pid, 0).gas_used

    # ERC-20 claim, for comparison with merkle-distributor's 78-95k
    token_claim = erc20_claim(w3, market, anvil, owner, agg, arb)

    naive_rows = naive_finalize(w3, owner, counts, finalize_gas)
    rows += [
        ("createProject (ETH)", create_gas, None),
        ("register (with stake)", register_gas, None),
        ("commit", commit_gas, None),
        ("reveal", reveal_gas, None),
        ("commit + reveal per trainer per round", max(commit_reveal), 110_000),
    ]
    rows += [(f"finalizeRound, {c} trainers in round", g, 120_000) for c, g in finalize_gas.items()]
    rows += [
        ("claim (ETH, first claim)", claim_gas, 80_000),
        ("claim (ERC-20, first claim)", token_claim, None),
        ("dispute", dispute_gas, None),
        ("resolveDispute (dismiss)", resolve_gas, None),
        ("endProject", end_gas, None),
        ("expireRound (nobody revealed)", expire_gas, None),
    ]
    del last_pid, last_tree, last_trainers, last_amounts
    return rows, naive_rows


def erc20_claim(w3, market: MarketClient, anvil: Anvil, owner, agg, arb) -> int:  # type: ignore[no-untyped-def]
    arts = compile_contracts(Path(__file__).parent / "contracts", Path(tempfile.mkdtemp()) / "build")
    tok = arts["BenchToken"]
    sender = TxSender(w3, owner, RevertDecoder(tok.abi))
    rc = sender.send(w3.eth.contract(abi=tok.abi, bytecode=tok.bytecode).constructor(), action="deploy token")
    token = w3.eth.contract(address=w3.eth.get_transaction_receipt(rc.tx_hash)["contractAddress"], abi=tok.abi)
    sender.send(token.functions.approve(market.address, 10 * ETHER), action="approve")
    sender.send(token.functions.transfer(agg.address, ETHER), action="fund the aggregator bond")
    pid, _ = market.create_project(
        ProjectParams(
            aggregator=agg.address, arbiter=arb.address, num_rounds=1, reward_per_round=ETHER,
            commit_window=5, reveal_window=5, challenge_window=5, spec_cid=CID, token=token.address,
        )
    )
    anvil.mine(12)
    trainer = Account.create()
    rpc_call(anvil.url, "anvil_setBalance", [trainer.address, hex(ETHER)])
    tree = RewardTree.build({trainer.address: ETHER // 2, owner.address: ETHER // 2})
    market.with_account(agg).finalize_round(pid, 0, CID, CID, tree.root)
    anvil.mine(6)
    return market.with_account(trainer).claim(pid, 0, trainer.address, ETHER // 2, tree.proof(trainer.address)).gas_used


def naive_finalize(w3, owner, counts: list[int], ours: dict[int, int]) -> list[tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    arts = compile_contracts(Path(__file__).parent / "contracts", Path(tempfile.mkdtemp()) / "build")
    art = arts["NaiveLedger"]
    sender = TxSender(w3, owner, RevertDecoder(art.abi))
    rc = sender.send(w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(), action="deploy naive")
    naive = w3.eth.contract(address=w3.eth.get_transaction_receipt(rc.tx_hash)["contractAddress"], abi=art.abi)
    out = []
    for i, count in enumerate(counts):
        trainers = [Account.create().address for _ in range(count)]
        rc = sender.send(naive.functions.finalizeNaive(i, trainers, [ETHER // count] * count), action="naive finalize")
        out.append((count, ours[count], rc.gas_used))
    return out


if __name__ == "__main__":
    main()

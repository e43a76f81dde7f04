"""Issue 13 (trust model v2), one test per point, against the real contract on anvil: from any state
every party gets what it is entitled to within bounded time without the cooperation of any other
single role. Point 4 (the audit checks the spec's aggregation policy) is tested with the audit
(tests/aggregator); the happy paths already covered by test_chain_lifecycle.py (one correction on
a first round, two disputes ruled separately, the sweep) are not repeated here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from devnet import toolpaths
from devnet.anvil import Anvil
from market.chain import DisputeStatus, MarketClient, ProjectParams, RoundStatus
from market.chain.accounts import dev_account
from market.chain.deployment import Deployment
from market.errors import ContractRevert, ExitCode
from market.protocol.merkle import RewardTree
from tests.market.test_chain_lifecycle import AGG, ARB, ETHER, OWNER, TRAINERS, as_, mine_past, submit

pytestmark = pytest.mark.integration

NEW_AGG, NEW_ARB, OUTSIDER, RESCUE, RESCUE2 = (dev_account(i) for i in (7, 8, 9, 10, 11))
STAKE, BOND = ETHER // 10, ETHER // 20


def fast(**kw: Any) -> ProjectParams:
    """Short windows (finalize 18, rule 14 blocks by default) so deadlines pass in a few mined blocks."""
    base: dict[str, Any] = {
        "aggregator": AGG.address, "arbiter": ARB.address, "num_rounds": 1, "reward_per_round": ETHER,
        "commit_window": 8, "reveal_window": 6, "challenge_window": 3, "spec_cid": "QmSpec",
        "stake": STAKE, "dispute_bond": BOND, "claim_window": 30,
    }
    base.update(kw)
    return ProjectParams(**base)


def reveal_round(market: MarketClient, anvil: Anvil, pid: int, who: list[LocalAccount]) -> None:
    """Everyone in `who` commits to and reveals the open round; the chain ends past its reveal deadline."""
    info = market.project(pid)
    secrets = {t.address: submit(market, pid, info.current_round, t) for t in who}
    mine_past(anvil, market, info.commit_deadline)
    for t in who:
        as_(market, t).reveal(pid, info.current_round, *secrets[t.address])
    mine_past(anvil, market, info.reveal_deadline)


def reverts(name: str, fn: Any, *args: Any, **kw: Any) -> ContractRevert:
    with pytest.raises(ContractRevert) as e:
        fn(*args, **kw)
    assert e.value.name == name, str(e.value)
    return e.value


def balance(market: MarketClient, who: str) -> int:
    return int(market.w3.eth.get_balance(who))


def test_1_aggregator_gone_anyone_expires_the_owner_replaces_it_and_everyone_recovers(
    market: MarketClient, anvil: Anvil
) -> None:
    # a project nobody joined needs no aggregator at all: each round closes after its reveal deadline
    empty, _ = market.create_project(fast(num_rounds=2))
    for r in range(2):
        mine_past(anvil, market, market.project(empty).reveal_deadline)
        as_(market, OUTSIDER).expire_round(empty, r)
    as_(market, OUTSIDER).end_project(empty)
    assert market.credit_of(empty, OWNER.address) == 2 * ETHER  # the whole budget, for the owner to withdraw

    pid, _ = market.create_project(fast(num_rounds=2))
    t, u = TRAINERS[0], TRAINERS[1]
    for a in (t, u):
        as_(market, a).register(pid)
    agg = as_(market, AGG)
    agg.post_bond(pid)
    bond = market.project(pid).bond_held
    reveal_round(market, anvil, pid, [t, u])  # ... and the aggregator goes silent
    reverts("FinalizeStillOpen", as_(market, OUTSIDER).expire_round, pid, 0)
    mine_past(anvil, market, market.project(pid).finalize_deadline)
    reverts("FinalizeClosed", agg.finalize_round, pid, 0, "QmM", "QmR", RewardTree.build({t.address: 1}).root)
    as_(market, OUTSIDER).expire_round(pid, 0)
    p = market.project(pid)
    assert market.round(pid, 0).status == RoundStatus.EXPIRED and p.aggregator_missed and p.bond_held == 0
    assert [e.slashed for e in market.expired(pid)] == [bond]
    assert market.round_allocation(pid) == 2 * ETHER  # round 0's share rolled over: nobody kept it
    assert market.pool_share_of(pid, 0, t.address) == market.pool_share_of(pid, 0, u.address) == bond // 2

    # only the owner replaces, and only the aggregator that missed its deadline
    reverts("NotOwner", as_(market, t).replace_aggregator, pid, NEW_AGG.address)
    market.replace_aggregator(pid, NEW_AGG.address)
    reverts("NotAggregator", agg.post_bond, pid)
    reveal_round(market, anvil, pid, [t])
    tree = RewardTree.build({t.address: 2 * ETHER, u.address: 0})
    as_(market, NEW_AGG).finalize_round(pid, 1, "QmM1", "QmR1", tree.root)  # posts its own bond first
    mine_past(anvil, market, market.settles_after(pid, 1))
    as_(market, OUTSIDER).end_project(pid)

    # everyone recovers what it is owed: reward, pool share, stake, the new aggregator's bond
    for who, amount in ((t, 2 * ETHER + bond // 2 + STAKE), (u, bond // 2 + STAKE)):
        me = as_(market, who)
        before, fees = balance(market, who.address), 0
        if amount > STAKE + bond // 2:
            fees += me.claim(pid, 1, who.address, 2 * ETHER, tree.proof(who.address)).fee_wei
        fees += me.claim_pool_share(pid, 0).fee_wei
        fees += me.withdraw_stake(pid).fee_wei
        assert balance(market, who.address) - before + fees == amount
    assert market.credit_of(pid, NEW_AGG.address) == market.project(pid).aggregator_bond
    assert market.credit_of(pid, AGG.address) == 0  # the silent one's bond went to the revealers


def test_2_arbiter_silent_the_dispute_lapses_the_round_stands_and_the_arbiter_is_replaced(
    market: MarketClient, anvil: Anvil
) -> None:
    pid, _ = market.create_project(fast(num_rounds=2))
    t = TRAINERS[0]
    as_(market, t).register(pid)
    reveal_round(market, anvil, pid, [t])
    tree = RewardTree.build({t.address: ETHER})
    as_(market, AGG).finalize_round(pid, 0, "QmM", "QmR", tree.root)
    as_(market, t).dispute(pid, 0, "QmEvidence")
    reverts("RulingStillOpen", as_(market, OUTSIDER).lapse_dispute, pid, 0, 0)
    ruling_deadline = market.settles_after(pid, 0)
    mine_past(anvil, market, ruling_deadline)
    reverts("RulingClosed", as_(market, ARB).resolve_dispute, pid, 0, True, "QmLate", corrected_root=b"\x01" * 32)
    # the default outcome needs nobody: the round stands and pays, the next round can be finalized
    before = balance(market, t.address)
    fee = as_(market, t).claim(pid, 0, t.address, ETHER, tree.proof(t.address)).fee_wei
    assert balance(market, t.address) - before + fee == ETHER
    as_(market, AGG).finalize_round(pid, 1, "QmM1", "QmR1", tree.root)
    # closing the lapsed dispute (anyone) refunds the disputer: the silence was not its fault
    as_(market, OUTSIDER).lapse_dispute(pid, 0, 0)
    assert market.dispute_info(pid, 0, 0).status == DisputeStatus.LAPSED
    assert market.round(pid, 0).status == RoundStatus.DISMISSED
    assert market.credit_of(pid, t.address) == BOND and market.project(pid).arbiter_missed
    market.replace_arbiter(pid, NEW_ARB.address)
    as_(market, t).dispute(pid, 1, "QmEvidence1")
    reverts("NotArbiter", as_(market, ARB).resolve_dispute, pid, 1, False, "QmReason")
    as_(market, NEW_ARB).resolve_dispute(pid, 1, False, "QmReason")
    assert market.dispute_info(pid, 1, 0).status == DisputeStatus.DISMISSED


def test_3_the_allocation_is_fixed_by_the_parameters_so_the_aggregator_cannot_withhold_pay(
    market: MarketClient, anvil: Anvil
) -> None:
    pid, _ = market.create_project(fast(num_rounds=3))
    t = TRAINERS[0]
    as_(market, t).register(pid)
    reveal_round(market, anvil, pid, [t])
    agg = as_(market, AGG)
    agg.post_bond(pid)
    root = RewardTree.build({t.address: 1}).root
    # straight to the contract, past the client's own check: 1 wei of a 1 ETH round is refused
    assert agg.sender is not None
    e = reverts("AllocationMismatch", agg.sender.send,
                agg.contract.functions.finalizeRound(pid, 0, "QmM", "QmR", root, 1), action="finalizeRound")
    assert (e.error_args["expected"], e.error_args["given"]) == (ETHER, 1)
    agg.finalize_round(pid, 0, "QmM", "QmR", root)  # a tree paying 1 wei still allocates the whole share
    assert market.round(pid, 0).allocation == ETHER and market.project(pid).unallocated == 2 * ETHER
    # an expired round's share is not lost to the trainers: the next round allocates it on top
    mine_past(anvil, market, market.settles_after(pid, 0))
    mine_past(anvil, market, market.project(pid).reveal_deadline)
    as_(market, OUTSIDER).expire_round(pid, 1)
    assert market.round_allocation(pid) == market.project(pid).round_allocation == 2 * ETHER
    reveal_round(market, anvil, pid, [t])
    agg.finalize_round(pid, 2, "QmM2", "QmR2", RewardTree.build({t.address: 3 * ETHER}).root)
    mine_past(anvil, market, market.settles_after(pid, 2))
    as_(market, OUTSIDER).end_project(pid)
    p = market.project(pid)
    assert p.allocated == p.budget == 3 * ETHER and market.credit_of(pid, OWNER.address) == 0  # nothing came back


def test_5_several_disputes_per_round_none_blocks_another_and_each_costs_its_bond(
    market: MarketClient, anvil: Anvil
) -> None:
    pid, _ = market.create_project(fast(num_rounds=1))  # the last round: the owner's dispute is not free either
    t, colluder = TRAINERS[0], TRAINERS[1]
    for a in (t, colluder):
        as_(market, a).register(pid)
    reveal_round(market, anvil, pid, [t, colluder])
    bad = RewardTree.build({colluder.address: ETHER, t.address: 0})
    as_(market, AGG).finalize_round(pid, 0, "QmM", "QmR", bad.root)
    as_(market, colluder).dispute(pid, 0, "QmEmpty")  # first, with empty evidence
    as_(market, t).dispute(pid, 0, "QmAuditReport")
    market.dispute(pid, 0, "QmOwnersOwn")
    assert [d.disputer for d in market.disputes(pid, 0)] == [colluder.address, t.address, OWNER.address]
    arb = as_(market, ARB)
    arb.resolve_dispute(pid, 0, False, "QmNoEvidence", index=0)
    arb.resolve_dispute(pid, 0, False, "QmDuplicate", index=2)
    # the colluder's dismissed dispute does not make the round claimable: the honest one is pending
    mine_past(anvil, market, market.round(pid, 0).finalized_at + 3)
    reverts("RoundNotClaimable", as_(market, colluder).claim, pid, 0, colluder.address, ETHER, bad.proof(colluder.address))
    good = RewardTree.build({t.address: ETHER, colluder.address: 0})
    arb.resolve_dispute(pid, 0, True, "QmReason", index=1, corrected_root=good.root)
    assert market.round(pid, 0).status == RoundStatus.CORRECTED
    reverts("InvalidProof", as_(market, colluder).claim, pid, 0, colluder.address, ETHER, bad.proof(colluder.address))
    as_(market, t).claim(pid, 0, t.address, ETHER, good.proof(t.address))
    assert market.credit_of(pid, t.address) == BOND  # upheld: back
    assert market.credit_of(pid, AGG.address) == 2 * BOND  # the colluder's and the owner's dismissed bonds
    assert market.credit_of(pid, OWNER.address) == market.credit_of(pid, colluder.address) == 0


def test_6_roles_are_distinct_and_nobody_slashes_without_a_ruling(market: MarketClient) -> None:
    for agg, arb in ((OWNER, ARB), (AGG, OWNER), (AGG, AGG)):
        reverts("RolesNotDistinct", market.create_project, fast(aggregator=agg.address, arbiter=arb.address))
    pid, _ = market.create_project(fast())
    for role in (OWNER, AGG, ARB):
        reverts("RolesNotDistinct", as_(market, role).register, pid)
    t = TRAINERS[0]
    as_(market, t).register(pid)
    reverts("RolesNotDistinct", market.replace_aggregator, pid, t.address)  # a trainer cannot take a role
    reverts("RoleNotMissed", market.replace_aggregator, pid, NEW_AGG.address)  # nor is a working one swapped out
    reverts("RoleNotMissed", market.replace_arbiter, pid, NEW_ARB.address)
    market.transfer_project_ownership(pid, t.address)
    reverts("RolesNotDistinct", as_(market, t).accept_project_ownership, pid)
    functions = {item["name"] for item in market.abi if item["type"] == "function"}
    assert not {f for f in functions if "slash" in f.lower() or "void" in f.lower()}


def test_7_an_upheld_dispute_corrects_the_last_round_instead_of_voiding_it(market: MarketClient, anvil: Anvil) -> None:
    pid, _ = market.create_project(fast(num_rounds=1))
    t, u = TRAINERS[0], TRAINERS[1]
    for a in (t, u):
        as_(market, a).register(pid)
    reveal_round(market, anvil, pid, [t, u])
    as_(market, AGG).finalize_round(pid, 0, "QmM", "QmR", RewardTree.build({u.address: ETHER}).root)
    bond = market.project(pid).bond_held
    as_(market, t).dispute(pid, 0, "QmAudit")
    good = RewardTree.build({t.address: 6 * ETHER // 10, u.address: 4 * ETHER // 10})
    as_(market, ARB).resolve_dispute(pid, 0, True, "QmReason", corrected_root=good.root)
    mine_past(anvil, market, market.settles_after(pid, 0))
    market.end_project(pid)
    p = market.project(pid)
    # the owner keeps the model but gets none of the round back; the trainers keep their pay
    assert p.unallocated == 0 and p.allocated == ETHER and market.credit_of(pid, OWNER.address) == 0
    for who in (t, u):
        as_(market, who).claim(pid, 0, who.address, good.amounts[who.address], good.proof(who.address))
    assert market.project(pid).claimed == ETHER
    # the aggregator pays: its bond went to the revealers, nothing comes back to it at the end
    assert market.pool_share_of(pid, 0, t.address) == market.pool_share_of(pid, 0, u.address) == bond // 2
    assert market.credit_of(pid, AGG.address) == 0


def test_8a_a_claim_deadline_and_a_sweep_of_exactly_what_no_leaf_claimed(market: MarketClient, anvil: Anvil) -> None:
    pid, _ = market.create_project(fast(num_rounds=1, claim_window=6))
    t, u = TRAINERS[0], TRAINERS[1]
    for a in (t, u):
        as_(market, a).register(pid)
    reveal_round(market, anvil, pid, [t, u])
    tree = RewardTree.build({t.address: 7 * ETHER // 10, u.address: 2 * ETHER // 10})  # 0.1 paid to nobody
    as_(market, AGG).finalize_round(pid, 0, "QmM", "QmR", tree.root)
    reverts("ProjectNotEnded", as_(market, OUTSIDER).sweep, pid)
    mine_past(anvil, market, market.settles_after(pid, 0))
    as_(market, OUTSIDER).end_project(pid)
    as_(market, t).claim(pid, 0, t.address, tree.amounts[t.address], tree.proof(t.address))
    reverts("ClaimsStillOpen", as_(market, OUTSIDER).sweep, pid)
    mine_past(anvil, market, market.project(pid).claim_deadline or 0)
    reverts("ClaimsClosed", as_(market, u).claim, pid, 0, u.address, tree.amounts[u.address], tree.proof(u.address))
    as_(market, OUTSIDER).sweep(pid)
    assert market.credit_of(pid, OWNER.address) == 3 * ETHER // 10  # u's 0.2 and the 0.1 no leaf paid
    reverts("ClaimsClosed", as_(market, OUTSIDER).sweep, pid)
    # stakes are not the sweep's: u still takes its own back
    before = balance(market, u.address)
    fee = as_(market, u).withdraw_stake(pid).fee_wei
    assert balance(market, u.address) - before + fee == STAKE


def test_8b_committing_without_revealing_costs_the_deposit(market: MarketClient, anvil: Anvil) -> None:
    pid, _ = market.create_project(fast(num_rounds=1))
    p0 = market.project(pid)
    deposit = p0.commit_deposit
    assert 0 < deposit <= STAKE
    honest, sybil = TRAINERS[0], TRAINERS[1]
    for a in (honest, sybil):
        as_(market, a).register(pid)
    secrets = submit(market, pid, 0, honest)
    submit(market, pid, 0, sybil)  # commits, then waits to see the others' reveals, and never reveals
    mine_past(anvil, market, p0.commit_deadline)
    as_(market, honest).reveal(pid, 0, *secrets)
    reverts("RevealStillOpen", as_(market, OUTSIDER).forfeit_deposit, pid, 0, sybil.address)
    mine_past(anvil, market, p0.reveal_deadline)
    reverts("AlreadyRevealed", as_(market, OUTSIDER).forfeit_deposit, pid, 0, honest.address)
    as_(market, OUTSIDER).forfeit_deposit(pid, 0, sybil.address)
    reverts("NotCommitted", as_(market, OUTSIDER).forfeit_deposit, pid, 0, sybil.address)
    assert market.registration(pid, sybil.address) == (True, STAKE - deposit)
    as_(market, AGG).finalize_round(pid, 0, "QmM", "QmR", RewardTree.build({honest.address: ETHER}).root)
    assert market.pool_share_of(pid, 0, honest.address) == deposit  # to the round's revealer
    assert market.pool_share_of(pid, 0, sybil.address) == 0
    reverts("NothingToWithdraw", as_(market, sybil).claim_pool_share, pid, 0)
    mine_past(anvil, market, market.settles_after(pid, 0))
    market.end_project(pid)
    before = balance(market, sybil.address)
    fee = as_(market, sybil).withdraw_stake(pid).fee_wei
    assert balance(market, sybil.address) - before + fee == STAKE - deposit


# ---------------------------------------------------------------------- 8c: payments to another address


def _blocklist_token(market: MarketClient, tmp_path: Path) -> Any:
    from devnet.compiler import compile_contracts
    from market.chain import RevertDecoder, TxSender

    (tmp_path / "src").mkdir()
    shutil.copy(toolpaths.CONTRACTS / "test" / "mocks" / "HostileTokens.sol", tmp_path / "src")
    art = compile_contracts(tmp_path / "src", tmp_path / "build")["BlocklistToken"]
    w3 = market.w3
    sender = TxSender(w3, OWNER, RevertDecoder(art.abi))
    rc = sender.send(w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(), action="deploy")
    token = w3.eth.contract(address=w3.eth.get_transaction_receipt(rc.tx_hash)["contractAddress"], abi=art.abi)
    for a in (OWNER, TRAINERS[0], AGG):
        sender.send(token.functions.mint(a.address, 10 * ETHER), action="mint")
    return sender, token


def _cli(module: str, *args: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_8c_a_blocklisted_trainer_and_owner_are_paid_at_the_address_they_name(
    market: MarketClient, anvil: Anvil, anvil_deployment: Deployment, tmp_path: Path
) -> None:
    sender, token = _blocklist_token(market, tmp_path)
    pid, _ = market.create_project(fast(num_rounds=2, token=token.address))
    t = TRAINERS[0]
    me = as_(market, t)
    me.register(pid)
    reveal_round(market, anvil, pid, [t])
    tree = RewardTree.build({t.address: ETHER})
    as_(market, AGG).finalize_round(pid, 0, "QmM", "QmR", tree.root)
    bond = market.project(pid).bond_held
    me.dispute(pid, 0, "QmEvidence")
    as_(market, ARB).resolve_dispute(pid, 0, True, "QmReason", corrected_root=tree.root)  # bond back, bond slashed
    sender.send(token.functions.setBlocked(t.address, True), action="block")
    mine_past(anvil, market, market.settles_after(pid, 0))
    with pytest.raises(ContractRevert):  # the token refuses to pay the trainer's own address
        me.claim(pid, 0, t.address, ETHER, tree.proof(t.address))
    me.claim(pid, 0, t.address, ETHER, tree.proof(t.address), recipient=RESCUE.address)
    me.claim_pool_share(pid, 0, RESCUE.address)
    mine_past(anvil, market, market.project(pid).reveal_deadline)
    as_(market, OUTSIDER).expire_round(pid, 1)  # nobody revealed: its share returns to the owner at the end
    as_(market, OUTSIDER).end_project(pid)
    with pytest.raises(ContractRevert):
        me.withdraw_stake(pid)

    dep = tmp_path / "deployment.json"
    anvil_deployment.save(dep)
    common = ["--rpc", anvil.url, "--deployment", dep, "--json"]
    bad = _cli("trainer.cli", "withdraw", pid, *common, "--dev-account", 3, "--to", "0xnope")
    assert bad.returncode == ExitCode.CONFIG and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    done = _cli("trainer.cli", "withdraw", pid, *common, "--dev-account", 3, "--to", RESCUE.address)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["recipient"], out["stake"], out["credit"]) == (RESCUE.address, STAKE, BOND)
    assert token.functions.balanceOf(RESCUE.address).call() == ETHER + bond + STAKE + BOND
    assert market.registration(pid, t.address) == (True, 0) and market.credit_of(pid, t.address) == 0

    # the owner, blocked after it escrowed the budget, takes the returned share the same way
    sender.send(token.functions.setBlocked(OWNER.address, True), action="block")
    with pytest.raises(ContractRevert):
        market.withdraw_credit(pid)
    done = _cli("market.cli", "withdraw", pid, *common, "--dev-account", 0, "--to", RESCUE2.address)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["credit"] == ETHER == token.functions.balanceOf(RESCUE2.address).call()
    reverts("ZeroRecipient", as_(market, AGG).withdraw_credit, pid, "0x" + "0" * 40)

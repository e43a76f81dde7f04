"""A whole project lifecycle on a real anvil node, and every way it can be refused."""

from __future__ import annotations

import os
import threading

import pytest

from devnet.anvil import Anvil
from market.chain import CommitState, MarketClient, ProjectParams, RoundStatus, commitment_of
from market.chain.accounts import dev_account
from market.errors import ConfigError, ContractRevert, InsufficientFunds
from market.protocol.merkle import RewardTree

pytestmark = pytest.mark.integration

ETHER = 10**18
OWNER, AGG, ARB = dev_account(0), dev_account(1), dev_account(2)
TRAINERS = [dev_account(i) for i in range(3, 7)]


def params(**kw: object) -> ProjectParams:
    base = {
        "aggregator": AGG.address, "arbiter": ARB.address, "num_rounds": 2, "reward_per_round": ETHER,
        "commit_window": 20, "reveal_window": 20, "challenge_window": 10, "spec_cid": "QmSpec",
        "stake": ETHER // 10, "dispute_bond": ETHER // 20, "claim_window": 40,
    }
    base.update(kw)
    return ProjectParams(**base)  # type: ignore[arg-type]


def as_(market: MarketClient, acct: object) -> MarketClient:
    return market.with_account(acct)  # type: ignore[arg-type]


def mine_past(anvil: Anvil, market: MarketClient, block: int) -> None:
    gap = block - market.block_number
    if gap >= 0:
        anvil.mine(gap + 1)


def submit(market: MarketClient, pid: int, rnd: int, trainer: object) -> tuple[str, bytes, bytes]:
    cid, digest, salt = f"Qm{os.urandom(8).hex()}", os.urandom(32), os.urandom(32)
    t = as_(market, trainer)
    t.commit(pid, rnd, commitment_of(pid, rnd, t.account_address, cid, digest, salt))
    return cid, digest, salt


def test_full_lifecycle_pays_exactly_and_returns_only_unallocated(market: MarketClient, anvil: Anvil) -> None:
    w3 = market.w3
    pid, _ = market.create_project(params())
    for t in TRAINERS[:3]:
        as_(market, t).register(pid, ETHER // 10)
    assert market.project(pid).stakes_held == 3 * ETHER // 10

    # round 0: three commits, three reveals
    secrets = {t.address: submit(market, pid, 0, t) for t in TRAINERS[:3]}
    info = market.project(pid)
    with pytest.raises(ContractRevert) as e:
        as_(market, TRAINERS[0]).reveal(pid, 0, *secrets[TRAINERS[0].address])
    assert e.value.name == "RevealNotOpen"
    mine_past(anvil, market, info.commit_deadline)
    for t in TRAINERS[:3]:
        as_(market, t).reveal(pid, 0, *secrets[t.address])
        assert market.commitment_state(pid, 0, t.address) == CommitState.REVEALED
    reveals = market.reveals(pid, 0)
    assert {r.trainer for r in reveals} == {t.address for t in TRAINERS[:3]}
    assert all(r.cid == secrets[r.trainer][0] and r.digest == secrets[r.trainer][1] for r in reveals)

    # finalize round 0 paying 0.6 / 0.4 / 0 (the third rejected)
    amounts0 = {TRAINERS[0].address: 6 * ETHER // 10, TRAINERS[1].address: 4 * ETHER // 10, TRAINERS[2].address: 0}
    tree0 = RewardTree.build(amounts0)
    agg = as_(market, AGG)
    with pytest.raises(ContractRevert) as e:
        agg.finalize_round(pid, 0, "QmModel0", "QmRecord0", tree0.root, ETHER)
    assert e.value.name == "RevealStillOpen"
    mine_past(anvil, market, info.reveal_deadline)
    agg.finalize_round(pid, 0, "QmModel0", "QmRecord0", tree0.root, ETHER)
    r0 = market.round(pid, 0)
    assert r0.status == RoundStatus.FINALIZED and r0.allocation == ETHER
    assert [f.model_cid for f in market.finalized(pid)] == ["QmModel0"]

    # claims wait for the challenge window
    t0 = as_(market, TRAINERS[0])
    with pytest.raises(ContractRevert) as e:
        t0.claim(pid, 0, TRAINERS[0].address, amounts0[TRAINERS[0].address], tree0.proof(TRAINERS[0].address))
    assert e.value.name == "RoundNotClaimable"
    assert e.value.error_args["claimableAfter"] == market.settles_after(pid, 0) + 1
    anvil.mine(11)
    before = w3.eth.get_balance(TRAINERS[0].address)
    # anyone may trigger a claim; the money goes to the trainer
    as_(market, TRAINERS[3]).claim(pid, 0, TRAINERS[0].address, amounts0[TRAINERS[0].address], tree0.proof(TRAINERS[0].address))
    assert w3.eth.get_balance(TRAINERS[0].address) - before == 6 * ETHER // 10
    with pytest.raises(ContractRevert) as e:
        t0.claim(pid, 0, TRAINERS[0].address, amounts0[TRAINERS[0].address], tree0.proof(TRAINERS[0].address))
    assert e.value.name == "NothingToClaim"
    # a proof for a larger amount fails
    with pytest.raises(ContractRevert) as e:
        t0.claim(pid, 0, TRAINERS[0].address, ETHER, tree0.proof(TRAINERS[0].address))
    assert e.value.name == "InvalidProof"

    # round 1: only trainer 1 submits; the allocation is fixed (a whole share), whatever the aggregator wants
    info = market.project(pid)
    assert market.round_allocation(pid) == info.round_allocation == ETHER
    s1 = submit(market, pid, 1, TRAINERS[1])
    mine_past(anvil, market, info.commit_deadline)
    as_(market, TRAINERS[1]).reveal(pid, 1, *s1)
    mine_past(anvil, market, info.reveal_deadline)
    amounts1 = dict(amounts0)
    amounts1[TRAINERS[1].address] += ETHER // 2  # the tree pays only half: the rest is swept later
    tree1 = RewardTree.build(amounts1)
    with pytest.raises(ConfigError, match="allocates exactly"):
        agg.finalize_round(pid, 1, "QmModel1", "QmRecord1", tree1.root, ETHER // 2)
    agg.finalize_round(pid, 1, "QmModel1", "QmRecord1", tree1.root)
    with pytest.raises(ContractRevert) as e:
        market.end_project(pid)
    assert e.value.name == "RoundUnsettled"
    anvil.mine(11)
    # cumulative claim pays the difference: trainer 1 never claimed, gets 0.4 + 0.5
    before = w3.eth.get_balance(TRAINERS[1].address)
    as_(market, TRAINERS[3]).claim(pid, 1, TRAINERS[1].address, amounts1[TRAINERS[1].address], tree1.proof(TRAINERS[1].address))
    assert w3.eth.get_balance(TRAINERS[1].address) - before == 9 * ETHER // 10
    # anyone may end the project; the owner's return (nothing unallocated here) and the aggregator's bond are credited
    as_(market, TRAINERS[3]).end_project(pid)
    p = market.project(pid)
    assert p.ended and p.unallocated == 0 and p.allocated == 2 * ETHER and p.claimed == 3 * ETHER // 2
    assert market.credit_of(pid, AGG.address) == p.aggregator_bond
    # stakes come back only now
    t2 = as_(market, TRAINERS[2])
    before = w3.eth.get_balance(TRAINERS[2].address)
    rcpt = t2.withdraw_stake(pid)
    assert w3.eth.get_balance(TRAINERS[2].address) - before + rcpt.fee_wei == ETHER // 10
    # what no leaf claimed goes to the owner after the claim deadline, and claims close
    with pytest.raises(ContractRevert) as e:
        market.sweep(pid)
    assert e.value.name == "ClaimsStillOpen"
    mine_past(anvil, market, p.claim_deadline or 0)
    as_(market, TRAINERS[3]).sweep(pid)
    assert market.credit_of(pid, OWNER.address) == ETHER // 2
    with pytest.raises(ContractRevert) as e:
        t0.claim(pid, 1, TRAINERS[0].address, amounts1[TRAINERS[0].address], tree1.proof(TRAINERS[0].address))
    assert e.value.name == "ClaimsClosed"
    owner_before = w3.eth.get_balance(OWNER.address)
    rcpt = market.withdraw_credit(pid)
    assert w3.eth.get_balance(OWNER.address) - owner_before + rcpt.fee_wei == ETHER // 2


def test_dispute_upheld_corrects_the_root_refunds_the_bond_and_slashes_the_aggregator(
    market: MarketClient, anvil: Anvil
) -> None:
    pid, _ = market.create_project(params(num_rounds=2))
    t, u = TRAINERS[0], TRAINERS[1]
    for a in (t, u):
        as_(market, a).register(pid, ETHER // 10)
    cid, digest, salt = submit(market, pid, 0, t)
    info = market.project(pid)
    mine_past(anvil, market, info.commit_deadline)
    as_(market, t).reveal(pid, 0, cid, digest, salt)
    mine_past(anvil, market, info.reveal_deadline)
    bad = RewardTree.build({u.address: ETHER})  # pays the trainer that did no work
    as_(market, AGG).finalize_round(pid, 0, "QmM", "QmR", bad.root, ETHER)
    bond = market.project(pid).bond_held
    assert bond == market.project(pid).aggregator_bond > 0
    with pytest.raises(ContractRevert) as e:
        as_(market, TRAINERS[3]).dispute(pid, 0, "QmEvidence", ETHER // 20)
    assert e.value.name == "NotStakeholder"
    with pytest.raises(ContractRevert) as e:
        as_(market, t).dispute(pid, 0, "QmEvidence", 1)
    assert e.value.name == "WrongPayment"
    # two disputes on one round, each with its own evidence; the colluder's comes first
    as_(market, u).dispute(pid, 0, "QmEmpty")
    as_(market, t).dispute(pid, 0, "QmEvidence")
    assert [(d.index, d.evidence_cid) for d in market.disputes_opened(pid)] == [(0, "QmEmpty"), (1, "QmEvidence")]
    assert market.round(pid, 0).status == RoundStatus.DISPUTED
    anvil.mine(11)
    with pytest.raises(ContractRevert) as e:
        as_(market, u).claim(pid, 0, u.address, ETHER, bad.proof(u.address))
    assert e.value.name == "RoundNotClaimable"
    with pytest.raises(ContractRevert) as e:
        as_(market, t).resolve_dispute(pid, 0, True, "QmReason", corrected_root=bytes(31) + b"\x01")
    assert e.value.name == "NotArbiter"
    with pytest.raises(ContractRevert) as e:
        as_(market, ARB).resolve_dispute(pid, 0, True, "QmReason")
    assert e.value.name == "EmptyRoot"
    good = RewardTree.build({t.address: ETHER})
    as_(market, ARB).resolve_dispute(pid, 0, False, "QmNoEvidence", index=0)
    as_(market, ARB).resolve_dispute(pid, 0, True, "QmReason", index=1, corrected_root=good.root)
    r = market.round(pid, 0)
    assert r.status == RoundStatus.CORRECTED and r.rewards_root == "0x" + good.root.hex()
    assert r.allocation == ETHER  # a correction, not a void: the honest trainer keeps the round
    assert [d.outcome.name for d in market.rulings(pid)] == ["DISMISSED", "UPHELD"]
    assert market.credit_of(pid, t.address) == ETHER // 20  # upheld: bond back
    assert market.credit_of(pid, AGG.address) == ETHER // 20  # dismissed: to the defended aggregator
    assert market.project(pid).bond_held == 0 and r.pool == bond  # slashed to the round's revealers
    with pytest.raises(ContractRevert) as e:
        as_(market, u).claim(pid, 0, u.address, ETHER, bad.proof(u.address))
    assert e.value.name == "InvalidProof"
    as_(market, t).claim(pid, 0, t.address, ETHER, good.proof(t.address))
    assert market.pool_share_of(pid, 0, t.address) == bond
    as_(market, t).claim_pool_share(pid, 0)
    with pytest.raises(ContractRevert) as e:
        as_(market, u).claim_pool_share(pid, 0)
    assert e.value.name == "NothingToWithdraw"
    as_(market, t).withdraw_credit(pid)
    assert market.credit_of(pid, t.address) == 0


def test_nonces_are_safe_across_threads(market: MarketClient) -> None:
    """Twelve projects created at once from one key: every one lands, ids distinct."""
    before = market.project_count()
    ids: list[int] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            ids.append(market.create_project(params(num_rounds=1))[0])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert sorted(ids) == list(range(before + 1, before + 13))


def test_insufficient_funds_sends_nothing(market: MarketClient) -> None:
    from eth_account import Account

    poor = Account.create()
    before = market.project_count()
    with pytest.raises(InsufficientFunds, match="fund the account"):
        as_(market, poor).create_project(params())
    assert market.project_count() == before
    assert market.w3.eth.get_transaction_count(poor.address) == 0


def test_commit_rules(market: MarketClient, anvil: Anvil) -> None:
    pid, _ = market.create_project(params())
    t = as_(market, TRAINERS[0])
    with pytest.raises(ContractRevert) as e:
        t.commit(pid, 0, os.urandom(32))
    assert e.value.name == "NotRegistered"
    t.register(pid, ETHER // 10)
    with pytest.raises(ContractRevert) as e:
        t.commit(pid, 1, os.urandom(32))
    assert e.value.name == "RoundNotOpen" and e.value.error_args["currentRound"] == 0
    cid, digest, salt = submit(market, pid, 0, TRAINERS[0])
    with pytest.raises(ContractRevert) as e:
        t.commit(pid, 0, os.urandom(32))
    assert e.value.name == "AlreadyCommitted"
    mine_past(anvil, market, market.project(pid).commit_deadline)
    # a copycat reveals the victim's (cid, digest) under its own commitment: too late to commit
    copy = as_(market, TRAINERS[1])
    copy.register(pid, ETHER // 10)
    with pytest.raises(ContractRevert) as e:
        copy.commit(pid, 0, commitment_of(pid, 0, TRAINERS[1].address, cid, digest, salt))
    assert e.value.name == "CommitClosed"
    with pytest.raises(ContractRevert) as e:
        t.reveal(pid, 0, cid, digest, os.urandom(32))
    assert e.value.name == "RevealMismatch"
    t.reveal(pid, 0, cid, digest, salt)
    with pytest.raises(ContractRevert) as e:
        t.reveal(pid, 0, cid, digest, salt)
    assert e.value.name == "AlreadyRevealed"


def test_erc20_project_escrows_stakes_and_pays_in_the_token(market: MarketClient, anvil: Anvil, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Budget, stakes and bonds in an ERC-20: the client approves exactly what each call needs."""
    import shutil

    from devnet import toolpaths
    from devnet.compiler import compile_contracts
    from market.chain import RevertDecoder, TxSender

    (tmp_path / "src").mkdir()
    shutil.copy(toolpaths.CONTRACTS / "test" / "mocks" / "MockERC20.sol", tmp_path / "src")
    art = compile_contracts(tmp_path / "src", tmp_path / "build")["MockERC20"]
    w3 = market.w3
    sender = TxSender(w3, OWNER, RevertDecoder(art.abi))
    rc = sender.send(w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor("Reward", "RWD"), action="deploy")
    token = w3.eth.contract(address=w3.eth.get_transaction_receipt(rc.tx_hash)["contractAddress"], abi=art.abi)
    for a in (OWNER, TRAINERS[0], AGG):
        sender.send(token.functions.mint(a.address, 10 * ETHER), action="mint")
    eth_before = w3.eth.get_balance(market.address)
    pid, _ = market.create_project(params(token=token.address, stake=ETHER // 10, dispute_bond=ETHER // 20))
    assert token.functions.balanceOf(market.address).call() >= 2 * ETHER
    t = as_(market, TRAINERS[0])
    t.register(pid)
    assert market.registration(pid, TRAINERS[0].address) == (True, ETHER // 10)
    # a trainer without tokens is refused before anything is sent
    with pytest.raises(InsufficientFunds, match="token"):
        as_(market, TRAINERS[1]).register(pid)
    info = market.project(pid)
    mine_past(anvil, market, info.reveal_deadline)
    tree = RewardTree.build({TRAINERS[0].address: ETHER})
    as_(market, AGG).finalize_round(pid, 0, "QmM", "QmR", tree.root, ETHER)
    anvil.mine(11)
    before = token.functions.balanceOf(TRAINERS[0].address).call()
    t.claim(pid, 0, TRAINERS[0].address, ETHER, tree.proof(TRAINERS[0].address))
    assert token.functions.balanceOf(TRAINERS[0].address).call() - before == ETHER
    assert w3.eth.get_balance(market.address) == eth_before  # no ETH moved

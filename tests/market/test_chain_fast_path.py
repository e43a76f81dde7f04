"""The fast paths of the chain client (batched, ABI-encoded reads; raw sends; topic-filtered, paged
event reads) answer exactly what web3's own contract machinery answers, and fail the same way."""

from __future__ import annotations

import os

import pytest

from devnet.anvil import Anvil
from market.chain import CommitState, MarketClient, ProjectParams, commitment_of
from market.chain.accounts import dev_account
from market.chain.events import topic_filter
from market.errors import ChainError, ContractRevert

pytestmark = pytest.mark.integration

ETHER = 10**18
AGG, ARB = dev_account(1), dev_account(2)
TRAINERS = [dev_account(i) for i in range(3, 6)]


def _project(market: MarketClient, rounds: int = 2) -> int:
    pid, _ = market.create_project(ProjectParams(
        aggregator=AGG.address, arbiter=ARB.address, num_rounds=rounds, reward_per_round=ETHER, commit_window=20,
        reveal_window=20, challenge_window=10, spec_cid="QmSpec", stake=ETHER // 10, dispute_bond=ETHER // 20,
        claim_window=40))
    return pid


def _commit(market: MarketClient, pid: int, trainer: object) -> None:
    t = market.with_account(trainer)  # type: ignore[arg-type]
    t.commit(pid, 0, commitment_of(pid, 0, t.account_address, "QmX" + os.urandom(4).hex(), os.urandom(32),
                                   os.urandom(32)))


def test_batched_views_equal_web3_calls(market: MarketClient) -> None:
    pid = _project(market)
    t = market.with_account(TRAINERS[0])
    t.register(pid, ETHER // 10)
    _commit(market, pid, TRAINERS[0])
    view = market.trainer_view(pid, 0, TRAINERS[0].address)
    assert view.info == market.project(pid)
    assert view.commit_state == market.commitment_state(pid, 0, TRAINERS[0].address) == CommitState.COMMITTED
    assert view.registered is True
    assert view.block_number == market.block_number
    f = market.contract.functions
    (p, alloc), head = market._read_many([("getProject", (pid,)), ("roundAllocation", (pid,))])
    assert (p, alloc, head) == (f.getProject(pid).call(), f.roundAllocation(pid).call(), -1)
    outsider = market.trainer_view(pid, 0, TRAINERS[2].address)
    assert (outsider.commit_state, outsider.registered) == (CommitState.NONE, False)


def test_a_batched_read_that_reverts_raises_the_decoded_error(market: MarketClient) -> None:
    with pytest.raises(ContractRevert) as plain:
        market.project(10**9)
    with pytest.raises(ContractRevert) as batched:
        market.trainer_view(10**9, 0, TRAINERS[0].address)
    assert batched.value.name == plain.value.name is not None


def test_a_raw_send_that_would_revert_raises_the_custom_error(market: MarketClient) -> None:
    pid = _project(market)
    outsider = market.with_account(TRAINERS[1])  # never registered
    with pytest.raises(ContractRevert) as e:
        outsider.commit(pid, 0, os.urandom(32))
    assert e.value.name is not None
    assert outsider.commitment_state(pid, 0, TRAINERS[1].address) == CommitState.NONE


def test_event_reads_equal_web3_get_logs_paged_or_not(market: MarketClient, anvil: Anvil) -> None:
    pid = _project(market)
    for trainer in TRAINERS:
        market.with_account(trainer).register(pid, ETHER // 10)
        _commit(market, pid, trainer)
    event = market.contract.events.UpdateCommitted()
    web3_logs = event.get_logs(from_block=0, to_block="latest", argument_filters={"projectId": pid, "round": 0})
    expected = [(e["args"]["trainer"], bytes(e["args"]["commitment"]), e["blockNumber"], e["logIndex"])
                for e in web3_logs]
    for client in (market, MarketClient(market.w3, market.address, market.abi, page_size=2)):
        got = [(c.trainer, c.commitment, c.block_number, c.log_index) for c in client.commits(pid, 0)]
        assert got == expected
        commits, reveals = client.submissions(pid, 0)
        assert [c.trainer for c in commits] == [t.address for t in TRAINERS] and reveals == []
    assert [t for t in market.trainers(pid)] == [t.address for t in TRAINERS]
    raw = market.events("TrainerRegistered", pid)
    assert [r["transactionHash"] for r in raw] == ["0x" + bytes(e["transactionHash"]).hex() for e in
                                                  market.contract.events.TrainerRegistered().get_logs(
                                                      from_block=0, argument_filters={"projectId": pid})]


def test_confirmations_hold_back_the_newest_blocks(market: MarketClient, anvil: Anvil) -> None:
    pid = _project(market)
    market.with_account(TRAINERS[0]).register(pid, ETHER // 10)
    held = MarketClient(market.w3, market.address, market.abi, confirmations=3)
    assert held.trainers(pid) == []  # registered in the newest block: not 3 deep yet
    anvil.mine(3)
    assert held.trainers(pid) == [TRAINERS[0].address]


def test_topic_filter_refuses_what_the_node_cannot_filter(market: MarketClient) -> None:
    assert len(topic_filter(market.abi, "UpdateRevealed", projectId=1)) == 2
    assert topic_filter(market.abi, "UpdateRevealed", round=1)[1] is None  # a gap before a later argument
    with pytest.raises(ValueError):
        topic_filter(market.abi, "UpdateRevealed", cid="Qm")  # not indexed
    with pytest.raises(ChainError):
        market.events("NoSuchEvent", 1)

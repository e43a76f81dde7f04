"""Reward split (exact integer largest remainder), roll-over, cumulative amounts and the
Merkle tree with a verifying proof for every trainer."""

from __future__ import annotations

import pytest
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import RewardError, round_rewards, split_reward
from market.protocol.merkle import leaf_hash, verify

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def addr(i: int) -> str:
    """Distinct addresses with letters in them, so checksum case matters."""
    return to_checksum_address(f"0x{i + 1:04x}" + "fa" * 18)


A, B, C, D = (addr(i) for i in range(4))


def test_split_by_hand() -> None:
    # scores 3 : 1 of 100 wei -> 75, 25; the rejected and the negative get nothing
    al = split_reward(100, {A: 3.0, B: 1.0, C: 5.0, D: -2.0}, accepted=[A, B, D])
    assert al.amounts == {A: 75, B: 25, C: 0, D: 0}
    assert al.allocated == 100 and al.rolled_over == 0
    assert al.shares[A] == 0.75 and al.shares[C] == 0.0


def test_largest_remainder_and_address_tie_break() -> None:
    # 10 wei over three equal scores: 3 each, one left over; the remainders tie -> lowest address
    al = split_reward(10, {C: 1.0, A: 1.0, B: 1.0}, accepted=[A, B, C])
    assert al.amounts == {C: 3, A: 4, B: 3}
    # quotas 100 * (0.5, 0.3, 0.2) / 1.0 with 7 wei: 3.5, 2.1, 1.4 -> floors 3, 2, 1; one left
    # goes to the largest remainder (A: .5)
    al = split_reward(7, {A: 0.5, B: 0.3, C: 0.2}, accepted=[A, B, C])
    assert al.amounts == {A: 4, B: 2, C: 1}
    # lower-case addresses are accepted and normalised
    al = split_reward(1, {A.lower(): 1.0, B.lower(): 1.0}, accepted=[A.lower(), B])
    assert al.amounts == {A: 1, B: 0}


def test_roll_over_when_no_positive_score_or_no_one_accepted() -> None:
    for scores, acc in [
        ({A: -1.0, B: 0.0}, [A, B]),
        ({A: 5.0, B: 2.0}, []),
        ({}, []),
    ]:
        al = split_reward(10**18, scores, acc)
        assert al.allocated == 0 and al.rolled_over == 10**18
        assert set(al.amounts.values()) <= {0}
    assert split_reward(0, {A: 1.0}, [A]).amounts == {A: 0}


def test_bad_inputs() -> None:
    with pytest.raises(RewardError, match="non-negative int"):
        split_reward(-1, {A: 1.0}, [A])
    with pytest.raises(RewardError, match="non-negative int"):
        split_reward(1.5, {A: 1.0}, [A])  # type: ignore[arg-type]
    with pytest.raises(RewardError, match="finite"):
        split_reward(10, {A: float("nan")}, [A])
    with pytest.raises(RewardError, match="not an Ethereum address"):
        split_reward(10, {"bob": 1.0}, ["bob"])
    with pytest.raises(RewardError, match="no score"):
        split_reward(10, {A: 1.0}, [A, B])
    mixed = to_checksum_address("0x" + "ab" * 20)
    assert mixed != mixed.lower()
    with pytest.raises(RewardError, match="twice"):
        split_reward(10, {mixed: 1.0, mixed.lower(): 2.0}, [mixed])
    with pytest.raises(RewardError, match="int >= 0"):
        round_rewards(10, {A: 1.0}, [A], {B: -3})


@SETTINGS
@given(
    st.integers(0, 10**30),
    st.lists(st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.booleans()), min_size=1, max_size=30),
)
def test_split_sums_exactly(reward: int, entries: list[tuple[float, bool]]) -> None:
    scores = {addr(i): s for i, (s, _) in enumerate(entries)}
    accepted = [addr(i) for i, (_, ok) in enumerate(entries) if ok]
    al = split_reward(reward, scores, accepted)
    paid = {a for a, s in scores.items() if a in accepted and s > 0}
    assert all(v >= 0 for v in al.amounts.values())
    assert all(al.amounts[a] == 0 for a in scores if a not in paid)
    if paid and reward:
        assert sum(al.amounts.values()) == reward == al.allocated
        total = sum(scores[a] for a in paid)
        for a in paid:  # each amount is within one wei of its exact quota
            assert abs(al.amounts[a] - reward * scores[a] / total) <= 1 + reward * 1e-12
    else:
        assert sum(al.amounts.values()) == 0 and al.rolled_over == reward


@SETTINGS
@given(
    st.lists(st.integers(0, 10**21), min_size=0, max_size=6),
    st.lists(st.floats(-1, 10, allow_nan=False), min_size=1, max_size=12),
    st.integers(0, 10**21),
)
def test_cumulative_tree_and_every_proof_verifies(
    prev_amounts: list[int], scores_list: list[float], reward: int
) -> None:
    previous = {addr(100 + i): v for i, v in enumerate(prev_amounts)}
    previous.update({addr(0): 7} if scores_list else {})  # a returning trainer
    scores = {addr(i): s for i, s in enumerate(scores_list)}
    accepted = [a for i, a in enumerate(scores) if i % 3 != 2]
    rr = round_rewards(reward, scores, accepted, previous)
    for a in scores:
        assert rr.cumulative[a] == previous.get(a, 0) + rr.increments[a]
    for a, v in previous.items():
        assert rr.cumulative[a] >= v
    assert sum(rr.increments.values()) == rr.allocation.allocated
    assert rr.allocation.allocated + rr.rolled_over == reward
    root = bytes.fromhex(rr.root[2:])  # type: ignore[index]
    assert set(rr.proofs) == set(rr.cumulative)
    for a, amount in rr.cumulative.items():
        proof = [bytes.fromhex(p[2:]) for p in rr.proofs[a]]
        assert verify(proof, root, leaf_hash(a, amount))
        assert not verify(proof, root, leaf_hash(a, amount + 1))


def test_rounds_accumulate() -> None:
    r1 = round_rewards(1000, {A: 1.0, B: 3.0}, [A, B])
    assert r1.increments == {A: 250, B: 750} and r1.cumulative == {A: 250, B: 750}
    r2 = round_rewards(100, {B: 1.0, C: 1.0}, [C], r1.cumulative)
    assert r2.increments == {B: 0, C: 100}
    assert r2.cumulative == {A: 250, B: 750, C: 100}
    assert r2.root != r1.root
    r3 = round_rewards(100, {A: -1.0}, [A], r2.cumulative)  # rolls over: same amounts, same root
    assert r3.rolled_over == 100 and r3.cumulative == r2.cumulative and r3.root == r2.root


def test_round_without_accounts_has_no_root() -> None:
    rr = round_rewards(5, {}, [])
    assert rr.root is None and rr.proofs == {} and rr.rolled_over == 5

"""Splitting a round's reward and building the cumulative-rewards Merkle tree.

`split_reward` gives each accepted trainer a share of the round's reward (an int, wei) in
proportion to the positive part of its score; rejected trainers get 0. The amounts are integers
that sum exactly to the reward: every trainer first gets the floor of its exact quota
(`reward * score / total`, computed with exact fractions of the float scores), and the wei left
over go one each to the largest remainders, ties broken by ascending lower-case address. If no
one is accepted or every accepted score is <= 0, nothing is allocated and the whole reward rolls
over.

`round_rewards` adds this round's increments to the previous cumulative amounts and builds the
`market.merkle.RewardTree` the contract checks claims against, with every account's proof.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from fractions import Fraction

from eth_utils import is_address, to_checksum_address

from aggregator.errors import RewardError
from market.protocol.merkle import RewardTree

__all__ = ["Allocation", "RoundRewards", "round_rewards", "split_reward"]


@dataclass(frozen=True)
class Allocation:
    """One round's split: `amounts` (checksum address -> wei, every trainer of the round, 0 for the
    rejected), what was allocated, what rolls over, and each trainer's exact share of the reward."""

    reward: int
    amounts: dict[str, int]
    allocated: int
    rolled_over: int
    shares: dict[str, float]


@dataclass(frozen=True)
class RoundRewards:
    """The reward record of a round: per-trainer increments, cumulative entitlements after the
    round, the Merkle root (0x-hex; None when no account exists yet) and every account's proof."""

    increments: dict[str, int]
    cumulative: dict[str, int]
    root: str | None
    proofs: dict[str, list[str]]
    allocation: Allocation

    @property
    def rolled_over(self) -> int:
        return self.allocation.rolled_over


def _address(a: str) -> str:
    if not isinstance(a, str) or not is_address(a):
        raise RewardError(f"{a!r} is not an Ethereum address; key rewards by trainer address")
    return to_checksum_address(a)


def _normalise(keys: Collection[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k in keys:
        c = _address(k)
        if c in out.values():
            raise RewardError(f"{what} lists {c} twice (addresses differing only in case)")
        out[k] = c
    return out


def split_reward(reward: int, scores: Mapping[str, float], accepted: Collection[str]) -> Allocation:
    """Split `reward` wei over the trainers in `scores`, paying only those in `accepted`."""
    if isinstance(reward, bool) or not isinstance(reward, int) or reward < 0:
        raise RewardError(f"the round's reward must be a non-negative int (wei), got {reward!r}")
    names = _normalise(list(scores), "scores")
    acc = set(_normalise(list(accepted), "accepted").values())
    unknown = acc - set(names.values())
    if unknown:
        raise RewardError(f"accepted trainers {sorted(unknown)} have no score; score every accepted trainer")
    positive: dict[str, Fraction] = {}
    for raw, addr in names.items():
        raw_score = scores[raw]
        if isinstance(raw_score, bool) or not isinstance(raw_score, numbers.Real):
            raise RewardError(f"score of {addr} is {raw_score!r}; scores must be finite numbers")
        s = float(raw_score)
        if not math.isfinite(s):
            raise RewardError(f"score of {addr} is {s!r}; scores must be finite numbers")
        if addr in acc and s > 0:
            positive[addr] = Fraction(s)
    amounts = {addr: 0 for addr in names.values()}
    total = sum(positive.values(), Fraction(0))
    if reward == 0 or total <= 0:
        return Allocation(reward, amounts, 0, reward, {a: 0.0 for a in amounts})
    remainders: list[tuple[Fraction, str]] = []
    for addr, p in positive.items():
        quota = reward * p / total
        whole = quota.numerator // quota.denominator
        amounts[addr] = whole
        remainders.append((quota - whole, addr))
    left = reward - sum(amounts.values())
    # largest remainder first; equal remainders by ascending lower-case address
    remainders.sort(key=lambda r: (-r[0], r[1].lower()))
    for _, addr in remainders[:left]:
        amounts[addr] += 1
    assert sum(amounts.values()) == reward
    shares = {a: float(positive[a] / total) if a in positive else 0.0 for a in amounts}
    return Allocation(reward, amounts, reward, 0, shares)


def round_rewards(
    reward: int,
    scores: Mapping[str, float],
    accepted: Collection[str],
    previous_cumulative: Mapping[str, int] | None = None,
) -> RoundRewards:
    """Split the round's reward, add it to the previous cumulative amounts and build the tree.

    Every account that ever had an entry (previous cumulative) or took part in this round is a
    leaf, including those at 0, so every trainer of the round gets a proof.
    """
    alloc = split_reward(reward, scores, accepted)
    prev_names = _normalise(list(previous_cumulative or {}), "previous cumulative")
    cumulative: dict[str, int] = {}
    for raw, addr in prev_names.items():
        v = (previous_cumulative or {})[raw]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise RewardError(f"previous cumulative of {addr} is {v!r}; it must be an int >= 0")
        cumulative[addr] = v
    for addr, inc in alloc.amounts.items():
        cumulative[addr] = cumulative.get(addr, 0) + inc
    if not cumulative:
        return RoundRewards({}, {}, None, {}, alloc)
    tree = RewardTree.build(cumulative)
    return RoundRewards(
        increments=dict(alloc.amounts),
        cumulative=dict(tree.amounts),
        root="0x" + tree.root.hex(),
        proofs=tree.proofs_hex(),
        allocation=alloc,
    )

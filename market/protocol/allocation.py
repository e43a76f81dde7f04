"""How much a round may and must allocate, and the protocol minimums: the one Python mirror of
`LearningMarket._allocationOf` and `LearningMarket._checkParams` (trust model v2).

A round's allocation is fixed by the project's parameters and history, never chosen by the
aggregator: everything still unallocated (the round's own share, plus the shares of expired rounds
and slashes nobody else could receive) less the shares reserved for the later rounds, capped so the
project's running total stays a uint96.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MIN_AGGREGATOR_BOND_DIVISOR",
    "MIN_BOND_DIVISOR",
    "MIN_CHALLENGE_WINDOW",
    "MIN_DEPOSIT_DIVISOR",
    "UINT96_MAX",
    "Minimums",
    "Windows",
    "fixed_allocation",
    "minimums",
    "windows",
]

UINT96_MAX = 2**96 - 1
MIN_BOND_DIVISOR = 100
MIN_AGGREGATOR_BOND_DIVISOR = 10
MIN_DEPOSIT_DIVISOR = 1000
MIN_CHALLENGE_WINDOW = 2
#: Default claim window after the end (blocks): about two weeks of 12-second blocks.
DEFAULT_CLAIM_WINDOW = 100_000


def fixed_allocation(unallocated: int, allocated: int, reward_per_round: int, num_rounds: int, round_: int) -> int:
    """What round `round_` allocates when finalized (the contract's `roundAllocation` while it is open)."""
    if not 0 <= round_ < num_rounds:
        raise ValueError(f"round {round_} is not a round of a {num_rounds}-round project")
    available = unallocated - reward_per_round * (num_rounds - round_ - 1)
    return max(0, min(available, UINT96_MAX - allocated))


@dataclass(frozen=True)
class Minimums:
    """The smallest amounts `createProject` accepts for a reward per round."""

    dispute_bond: int
    aggregator_bond: int
    commit_deposit: int

    @property
    def stake(self) -> int:
        """The stake must cover one commit deposit."""
        return self.commit_deposit


def _floor(reward: int, divisor: int) -> int:
    return max(1, reward // divisor)


def minimums(reward_per_round: int) -> Minimums:
    return Minimums(
        dispute_bond=_floor(reward_per_round, MIN_BOND_DIVISOR),
        aggregator_bond=_floor(reward_per_round, MIN_AGGREGATOR_BOND_DIVISOR),
        commit_deposit=_floor(reward_per_round, MIN_DEPOSIT_DIVISOR),
    )


@dataclass(frozen=True)
class Windows:
    """The deadline windows of a project (blocks)."""

    finalize: int
    rule: int
    claim: int


def windows(commit_window: int, reveal_window: int, challenge_window: int) -> Windows:
    """Default finalize, rule and claim windows: the arbiter gets as long as a round's commit and
    reveal phases, the aggregator that long plus a challenge window, which keeps a round's whole
    settlement (challenge + rule) before the next round's finalize deadline."""
    rule = commit_window + reveal_window
    return Windows(finalize=commit_window + reveal_window + challenge_window + 1, rule=rule, claim=DEFAULT_CLAIM_WINDOW)

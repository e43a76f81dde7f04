"""Typed records of what the LearningMarket contract holds and emits."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

ETH = "0x0000000000000000000000000000000000000000"


class RoundStatus(IntEnum):
    NONE = 0
    FINALIZED = 1
    DISPUTED = 2
    VOIDED = 3
    DISMISSED = 4


class CommitState(IntEnum):
    NONE = 0
    COMMITTED = 1
    REVEALED = 2


@dataclass(frozen=True)
class ProjectParams:
    """What `createProject` takes; amounts in wei (or token base units)."""

    aggregator: str
    arbiter: str
    num_rounds: int
    reward_per_round: int
    commit_window: int
    reveal_window: int
    challenge_window: int
    spec_cid: str
    token: str = ETH
    stake: int = 0
    dispute_bond: int = 0

    @property
    def budget(self) -> int:
        return self.num_rounds * self.reward_per_round

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.token,
            self.aggregator,
            self.arbiter,
            self.num_rounds,
            self.commit_window,
            self.reveal_window,
            self.challenge_window,
            self.reward_per_round,
            self.stake,
            self.dispute_bond,
            self.spec_cid,
        )


@dataclass(frozen=True)
class ProjectInfo:
    project_id: int
    owner: str
    current_round: int
    opened_at: int
    token: str
    commit_window: int
    reveal_window: int
    challenge_window: int
    aggregator: str
    num_rounds: int
    ended: bool
    arbiter: str
    pending_owner: str
    reward_per_round: int
    stake: int
    unallocated: int
    allocated: int
    budget: int
    claimed: int
    dispute_bond: int
    stakes_held: int

    @property
    def commit_deadline(self) -> int:
        return self.opened_at + self.commit_window

    @property
    def reveal_deadline(self) -> int:
        return self.commit_deadline + self.reveal_window

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RoundInfo:
    project_id: int
    round: int
    finalized_at: int
    status: RoundStatus
    allocation: int
    cumulative_allocated: int
    rewards_root: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.name.lower()
        return d


@dataclass(frozen=True)
class Reveal:
    project_id: int
    round: int
    trainer: str
    cid: str
    digest: bytes
    block_number: int
    log_index: int


@dataclass(frozen=True)
class Commit:
    project_id: int
    round: int
    trainer: str
    commitment: bytes
    block_number: int
    log_index: int


@dataclass(frozen=True)
class Finalized:
    project_id: int
    round: int
    model_cid: str
    record_cid: str
    rewards_root: bytes
    allocation: int
    block_number: int


@dataclass(frozen=True)
class ProjectCreated:
    project_id: int
    owner: str
    token: str
    budget: int
    spec_cid: str
    block_number: int

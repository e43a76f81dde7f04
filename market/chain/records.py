"""Typed records of what the LearningMarket contract holds and emits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import IntEnum
from typing import Any

from market.protocol.allocation import fixed_allocation, minimums, windows

ETH = "0x0000000000000000000000000000000000000000"


class RoundStatus(IntEnum):
    NONE = 0
    FINALIZED = 1
    #: at least one dispute is pending (claims wait for the ruling, or for the ruling deadline)
    DISPUTED = 2
    #: never reported by the trust-model-v2 contract (voids became corrections); kept for v1 readers
    VOIDED = 3
    DISMISSED = 4
    #: an upheld dispute replaced the round's rewards root
    CORRECTED = 5
    #: not finalized by its deadline: allocated nothing, its share rolled over
    EXPIRED = 6


class DisputeStatus(IntEnum):
    NONE = 0
    PENDING = 1
    UPHELD = 2
    DISMISSED = 3
    LAPSED = 4


class Role(IntEnum):
    AGGREGATOR = 0
    ARBITER = 1


class CommitState(IntEnum):
    NONE = 0
    COMMITTED = 1
    REVEALED = 2
    #: not revealed in time: its deposit went to the round's revealers
    FORFEITED = 3


@dataclass(frozen=True)
class ProjectParams:
    """What `createProject` takes; amounts in wei (or token base units). Every field left None
    takes the protocol default (`market.protocol.allocation`): the minimum amount, or the default
    window for the given commit, reveal and challenge windows."""

    aggregator: str
    arbiter: str
    num_rounds: int
    reward_per_round: int
    commit_window: int
    reveal_window: int
    challenge_window: int
    spec_cid: str
    token: str = ETH
    stake: int | None = None
    dispute_bond: int | None = None
    finalize_window: int | None = None
    rule_window: int | None = None
    claim_window: int | None = None
    aggregator_bond: int | None = None
    commit_deposit: int | None = None

    @property
    def budget(self) -> int:
        return self.num_rounds * self.reward_per_round

    def resolved(self) -> ProjectParams:
        """The same parameters with every default filled in."""
        m = minimums(self.reward_per_round)
        w = windows(self.commit_window, self.reveal_window, self.challenge_window)
        deposit = m.commit_deposit if self.commit_deposit is None else self.commit_deposit
        return replace(
            self,
            stake=max(deposit, m.stake) if self.stake is None else self.stake,
            dispute_bond=m.dispute_bond if self.dispute_bond is None else self.dispute_bond,
            finalize_window=w.finalize if self.finalize_window is None else self.finalize_window,
            rule_window=w.rule if self.rule_window is None else self.rule_window,
            claim_window=w.claim if self.claim_window is None else self.claim_window,
            aggregator_bond=m.aggregator_bond if self.aggregator_bond is None else self.aggregator_bond,
            commit_deposit=deposit,
        )

    def as_tuple(self) -> tuple[Any, ...]:
        r = self.resolved()
        return (
            r.token,
            r.aggregator,
            r.arbiter,
            r.num_rounds,
            r.commit_window,
            r.reveal_window,
            r.challenge_window,
            r.finalize_window,
            r.rule_window,
            r.claim_window,
            r.reward_per_round,
            r.stake,
            r.dispute_bond,
            r.aggregator_bond,
            r.commit_deposit,
            r.spec_cid,
        )


@dataclass(frozen=True)
class ProjectInfo:
    """`getProject`, field for field."""

    project_id: int
    owner: str
    current_round: int
    opened_at: int
    reveals: int
    token: str
    commit_window: int
    reveal_window: int
    finalize_window: int
    aggregator: str
    num_rounds: int
    challenge_window: int
    ended_at: int
    arbiter: str
    claim_window: int
    rule_window: int
    pending_owner: str
    commit_deposit: int
    aggregator_missed: bool
    arbiter_missed: bool
    swept: bool
    reward_per_round: int
    stake: int
    unallocated: int
    allocated: int
    budget: int
    claimed: int
    dispute_bond: int
    stakes_held: int
    aggregator_bond: int
    bond_held: int
    pools: int

    @property
    def ended(self) -> bool:
        return self.ended_at != 0

    @property
    def commit_deadline(self) -> int:
        return self.opened_at + self.commit_window

    @property
    def reveal_deadline(self) -> int:
        return self.commit_deadline + self.reveal_window

    @property
    def finalize_deadline(self) -> int:
        """After it, anyone may expire the open round."""
        return self.reveal_deadline + self.finalize_window

    @property
    def claim_deadline(self) -> int | None:
        """Last block to claim rewards (None while the project runs)."""
        return self.ended_at + self.claim_window if self.ended else None

    @property
    def round_allocation(self) -> int:
        """The open round's fixed allocation (0 once no round is open)."""
        if self.current_round >= self.num_rounds:
            return 0
        return fixed_allocation(self.unallocated, self.allocated, self.reward_per_round, self.num_rounds,
                                self.current_round)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ended": self.ended}


@dataclass(frozen=True)
class RoundInfo:
    """`getRound`: finalized_at is the finalize (or expiry) block; rewards_root the latest correction."""

    project_id: int
    round: int
    finalized_at: int
    status: RoundStatus
    allocation: int
    cumulative_allocated: int
    rewards_root: str
    reveals: int = 0
    pool: int = 0
    pending_disputes: int = 0
    dispute_count: int = 0
    corrected: bool = False

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.name.lower()
        return d


@dataclass(frozen=True)
class DisputeInfo:
    """`getDispute`: one dispute of a round."""

    project_id: int
    round: int
    index: int
    disputer: str
    status: DisputeStatus
    bond: int

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.name.lower()
        return d


@dataclass(frozen=True)
class DisputeOpened:
    """A `RoundDisputed` event: who disputed which round, with what evidence."""

    project_id: int
    round: int
    index: int
    disputer: str
    evidence_cid: str
    bond: int
    block_number: int


@dataclass(frozen=True)
class DisputeRuling:
    """A `DisputeResolved` (upheld or dismissed) or `DisputeLapsed` (not ruled in time) event."""

    project_id: int
    round: int
    index: int
    outcome: DisputeStatus
    reason_cid: str | None
    corrected_root: bytes | None
    block_number: int


@dataclass(frozen=True)
class Expired:
    """A `RoundExpired` event: the round was not finalized in time; `slashed` went to its revealers."""

    project_id: int
    round: int
    slashed: int
    block_number: int


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

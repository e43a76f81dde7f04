"""What the event log says about every project, kept up to date from a `LogReader`.

The dashboard reads the chain only through events (plus one `getProject` view per page), so a
100-round, 100-trainer history costs one paged read at start-up and a few logs per poll after.
Round statuses are derived from events (finalized, disputed, resolved) instead of one
`getRound` call per round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from market.chain.events import ChainEvent


@dataclass
class Dispute:
    index: int
    disputer: str
    evidence_cid: str
    bond: int
    block: int
    #: pending, upheld, dismissed or lapsed (the arbiter did not rule in time: the round stands)
    outcome: str = "pending"
    reason_cid: str | None = None
    corrected_root: str | None = None
    resolved_block: int | None = None


@dataclass
class Finalize:
    model_cid: str
    record_cid: str
    rewards_root: str
    allocation: int
    block: int


@dataclass
class Submission:
    trainer: str
    commit_block: int
    reveal_block: int | None = None
    cid: str | None = None
    digest: str | None = None


@dataclass
class RoundLog:
    round: int
    opened_at: int | None = None
    submissions: dict[str, Submission] = field(default_factory=dict)
    finalized: Finalize | None = None
    disputes: list[Dispute] = field(default_factory=list)
    expired_block: int | None = None

    @property
    def commits(self) -> int:
        return len(self.submissions)

    @property
    def reveals(self) -> int:
        return sum(1 for s in self.submissions.values() if s.reveal_block is not None)

    @property
    def status(self) -> str:
        """none, expired, finalized, disputed, corrected or dismissed: the contract's RoundStatus,
        derived from events (a pending dispute wins; an upheld one replaced the rewards root)."""
        if self.expired_block is not None:
            return "expired"
        if self.finalized is None:
            return "none"
        outcomes = {d.outcome for d in self.disputes}
        if "pending" in outcomes:
            return "disputed"
        if "upheld" in outcomes:
            return "corrected"
        if "dismissed" in outcomes:
            return "dismissed"
        return "finalized"


@dataclass
class Claim:
    trainer: str
    round: int
    cumulative: int
    paid: int
    block: int
    tx_hash: str


@dataclass
class ProjectLog:
    project_id: int
    owner: str
    token: str
    budget: int
    spec_cid: str
    created_block: int
    #: the project's fixed parameters (windows, rounds, roles), from one `getProject` view
    params: dict[str, Any] = field(default_factory=dict)
    trainers: dict[str, int] = field(default_factory=dict)  # address -> stake, registration order
    rounds: dict[int, RoundLog] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    ended_block: int | None = None
    returned: int | None = None
    claimed: dict[str, int] = field(default_factory=dict)

    def round(self, r: int) -> RoundLog:
        if r not in self.rounds:
            self.rounds[r] = RoundLog(r)
        return self.rounds[r]

    @property
    def num_rounds(self) -> int:
        return int(self.params.get("num_rounds", 0))

    @property
    def challenge_window(self) -> int:
        return int(self.params.get("challenge_window", 0))

    def claimed_by(self, trainer: str) -> int:
        return self.claimed.get(trainer, 0)


def _hex(value: Any) -> str:
    return "0x" + bytes(value).hex()


class EventIndex:
    """Per-project state folded from events in log order; each log is applied once (the reader's
    cursor sees to it: a new reader comes with a new index)."""

    def __init__(self) -> None:
        self.projects: dict[int, ProjectLog] = {}
        self.events = 0
        self.last_block = -1

    def apply(self, event: ChainEvent) -> None:
        self.events += 1
        self.last_block = max(self.last_block, event.block_number)
        a = event.args
        pid = event.project_id
        if pid is None:
            return
        if event.name == "ProjectCreated":
            spec = a["specCID"] if "specCID" in a else a["params"]["specCID"]  # the v1 ABI nested it in params
            self.projects[pid] = ProjectLog(pid, a["owner"], a["token"], int(a["budget"]), str(spec), event.block_number)
            return
        p = self.projects.get(pid)
        if p is None:  # a log from before the reader's start block: nothing to attach it to
            return
        handler = getattr(self, "_on_" + event.name, None)
        if handler is not None:
            handler(p, a, event)

    def _on_TrainerRegistered(self, p: ProjectLog, a: dict[str, Any], e: ChainEvent) -> None:
        p.trainers[a["trainer"]] = int(a["stake"])

    def _on_RoundOpened(self, p: ProjectLog, a: dict[str, Any], e: ChainEvent) -> None:
        p.round(int(a["round"])).opened_at = int(a["openedAt"])

    def _on_UpdateCommitted(self, p: ProjectLog, a: dict[str, Any], e: ChainEvent) -> None:
        p.round(int(a["round"])).submissions[a["trainer"]] = Submission(a["trainer"], e.block_number)

    def _on_UpdateRevealed(self, p: ProjectLog, a: dict[str, Any], e: ChainEvent) -> None:
        sub = p.round(int(a["round"])).submissions.get(a["trainer"])
        if sub is not None:
            sub.reveal_block, sub.cid, sub.digest = e.block_number, str(a["cid"]), _hex(a["digest"])

    def _on_RoundFinalized(self, p: ProjectLog, a: dict[str, Any], e: ChainEvent) -> None:
        p.round(int(a["round"])).finalized = Finalize(
            str(a["modelCID"]), str(a["recordCID"]), _hex(a["rewardsRoot"]), int(a["allocation"]), e.block_number
        )

    def _on_RoundDisputed(self, p: ProjectLog, a: dict[str, Any], e: ChainEvent) -> None:
        r = p.round(int(a["round"]))
        r.disputes.append(Dispute(int(a.get("index", len(r.disputes))), a["disputer"], str(a["evidenceCID"]),
                                  int(a["bond"]), e.block_number))

    def _dispute(self, p: ProjectLog, a: dict[str, Any]) -> Dispute | None:
        r = p.round(int(a["round"]))
        index = int(a.get("index", 0))
        return next((d for d in r.disputes if d.index == index), None)

    def _on_DisputeResolved(self, p: ProjectLog, a: dict[str, Any], e: ChainEvent) -> None:
        d = self._dispute(p, a)
        if d is not None:
            d.outcome = "upheld" if a["upheld"] else "dismissed"
            d.reason_cid, d.resolved_block = str(a["reasonCID"]), e.block_number
            if a.get("correctedRoot") is not None and a["upheld"]:
                d.corrected_root = _hex(a["correctedRoot"])

    def _on_DisputeLapsed(self, p: ProjectLog, a: dict[str, Any], e: ChainEvent) -> None:
        d = self._dispute(p, a)
        if d is not None:
            d.outcome, d.resolved_block = "lapsed", e.block_number

    def _on_RoundExpired(self, p: ProjectLog, a: dict[str, Any], e: ChainEvent) -> None:
        p.round(int(a["round"])).expired_block = e.block_number

    def _on_RewardClaimed(self, p: ProjectLog, a: dict[str, Any], e: ChainEvent) -> None:
        p.claims.append(Claim(a["trainer"], int(a["round"]), int(a["cumulative"]), int(a["paid"]), e.block_number,
                              e.tx_hash))
        p.claimed[a["trainer"]] = p.claimed.get(a["trainer"], 0) + int(a["paid"])

    def _on_ProjectEnded(self, p: ProjectLog, a: dict[str, Any], e: ChainEvent) -> None:
        p.ended_block, p.returned = e.block_number, int(a["returned"])

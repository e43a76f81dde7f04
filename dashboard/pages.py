"""The data behind each page, as plain dataclasses built from the event index, one `getProject`
view and the cached round records. Templates only lay these out; tests check them directly."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

from dashboard.index import ProjectLog, RoundLog
from dashboard.service import Dashboard, RecordSummary
from market.chain import ProjectInfo
from market.chain.records import ETH
from market.errors import MarketError
from market.protocol.documents import RoundRecord

__all__ = [
    "NotFound",
    "ProjectPage",
    "ProjectRow",
    "RoundPage",
    "RoundRow",
    "TrainerPage",
    "TrainerRow",
    "ether",
    "phase_of",
    "project_page",
    "projects_page",
    "round_page",
    "trainer_page",
]


class NotFound(MarketError):
    """The page asks for a project, round or trainer the chain does not know."""

    exit_code = 2


def ether(wei: int, token: str = ETH) -> str:
    """Wei as a short decimal string ("1.25"; token amounts in 18-decimal units too)."""
    text = f"{Decimal(wei) / Decimal(10**18):.6f}".rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True)
class Phase:
    name: str  # commit, reveal, finalize, done, ended
    label: str
    deadline: int | None = None
    blocks_left: int | None = None
    seconds_left: float | None = None


def phase_of(info: ProjectInfo, head: int, seconds_per_block: float | None) -> Phase:
    """Where the open round is: committing, revealing, or waiting for the aggregator's finalize."""
    if info.ended:
        return Phase("ended", "project ended")
    if info.current_round >= info.num_rounds:
        return Phase("done", "all rounds finalized")

    def left(deadline: int) -> tuple[int, float | None]:
        blocks = max(0, deadline - head)
        return blocks, blocks * seconds_per_block if seconds_per_block else None

    if head <= info.commit_deadline:
        b, s = left(info.commit_deadline)
        return Phase("commit", f"round {info.current_round}: commits open", info.commit_deadline, b, s)
    if head <= info.reveal_deadline:
        b, s = left(info.reveal_deadline)
        return Phase("reveal", f"round {info.current_round}: reveals open", info.reveal_deadline, b, s)
    return Phase("finalize", f"round {info.current_round}: waiting for the aggregator to finalize")


@dataclass(frozen=True)
class ProjectRow:
    project_id: int
    owner: str
    budget: str
    rounds_done: int
    num_rounds: int
    trainers: int
    ended: bool


def projects_page(d: Dashboard) -> list[ProjectRow]:
    with d.lock:
        return [
            ProjectRow(p.project_id, p.owner, ether(p.budget), sum(1 for r in p.rounds.values() if r.finalized),
                       p.num_rounds, len(p.trainers), p.ended_block is not None)
            for p in sorted(d.index.projects.values(), key=lambda p: p.project_id)
        ]


@dataclass(frozen=True)
class RoundRow:
    round: int
    opened_at: int | None
    commit_deadline: int | None
    reveal_deadline: int | None
    commits: int
    reveals: int
    finalized_at: int | None
    challenge_ends: int | None
    state: str  # open, challenge (finalized, window open), settled, disputed, corrected, dismissed, expired
    allocation: str | None
    record_cid: str | None
    model_cid: str | None
    accuracy: float | None
    accepted: int | None
    rejected: int | None
    reasons: dict[str, int] = field(default_factory=dict)
    record_error: bool = False


def _round_row(p: ProjectLog, r: RoundLog, head: int, summary: RecordSummary | None, wanted: bool) -> RoundRow:
    cw, rw = int(p.params.get("commit_window", 0)), int(p.params.get("reveal_window", 0))
    opened = r.opened_at
    f = r.finalized
    challenge_ends = f.block + p.challenge_window if f else None
    state = r.status
    if state == "none":
        state = "open"
    elif state == "finalized":
        state = "challenge" if challenge_ends is not None and head <= challenge_ends else "settled"
    return RoundRow(
        r.round, opened, opened + cw if opened is not None else None, opened + cw + rw if opened is not None else None,
        r.commits, r.reveals, f.block if f else None, challenge_ends, state, ether(f.allocation) if f else None,
        f.record_cid if f else None, f.model_cid if f else None, summary.accuracy if summary else None,
        summary.accepted if summary else None, summary.rejected if summary else None,
        dict(summary.reasons) if summary else {}, record_error=wanted and summary is None,
    )


@dataclass(frozen=True)
class TrainerRow:
    address: str
    revealed: int
    accepted: int
    rejected: int
    reasons: dict[str, int]
    score: float
    earned_wei: int
    claimed_wei: int

    @property
    def earned(self) -> str:
        return ether(self.earned_wei)

    @property
    def claimed(self) -> str:
        return ether(self.claimed_wei)


@dataclass
class ProjectPage:
    project_id: int
    info: ProjectInfo | None
    log: ProjectLog
    head: int
    phase: Phase | None
    rounds: list[RoundRow]
    trainers: list[TrainerRow]
    accuracy: list[tuple[int, float]]
    rewards: dict[str, int]  # newest valid cumulative amounts
    scores: dict[str, float]  # newest valid cumulative scores
    missing_records: int = 0
    notes: list[str] = field(default_factory=list)


def _project_log(d: Dashboard, project_id: int) -> ProjectLog:
    p = d.index.projects.get(project_id)
    if p is None and not d.health.chain_ok and d.index.events == 0:
        raise NotFound(f"project {project_id} is not known yet: the chain could not be read (see above)")
    if p is None:
        known = sorted(d.index.projects)
        have = f"known projects: {', '.join(map(str, known))}" if known else "no project exists yet"
        raise NotFound(f"project {project_id} does not exist on this market ({have}): check the project id")
    return p


def _newest_valid(p: ProjectLog, summaries: dict[int, RecordSummary], settled_only: bool, head: int) -> RecordSummary | None:
    for r in sorted(p.rounds.values(), key=lambda r: -r.round):
        # a corrected round's root is no longer the record's; a disputed one may become so
        if r.finalized is None or r.status in ("corrected", "disputed") or r.round not in summaries:
            continue
        if settled_only and r.status != "dismissed" and head <= r.finalized.block + p.challenge_window:
            continue
        return summaries[r.round]
    return None


def _summaries(d: Dashboard, p: ProjectLog) -> dict[int, RecordSummary]:
    out = {}
    for r in p.rounds.values():
        if r.finalized is not None:
            s = d.summary(r.finalized.record_cid)
            if s is not None:
                out[r.round] = s
    return out


def project_page(d: Dashboard, project_id: int) -> ProjectPage:
    """Timeline, accuracy, rewards and trainers of one project. Raises NotFound for an unknown
    project; with the chain away, shows what the index last saw (`info` None)."""
    with d.lock:
        p = _project_log(d, project_id)
        head = d.health.head or 0
    info: ProjectInfo | None
    try:
        info = d.project_info(project_id) if d.health.chain_ok else None
    except MarketError:
        info = None
    summaries = _summaries(d, p)
    with d.lock:
        rounds = [_round_row(p, r, head, summaries.get(r.round), r.finalized is not None)
                  for r in sorted(p.rounds.values(), key=lambda r: r.round)]
        if info is not None and not info.ended and info.current_round < info.num_rounds:
            if not any(row.round == info.current_round for row in rounds):
                rounds.append(_round_row(p, RoundLog(info.current_round, info.opened_at), head, None, False))
            rounds = [_with_opened(row, info) for row in rounds]
        newest = _newest_valid(p, summaries, False, head)
        rewards = dict(newest.cumulative_rewards) if newest else {}
        scores = dict(newest.cumulative_scores) if newest else {}
        trainers = _trainer_rows(p, summaries, rewards)
    phase = phase_of(info, head, d.seconds_per_block()) if info is not None else None
    accuracy = [(r, s.accuracy) for r, s in sorted(summaries.items()) if s.accuracy is not None]
    missing = sum(1 for row in rounds if row.record_error)
    return ProjectPage(project_id, info, p, head, phase, rounds, trainers, accuracy, rewards, scores, missing)


def _with_opened(row: RoundRow, info: ProjectInfo) -> RoundRow:
    """The open round's deadlines come from getProject when no RoundOpened event carried them."""
    if row.round != info.current_round or row.opened_at is not None:
        return row
    return replace(row, opened_at=info.opened_at, commit_deadline=info.commit_deadline,
                   reveal_deadline=info.reveal_deadline)


def _trainer_rows(p: ProjectLog, summaries: dict[int, RecordSummary], rewards: dict[str, int]) -> list[TrainerRow]:
    trainers = list(p.trainers)
    revealed = dict.fromkeys(trainers, 0)
    for r in p.rounds.values():
        for t, sub in r.submissions.items():
            if sub.reveal_block is not None:
                revealed[t] = revealed.get(t, 0) + 1
    accepted = dict.fromkeys(revealed, 0)
    rejected = dict.fromkeys(revealed, 0)
    reasons: dict[str, dict[str, int]] = {t: {} for t in revealed}
    score = dict.fromkeys(revealed, 0.0)
    for s in summaries.values():
        for t, code in s.verdicts.items():
            if code is None:
                accepted[t] = accepted.get(t, 0) + 1
            else:
                rejected[t] = rejected.get(t, 0) + 1
                reasons.setdefault(t, {})[code] = reasons.get(t, {}).get(code, 0) + 1
        for t, v in s.scores.items():
            score[t] = score.get(t, 0.0) + v
    return [
        TrainerRow(t, revealed.get(t, 0), accepted.get(t, 0), rejected.get(t, 0), reasons.get(t, {}),
                   score.get(t, 0.0), rewards.get(t, 0), p.claimed_by(t))
        for t in revealed
    ]


@dataclass(frozen=True)
class VerdictRow:
    trainer: str
    accepted: bool
    reason: str | None
    detail: str
    score: float | None
    reward_wei: int
    cumulative_wei: int
    cid: str | None

    @property
    def reward(self) -> str:
        return ether(self.reward_wei)

    @property
    def cumulative(self) -> str:
        return ether(self.cumulative_wei)


@dataclass
class RoundPage:
    project_id: int
    row: RoundRow
    log: RoundLog
    verdicts: list[VerdictRow]
    record: RoundRecord | None  # None until it could be fetched
    record_error: str | None


def round_page(d: Dashboard, project_id: int, round_: int) -> RoundPage:
    with d.lock:
        p = _project_log(d, project_id)
        r = p.rounds.get(round_)
        head = d.health.head or 0
    if r is None:
        raise NotFound(f"round {round_} of project {project_id} has not opened: it has rounds 0-{max(p.rounds, default=0)}")
    record, error = None, None
    if r.finalized is not None:
        try:
            record = d.record(r.finalized.record_cid)
        except MarketError as exc:
            error = str(exc)
    summary = d.summary(r.finalized.record_cid) if r.finalized is not None and record is not None else None
    row = _round_row(p, r, head, summary, r.finalized is not None)
    verdicts = []
    if record is not None:
        cids = {i.trainer: i.cid for i in record.inputs}
        for v in record.verdicts:
            verdicts.append(VerdictRow(v.trainer, v.accepted, v.reason, v.detail, record.scores.get(v.trainer),
                                       record.rewards.get(v.trainer, 0), record.cumulative_rewards.get(v.trainer, 0),
                                       cids.get(v.trainer)))
    else:
        verdicts = [VerdictRow(t, True, None, "awaiting the round record" if r.finalized else "", None, 0, 0, s.cid)
                    for t, s in r.submissions.items()]
    return RoundPage(project_id, row, r, verdicts, record, error)


@dataclass(frozen=True)
class TrainerRound:
    round: int
    committed: int | None
    revealed: int | None
    cid: str | None
    accepted: bool | None
    reason: str | None
    detail: str
    score: float | None
    reward_wei: int
    state: str

    @property
    def reward(self) -> str:
        return ether(self.reward_wei)


@dataclass
class TrainerPage:
    project_id: int
    trainer: str
    stake_wei: int
    rounds: list[TrainerRound]
    earned_wei: int  # entitlement in the newest valid round
    settled_wei: int  # entitlement in the newest settled round: what a claim can pay up to
    claimed_wei: int
    claim_command: str
    missing_records: int

    @property
    def claimable_wei(self) -> int:
        return max(0, self.settled_wei - self.claimed_wei)

    def amount(self, wei: int) -> str:
        return ether(wei)


def trainer_page(d: Dashboard, project_id: int, trainer: str) -> TrainerPage:
    from market.chain import checksum

    address = checksum(trainer, "trainer address")
    with d.lock:
        p = _project_log(d, project_id)
        head = d.health.head or 0
        if address not in p.trainers:
            raise NotFound(f"{address} is not registered in project {project_id}: check the address")
    summaries = _summaries(d, p)
    rows = []
    missing = 0
    for r in sorted(p.rounds.values(), key=lambda r: r.round):
        sub = r.submissions.get(address)
        accepted, reason, detail, score, reward = None, None, "", None, 0
        if r.finalized is not None:
            try:
                record = d.record(r.finalized.record_cid)
            except MarketError as exc:
                missing += 1
                detail = f"record unavailable: {exc}"
            else:
                v = next((v for v in record.verdicts if v.trainer == address), None)
                if v is not None:
                    accepted, reason, detail = v.accepted, v.reason, v.detail
                score = record.scores.get(address)
                reward = record.rewards.get(address, 0)
        state = _round_row(p, r, head, summaries.get(r.round), False).state
        rows.append(TrainerRound(r.round, sub.commit_block if sub else None, sub.reveal_block if sub else None,
                                 sub.cid if sub else None, accepted, reason, detail, score, reward, state))
    newest = _newest_valid(p, summaries, False, head)
    settled = _newest_valid(p, summaries, True, head)
    return TrainerPage(
        project_id, address, p.trainers[address], rows,
        newest.cumulative_rewards.get(address, 0) if newest else 0,
        settled.cumulative_rewards.get(address, 0) if settled else 0,
        p.claimed_by(address), f"trainer claim {project_id} --account NAME", missing,
    )

"""The stages of one round, each a small function over a `RoundState`, in the order `PIPELINE`
runs them: validate -> filter -> aggregate -> score -> reward -> adapt. (`fetch`, the only
stage with I/O, is `inputs.gather_inputs` and runs before.)

A stage reads what earlier stages put in the state and adds its own fields; none does I/O and
none draws randomness but from the round seed. `STAGES` (the names the journal and
AGGREGATOR_CRASH_AT know) is derived from `PIPELINE`, so a new stage is one function and one
entry there. The kernels each stage calls (`validate_updates`, `filter_updates`, ...) are
public: tests and tools call them on their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from aggregator.fairness import pay_weights, stretch_neutral
from aggregator.filters import FilterConfig, Submission, screen
from aggregator.rewards import round_rewards
from aggregator.round.adapt import adapt_hyperparams
from aggregator.round.config import RoundConfig
from aggregator.round.context import RoundContext
from aggregator.round.inputs import Fetched, RoundInputs, digest_of
from aggregator.round.ledger import EvaluationLedger
from aggregator.rules import FedAvg, Rule
from aggregator.scoring import (
    CoalitionExecutor,
    CoalitionUtility,
    Utility,
    make_scorer,
    make_utility,
    paired_noise,
    restrict,
)
from aggregator.valset import ValidationSet
from market.models import evaluate, flatten, sample_losses, unflatten
from market.protocol import numerics
from market.protocol.codec import ModelHeader, encode_model
from market.protocol.documents import RecordedVerdict, UpdateInput, ValidationPolicy
from market.protocol.privacy import DpPolicy
from market.protocol.validation import update_spec, validate_update

__all__ = [
    "PIPELINE",
    "STAGES",
    "ZERO_ADDRESS",
    "Candidate",
    "Evaluator",
    "RewardOutcome",
    "RoundState",
    "Stage",
    "adapt",
    "aggregate",
    "aggregate_updates",
    "allocate_rewards",
    "filter_",
    "filter_updates",
    "pay_noise",
    "reward",
    "score",
    "score_contributions",
    "utility_rule",
    "validate",
    "validate_updates",
]

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


# ---------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class Candidate:
    """One update through validation and filtering: accepted with its flat delta, or rejected."""

    input: UpdateInput
    accepted: bool
    reason: str | None = None
    detail: str = ""
    claimed_samples: int | None = None
    delta: torch.Tensor | None = None  # float32 [d]

    def rejected(self, reason: str, detail: str) -> Candidate:
        return dataclasses.replace(self, accepted=False, reason=reason, detail=detail, delta=None)

    @property
    def verdict(self) -> RecordedVerdict:
        return RecordedVerdict(
            trainer=self.input.trainer,
            accepted=self.accepted,
            reason=self.reason,
            detail=self.detail,
            claimed_samples=self.claimed_samples,
        )


class Evaluator:
    """Accuracy (and loss) of a flat model vector on the validation set, one model reused."""

    def __init__(self, model: torch.nn.Module, like: Mapping[str, torch.Tensor], valset: ValidationSet):
        self.model = model
        self.like = like
        self.valset = valset

    def both(self, vector: torch.Tensor) -> tuple[float, float]:
        self.model.load_state_dict(unflatten(vector, self.like))
        return evaluate(self.model, self.valset.x, self.valset.y)

    def accuracy(self, vector: torch.Tensor) -> float:
        return self.both(vector)[0]

    def neg_loss(self, vector: torch.Tensor) -> float:
        return -self.both(vector)[1]

    def losses(self, vector: torch.Tensor) -> torch.Tensor:
        """Every validation sample's loss (float64 `[m]`), for paired comparisons."""
        self.model.load_state_dict(unflatten(vector, self.like))
        return sample_losses(self.model, self.valset.x, self.valset.y)


@dataclass(frozen=True)
class RewardOutcome:
    increments: dict[str, int]
    cumulative: dict[str, int]
    allocation: int
    root: str
    proofs: dict[str, list[str]]


@dataclass
class RoundState:
    """What the stages share: set up by `compute_from_inputs`, then filled stage by stage."""

    inputs: RoundInputs
    config: RoundConfig
    rule: Rule
    model: torch.nn.Module
    like: dict[str, torch.Tensor]
    base_vector: torch.Tensor
    #: the previous round's global model minus the one before it (None in round 0)
    global_step: torch.Tensor | None
    #: the adaptation state this round starts from (server_lr, best accuracy, epochs, ...)
    state_in: dict[str, Any]
    #: every validation evaluation the round uses (replaying a record's when auditing)
    ledger: EvaluationLedger = field(default_factory=EvaluationLedger)
    # validate
    candidates: list[Candidate] = field(default_factory=list)
    previous: dict[str, torch.Tensor] = field(default_factory=dict)
    # filter
    filter_stats: dict[str, float] = field(default_factory=dict)
    #: the scorer's coalition utility over the rows the validation gate screened (their candidate
    #: indices in `coalition_rows`): the gate fills its memo and the scorer reads from it
    coalitions: CoalitionUtility | None = None
    coalition_rows: tuple[int, ...] = ()
    # aggregate
    aggregate: torch.Tensor | None = None
    aggregate_details: dict[str, Any] = field(default_factory=dict)
    new_vector: torch.Tensor | None = None
    model_bytes: bytes = b""
    # score
    evaluation: dict[str, float] = field(default_factory=dict)
    scorer: str = ""
    #: the coalition utility the scores came from, over the accepted (the pay threshold reads it)
    score_utility: Utility | None = None
    scores: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    score_details: dict[str, Any] = field(default_factory=dict)
    # reward
    rewards: RewardOutcome | None = None
    # adapt
    state_out: dict[str, Any] = field(default_factory=dict)
    hyperparams: dict[str, Any] = field(default_factory=dict)

    @property
    def ctx(self) -> RoundContext:
        return self.inputs.context

    @property
    def policy(self) -> ValidationPolicy:
        return self.ctx.spec.validation

    @property
    def server_lr(self) -> float:
        return float(self.state_in["server_lr"])

    @property
    def accepted(self) -> list[Candidate]:
        return [c for c in self.candidates if c.accepted]


class Stage(Protocol):
    """One step of the round: reads what earlier stages left in `state` and adds its own part."""

    @property
    def name(self) -> str: ...

    def __call__(self, state: RoundState) -> None: ...


@dataclass(frozen=True)
class _Step:
    name: str
    run: Callable[[RoundState], None]

    def __call__(self, state: RoundState) -> None:
        self.run(state)


# ---------------------------------------------------------------------------------------------
# validate


def validate_updates(
    fetched: Sequence[Fetched],
    ctx: RoundContext,
    tensor_spec: Mapping[str, tuple[tuple[int, ...], str]],
    *,
    round_: int | None = None,
    base_model_cid: str | None = None,
) -> list[Candidate]:
    """`market.protocol.validation.validate_update` on every fetched update (format, project,
    round, base model, trainer, keys, shapes, dtype, finite values, norm, claimed samples)."""
    policy = ctx.spec.validation
    out = []
    for f in fetched:
        if f.data is None:
            out.append(Candidate(f.input, False, f.reason, f.detail))
            continue
        v = validate_update(
            f.data,
            expected_digest=None if f.opened else digest_of(f.input),  # an envelope's digest was checked at fetch
            project_id=ctx.project_id,
            round=ctx.round if round_ is None else round_,
            base_model_cid=base_model_cid or ctx.base_model_cid,
            trainer=f.input.trainer,
            spec=tensor_spec,
            max_bytes=policy.max_update_bytes,
            max_norm=policy.max_norm,
            max_header_bytes=policy.max_header_bytes,
        )
        claimed = v.header.num_samples if v.header is not None else None
        if not v.accepted or v.tensors is None:
            out.append(Candidate(f.input, False, v.reason, v.detail, claimed))
            continue
        out.append(Candidate(f.input, True, None, v.detail, claimed, flatten(v.tensors, tensor_spec.keys())))
    return out


def validate(state: RoundState) -> None:
    """This round's updates, and each trainer's previous update (against round r-1 and its base
    model; only the valid ones become free-rider references)."""
    ctx = state.ctx
    tensor_spec = update_spec(state.like)
    state.candidates = validate_updates(state.inputs.updates, ctx, tensor_spec)
    if state.inputs.previous_updates and ctx.previous_base_model_cid is not None:
        checked = validate_updates(
            state.inputs.previous_updates, ctx, tensor_spec, round_=ctx.round - 1,
            base_model_cid=ctx.previous_base_model_cid,
        )
        state.previous = {c.input.trainer: c.delta for c in checked if c.accepted and c.delta is not None}


# ---------------------------------------------------------------------------------------------
# filter


def filter_updates(
    candidates: Sequence[Candidate],
    previous: Mapping[str, torch.Tensor],
    config: FilterConfig,
    global_step: torch.Tensor | None = None,
    utility: Callable[[frozenset[int]], float] | None = None,
    dp: DpPolicy | None = None,
) -> tuple[list[Candidate], dict[str, float]]:
    """Zero and stale updates (free riders), copies (only the first committed is kept),
    outliers and (given `utility`, over the rows of the updates that passed validation) harmful
    updates, by `aggregator.filters.screen` over the updates that passed validation."""
    idx = [i for i, c in enumerate(candidates) if c.accepted]
    out = list(candidates)
    if not idx:
        return out, {}
    stack = torch.stack([candidates[i].delta for i in idx])  # type: ignore[misc]
    subs = [
        Submission(candidates[i].input.trainer, candidates[i].input.commit_block, candidates[i].input.commit_log_index)
        for i in idx
    ]
    report = screen(stack, subs, previous, config, global_step, utility=utility, dp=dp)
    for v in report.verdicts:
        i = idx[v.index]
        if not v.accepted:
            out[i] = out[i].rejected(v.reason, v.detail)
    return out, {f"filter_{k}": float(x) for k, x in report.stats.items()}


def filter_(state: RoundState) -> None:
    rows = tuple(i for i, c in enumerate(state.candidates) if c.accepted)
    if rows and state.config.filters.validation_gate:
        evaluator = Evaluator(state.model, state.like, state.inputs.valset)
        state.coalitions = coalition_utility([state.candidates[i] for i in rows], state.base_vector, evaluator,
                                             state.server_lr, state.policy.max_claimed_samples,
                                             rows=rows, ledger=state.ledger, executor=coalition_executor(state.config))
        state.coalition_rows = rows
    state.candidates, state.filter_stats = filter_updates(
        state.candidates, state.previous, state.config.filters, state.global_step, state.coalitions,
        state.ctx.spec.privacy,
    )


# ---------------------------------------------------------------------------------------------
# aggregate


def claimed_weights(cands: Sequence[Candidate], cap: int) -> torch.Tensor:
    """Claimed sample counts, each capped at the policy's `max_claimed_samples`."""
    return torch.tensor([float(min(int(c.claimed_samples or 0), cap)) for c in cands], dtype=torch.float64)


def aggregate_updates(
    accepted: Sequence[Candidate], rule: Rule, max_claimed_samples: int, d: int
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The rule's aggregate `[d]` of the accepted updates (zeros if none); FedAvg-style rules
    get the claimed sample counts capped at the policy's `max_claimed_samples`."""
    if not accepted:
        return torch.zeros(d, dtype=torch.float32), {}
    stack = torch.stack([c.delta for c in accepted])  # type: ignore[misc]
    weights = claimed_weights(accepted, max_claimed_samples) if rule.uses_weights else None
    agg = rule.aggregate(stack, weights)
    details: dict[str, Any] = {}
    if agg.selected is not None:
        details["selected"] = [accepted[i].input.trainer for i in agg.selected]
    return agg.vector, details


def aggregate(state: RoundState) -> None:
    """new model = base + server_lr * rule(accepted deltas), encoded as the round's model bytes."""
    ctx = state.ctx
    vec, details = aggregate_updates(state.accepted, state.rule, state.policy.max_claimed_samples,
                                     state.base_vector.numel())
    state.aggregate, state.aggregate_details = vec, details
    state.new_vector = numerics.apply_step(state.base_vector, vec, state.server_lr)
    header = ModelHeader(ctx.project_id, ctx.round, ctx.spec.model.architecture)
    state.model_bytes = encode_model(unflatten(state.new_vector, state.like), header)


# ---------------------------------------------------------------------------------------------
# score


def utility_rule(policy_cap: int) -> FedAvg:
    return FedAvg(cap=float(policy_cap))


def coalition_executor(config: RoundConfig) -> CoalitionExecutor | None:
    """Where the round's coalition utilities are measured (`config.compute`); None: here."""
    if config.compute == "local":
        return None
    from aggregator.ray_scoring import executor_for

    return executor_for(config.compute, config.ray_address, config.run_threads or config.threads)


def coalition_utility(
    cands: Sequence[Candidate], base_vector: torch.Tensor, evaluator: Evaluator, server_lr: float,
    max_claimed_samples: int, *, rows: Sequence[int] | None = None, ledger: EvaluationLedger | None = None,
    executor: CoalitionExecutor | None = None,
) -> CoalitionUtility:
    """The scorer's utility over `cands`: minus the validation loss of base + server_lr *
    FedAvg(a coalition's deltas), sample counts capped (memoised). With a `ledger`, every value
    goes through it as a "coalition" evaluation whose members are `rows` (the candidates'
    positions in the round's verdicts; default 0..n-1), and every paired standard error as a
    "paired" one."""
    rule = utility_rule(max_claimed_samples)

    def aggregate_fn(sub: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        return rule(sub, w) * server_lr

    stack = torch.stack([c.delta for c in cands])  # type: ignore[misc]
    weights = claimed_weights(cands, max_claimed_samples)
    record = paired = None
    if ledger is not None:
        index = list(range(len(cands))) if rows is None else [int(r) for r in rows]
        book = ledger

        def record(coalition: frozenset[int], measure: Callable[[], float]) -> float:
            return book.value("coalition", [index[k] for k in coalition], "neg_loss", measure)

        def paired(coalition: frozenset[int], baseline: frozenset[int], measure: Callable[[], float]) -> float:
            return book.value("paired", [index[k] for k in coalition], "loss_se", measure,
                              baseline=[index[k] for k in baseline])

    return make_utility(aggregate_fn, evaluator.neg_loss, stack, base_vector, weights, record, executor,
                        evaluator.losses, paired)


def score_contributions(
    accepted: Sequence[Candidate],
    base_vector: torch.Tensor,
    evaluator: Evaluator,
    server_lr: float,
    scorer_spec: str,
    seed: int,
    max_claimed_samples: int,
    utility: Callable[[frozenset[int]], float] | None = None,
) -> tuple[dict[str, float], int, dict[str, Any]]:
    """Scores of the accepted trainers: the utility of a coalition is minus the validation loss
    of base + server_lr * FedAvg(its deltas) (sample counts capped), the scorer's random
    choices are seeded with the round seed. `utility` (a coalition of positions in `accepted`
    -> value) reuses values evaluated before, e.g. by the validation gate."""
    if not accepted:
        return {}, 0, {}
    if utility is None:
        utility = coalition_utility(accepted, base_vector, evaluator, server_lr, max_claimed_samples)
    result = make_scorer(scorer_spec).score([c.input.trainer for c in accepted], utility, seed)
    details = {k: v for k, v in dict(result.details).items() if isinstance(v, (int, float, bool))}
    return {k: float(v) for k, v in result.scores.items()}, int(result.evaluations), details


def score(state: RoundState) -> None:
    """Validation accuracy and loss before and after, then every accepted trainer's score."""
    assert state.new_vector is not None
    evaluator = Evaluator(state.model, state.like, state.inputs.valset)
    new_vector = state.new_vector
    acc_before, loss_before = state.ledger.values("base", (), ("accuracy", "loss"),
                                                  lambda: evaluator.both(state.base_vector))
    acc_after, loss_after = state.ledger.values("model", (), ("accuracy", "loss"), lambda: evaluator.both(new_vector))
    state.evaluation = {
        "accuracy_before": acc_before, "loss_before": loss_before,
        "accuracy_after": acc_after, "loss_after": loss_after,
    }
    accepted = state.accepted
    state.scorer = state.config.scorer_for(len(accepted))
    shared: Callable[[frozenset[int]], float] | None = None
    if state.coalitions is not None:
        # the accepted are a sub-game of the gate's coalitions: the same models, already evaluated
        position = {row: k for k, row in enumerate(state.coalition_rows)}
        members = [position[i] for i, c in enumerate(state.candidates) if c.accepted]
        shared = restrict(state.coalitions, members)
    elif accepted:
        shared = coalition_utility(accepted, state.base_vector, evaluator, state.server_lr,
                                   state.policy.max_claimed_samples, ledger=state.ledger,
                                   rows=[i for i, c in enumerate(state.candidates) if c.accepted],
                                   executor=coalition_executor(state.config))

    state.score_utility = shared
    state.scores, state.evaluations, state.score_details = score_contributions(
        accepted, state.base_vector, evaluator, state.server_lr, state.scorer, state.ctx.seed,
        state.policy.max_claimed_samples, shared,
    )
    if state.config.filters.pay_norm_bound and accepted:
        state.scores, stretched = stretch_neutral(state.scores, [c.input.trainer for c in accepted],
                                                  [c.delta for c in accepted if c.delta is not None])
        state.score_details["norm_bounded"] = len(stretched)


# ---------------------------------------------------------------------------------------------
# reward


def allocate_rewards(
    candidates: Sequence[Candidate],
    scores: Mapping[str, float],
    available: int,
    previous_cumulative: Mapping[str, int],
) -> RewardOutcome:
    """All of `available` (the round's allocation, fixed by the contract) split over accepted
    trainers by positive score (exact integers); if nobody earns a share the tree pays nobody and
    the allocation waits for the sweep after the claim window. The record's allocation is always
    the chain's. Cumulative amounts continue from the previous round. A tree needs one leaf: with
    nobody ever paid or present, a single zero-address leaf at 0 (the contract refuses a zero root)."""
    all_scores = {c.input.trainer: float(scores.get(c.input.trainer, 0.0)) for c in candidates}
    accepted = [c.input.trainer for c in candidates if c.accepted]
    rr = round_rewards(int(available), all_scores, accepted, dict(previous_cumulative))
    if rr.root is None:
        rr = round_rewards(0, {ZERO_ADDRESS: 0.0}, [], {})
        return RewardOutcome({}, rr.cumulative, int(available), rr.root or "", rr.proofs)
    return RewardOutcome(rr.increments, rr.cumulative, int(available), rr.root, rr.proofs)


def pay_noise(scores: Mapping[str, float], trainers: Sequence[str], utility: Utility | None, floor: float,
              z: float) -> dict[str, float]:
    """How far below 0 each accepted trainer's score may be and still be no negative contribution:
    `floor`, or for a score below `-floor`, `z` paired standard errors of what one update makes
    in this round, if that is larger. The error is measured on the best-scored trainer (ties: the
    earliest): the accepted trainers' coalition against it without that one (one measurement a
    round, only when some score is below `-floor`). The noise is an honest update's, not the
    low scorer's own: a harmful update with a noisy effect must not widen its own band.
    `trainers` are the positions of `utility` (the scores' coalition utility); without one, or
    with `z` 0, `floor` for all."""
    out = {t: floor for t in scores}
    low = [t for t in trainers if scores.get(t, 0.0) <= -floor]
    if z <= 0 or utility is None or not low:
        return out
    best = max(range(len(trainers)), key=lambda k: (scores.get(trainers[k], 0.0), -k))
    everyone = frozenset(range(len(trainers)))
    se = paired_noise(utility, everyone, everyone - {best})
    if se is not None:
        out.update({t: max(floor, z * se) for t in low})
    return out


def reward(state: RoundState) -> None:
    cap = state.policy.max_claimed_samples
    claimed = {c.input.trainer: min(int(c.claimed_samples or 0), cap) for c in state.accepted}
    filters = state.config.filters
    floor = filters.gate_floor * abs(state.evaluation.get("loss_before", 0.0))
    noise = pay_noise(state.scores, [c.input.trainer for c in state.accepted], state.score_utility, floor,
                      filters.gate_noise_z)
    weights = pay_weights(state.scores, claimed, filters.pay_data_share, noise, filters.pay_claim_cap)
    state.rewards = allocate_rewards(state.candidates, weights, state.ctx.available, state.ctx.cumulative_rewards)


# ---------------------------------------------------------------------------------------------
# adapt


def adapt(state: RoundState) -> None:
    """The next round's adaptation state and trainers' hyper-parameters (plateau rule)."""
    state.state_out, state.hyperparams = adapt_hyperparams(
        state.state_in, state.evaluation["accuracy_after"], state.config.adapt, state.ctx.base_hyperparams
    )


#: The round's stages after the fetch, in order.
PIPELINE: tuple[Stage, ...] = (
    _Step("validate", validate),
    _Step("filter", filter_),
    _Step("aggregate", aggregate),
    _Step("score", score),
    _Step("reward", reward),
    _Step("adapt", adapt),
)
#: Stage names, in order, as the journal and AGGREGATOR_CRASH_AT know them.
STAGES: tuple[str, ...] = ("fetch", *(s.name for s in PIPELINE))

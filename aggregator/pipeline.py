"""One round of aggregation as a pipeline of small stages over typed records.

    fetch -> validate -> filter -> aggregate -> score -> reward -> adapt  (compute_round)
    -> publish (model and record bytes to the store)                     (publish_round)
    -> finalize on chain                                                  (the service)

`load_context` reads everything the round depends on from the chain (and the documents the
chain points at); `compute_round` turns that context, the bytes the store holds and a
`RoundConfig` into the new model's bytes and the round record. That computation is a pure,
deterministic function: inputs are sorted by commit order, torch runs with deterministic
algorithms on a fixed number of threads, BLAS on one thread, every random choice comes from
the round's seed (derived from the hash of the reveal-deadline block), and every document is
canonical JSON. So the service after a restart, and any auditor, get byte-identical model and
record bytes, hence the same CIDs.

A malformed update never stops a round: every failure (unreachable content, digest mismatch,
bad format, wrong round, NaN, copy, outlier, ...) becomes a rejected `Verdict` with a stable
reason code. Only outages (the store or the node not answering) raise, so the service can pause
and resume without losing anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import torch

from aggregator import _linalg as la
from aggregator.filters import FilterConfig, Submission, screen
from aggregator.rewards import round_rewards
from aggregator.rules import FedAvg, Rule, make_rule
from aggregator.scoring import make_scorer, make_utility
from aggregator.settings import AdaptPolicy
from aggregator.valset import ValidationSet
from market.chain import MarketClient, RoundStatus
from market.errors import (
    ContentNotFound,
    ContentTooLarge,
    IntegrityError,
    InvalidCid,
    MarketError,
    StorageError,
    StorageUnavailable,
    UpdateRejected,
)
from market.models import build_model, evaluate, flatten, unflatten
from market.protocol.codec import DecodeLimits, ModelHeader, decode_model, encode_model
from market.protocol.documents import ProjectSpec, RoundRecord, UpdateInput, Verdict, round_seed
from market.protocol.reading import ProtocolError, load_record, load_spec
from market.protocol.validation import update_spec, validate_update
from market.storage import fetch_verified

__all__ = [
    "CODE_VERSION",
    "STAGES",
    "Candidate",
    "Computed",
    "Fetched",
    "RoundConfig",
    "RoundContext",
    "adapt_hyperparams",
    "aggregate_updates",
    "allocate_rewards",
    "compute_round",
    "deterministic",
    "fetch_updates",
    "filter_updates",
    "load_context",
    "publish_round",
    "score_contributions",
    "validate_updates",
]

#: Stage names, in order, as the journal and AGGREGATOR_CRASH_AT know them.
STAGES = ("fetch", "validate", "filter", "aggregate", "score", "reward", "adapt")
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
#: The utility of a coalition: validation accuracy of base + server_lr * FedAvg(its deltas).
#: A coalition's utility: minus the validation cross-entropy of its model. Loss rather than
#: accuracy because accuracy moves in steps of 1/|validation set| and saturates after a few
#: rounds, which leaves most marginal contributions at exactly 0 or noise, and a round's reward
#: to whichever trainer happened to score positive; loss keeps rewarding real improvements.
UTILITY = "neg_loss"
#: Scorer used for `scorer = "auto"`: exact Shapley up to this many accepted updates, GTG above.
#: 2^8 = 256 coalition evaluations of a small model take seconds, and exact values carry no Monte
#: Carlo noise: the demo's 8 honest trainers are paid by exact Shapley.
AUTO_EXACT_MAX = 8


def _code_version() -> str:
    try:
        return f"audited-learning-market {version('audited-learning-market')}"
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "audited-learning-market (unknown version)"


CODE_VERSION = _code_version()


class ReadStore(Protocol):
    def cat(self, cid: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes: ...


class UpdateCache(Protocol):
    def cached_update(self, digest: bytes) -> bytes | None: ...
    def cache_update(self, data: bytes) -> None: ...


# ---------------------------------------------------------------------------------------------
# configuration and context


@dataclass(frozen=True)
class RoundConfig:
    """Everything about the aggregator's choices that a round's result depends on. The service
    builds it from its settings; an auditor rebuilds it from the round record."""

    rule: str = "trimmed_mean:beta=0.1"
    filters: FilterConfig = field(default_factory=FilterConfig)
    scorer: str = "auto"
    #: Server learning rate of round 0 (later rounds carry theirs in the record's adapt state).
    server_lr: float = 1.0
    adapt: AdaptPolicy = field(default_factory=AdaptPolicy)
    threads: int = 1
    allow_user_models: bool = False
    fetch_workers: int = 4
    fetch_timeout: float = 30.0
    fetch_attempts: int = 3

    def make_rule(self) -> Rule:
        return make_rule(self.rule)

    def scorer_for(self, n: int) -> str:
        if self.scorer.strip().lower() == "auto":
            return "exact_shapley" if n <= AUTO_EXACT_MAX else "gtg_shapley"
        return self.scorer


@dataclass(frozen=True)
class RoundContext:
    """What round `round` of a project is built on, read from the chain alone."""

    project_id: int
    round: int
    chain_id: int
    contract: str
    spec: ProjectSpec
    base_model_cid: str
    base_hyperparams: dict[str, Any]
    #: The previous round's record `aggregation` (adaptation state); {} for round 0.
    previous_aggregation: dict[str, Any]
    reveal_deadline: int
    seed: int
    #: Revealed updates in commit order (block, log index).
    inputs: tuple[UpdateInput, ...]
    #: Round r-1's revealed updates (free-rider reference) and the model they were built on.
    previous_inputs: tuple[UpdateInput, ...]
    previous_base_model_cid: str | None
    #: Cumulative amounts and scores of the latest round before this one that was not voided.
    cumulative_rewards: dict[str, int]
    cumulative_scores: dict[str, float]
    #: What the contract lets this round allocate (all of it goes out if anyone earns a share).
    available: int


def _opened_at(client: MarketClient, project_id: int, round_: int, finalized: Mapping[int, Any]) -> int:
    if round_ == 0:
        return client.project_created(project_id).block_number
    prev = finalized.get(round_ - 1)
    if prev is None:
        raise ProtocolError(f"round {round_ - 1} of project {project_id} is not finalized: round {round_} has not opened")
    return int(prev.block_number)


def _inputs(client: MarketClient, project_id: int, round_: int) -> tuple[UpdateInput, ...]:
    """Revealed updates with their commit position, sorted by commit order."""
    commits = {c.trainer.lower(): c for c in client.commits(project_id, round_)}
    out = []
    for rv in client.reveals(project_id, round_):
        c = commits.get(rv.trainer.lower())
        if c is None:  # the contract only accepts reveals of commitments: never happens
            raise ProtocolError(f"reveal by {rv.trainer} in round {round_} has no UpdateCommitted event")
        out.append(
            UpdateInput(
                trainer=rv.trainer,
                cid=rv.cid,
                digest="0x" + rv.digest.hex(),
                commit_block=c.block_number,
                commit_log_index=c.log_index,
                reveal_block=rv.block_number,
            )
        )
    out.sort(key=lambda u: (u.commit_block, u.commit_log_index, u.trainer.lower()))
    return tuple(out)


def load_context(
    client: MarketClient,
    store: ReadStore,
    project_id: int,
    round_: int,
    available: int,
    *,
    spec: ProjectSpec | None = None,
) -> RoundContext:
    """The chain's view of round `round_`; `available` is what the contract lets it allocate
    (the service reads it once and journals it; an auditor uses the chain's allocation)."""
    info = client.project(project_id)
    spec = spec or load_spec(client, store, project_id)
    finalized = {f.round: f for f in client.finalized(project_id)}
    opened = _opened_at(client, project_id, round_, finalized)
    deadline = opened + info.commit_window + info.reveal_window
    block = client.w3.eth.get_block(deadline)
    seed = round_seed(bytes(block["hash"]), project_id, round_)

    if round_ == 0:
        if not spec.model.initial_weights_cid:
            raise ProtocolError(
                f"project {project_id}'s spec names no initial weights CID: the owner must publish them"
            )
        base_cid, hyper, prev_agg = spec.model.initial_weights_cid, dict(spec.hyperparams), {}
        prev_base = None
        prev_inputs: tuple[UpdateInput, ...] = ()
    else:
        prev = finalized[round_ - 1]
        prev_record = load_record(store, prev.record_cid)
        base_cid, hyper, prev_agg = prev.model_cid, dict(prev_record.hyperparams), dict(prev_record.aggregation)
        prev_base = prev_record.base_model_cid
        prev_inputs = _inputs(client, project_id, round_ - 1)

    cum_rewards: dict[str, int] = {}
    cum_scores: dict[str, float] = {}
    for r in range(round_ - 1, -1, -1):
        if client.round(project_id, r).status == RoundStatus.VOIDED:
            continue
        rec = load_record(store, finalized[r].record_cid)
        cum_rewards, cum_scores = dict(rec.cumulative_rewards), dict(rec.cumulative_scores)
        break

    return RoundContext(
        project_id=project_id,
        round=round_,
        chain_id=int(client.w3.eth.chain_id),
        contract=client.address,
        spec=spec,
        base_model_cid=base_cid,
        base_hyperparams=hyper,
        previous_aggregation=prev_agg,
        reveal_deadline=deadline,
        seed=seed,
        inputs=_inputs(client, project_id, round_),
        previous_inputs=prev_inputs,
        previous_base_model_cid=prev_base,
        cumulative_rewards=cum_rewards,
        cumulative_scores=cum_scores,
        available=int(available),
    )


# ---------------------------------------------------------------------------------------------
# determinism


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Deterministic torch algorithms on `threads` threads, single-threaded BLAS; restored after."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with la.single_threaded_blas():
            yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)


# ---------------------------------------------------------------------------------------------
# stage records


@dataclass(frozen=True)
class Fetched:
    """One revealed update after the fetch stage: its bytes, or why there are none."""

    input: UpdateInput
    data: bytes | None
    reason: str | None = None
    detail: str = ""


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
    def verdict(self) -> Verdict:
        return Verdict(
            trainer=self.input.trainer,
            accepted=self.accepted,
            reason=self.reason,
            detail=self.detail,
            claimed_samples=self.claimed_samples,
        )


def _digest(u: UpdateInput) -> bytes:
    return bytes.fromhex(u.digest.removeprefix("0x"))


# ---------------------------------------------------------------------------------------------
# fetch


def _fetch_one(
    store: ReadStore, u: UpdateInput, max_bytes: int, timeout: float, attempts: int, cache: UpdateCache | None
) -> Fetched:
    digest = _digest(u)
    if cache is not None:
        data = cache.cached_update(digest)
        if data is not None:
            return Fetched(u, data)
    last = ""
    for _ in range(attempts):
        try:
            data = fetch_verified(store, u.cid, digest, max_bytes, timeout=timeout)  # type: ignore[arg-type]
        except ContentNotFound as exc:
            last = str(exc)
            continue
        except ContentTooLarge as exc:
            return Fetched(u, None, "too_large", str(exc))
        except InvalidCid as exc:
            return Fetched(u, None, "invalid_cid", str(exc))
        except IntegrityError as exc:
            return Fetched(u, None, "digest_mismatch", str(exc))
        except StorageUnavailable:
            raise  # the node itself is down: an outage, the round waits
        except StorageError as exc:
            # this content only (a directory CID, a transfer that times out, ...): retry, then
            # reject, so that no trainer can stall the round with a CID the node cannot serve
            last = str(exc)
            continue
        if cache is not None:
            cache.cache_update(data)
        return Fetched(u, data)
    return Fetched(u, None, "unavailable", last or f"no provider served {u.cid}")


def fetch_updates(
    store: ReadStore,
    inputs: Sequence[UpdateInput],
    *,
    max_bytes: int,
    workers: int = 4,
    timeout: float = 30.0,
    attempts: int = 3,
    cache: UpdateCache | None = None,
) -> list[Fetched]:
    """Fetch every revealed update in parallel (at most `workers` at once), each checked against
    its revealed sha256 and bounded by `max_bytes`. Content failures become reasons (after
    `attempts` tries for content no provider serves); only StorageUnavailable (the node does not
    answer at all) propagates, as an outage."""
    if not inputs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(inputs))), thread_name_prefix="fetch") as pool:
        futures = [pool.submit(_fetch_one, store, u, max_bytes, timeout, attempts, cache) for u in inputs]
        return [f.result() for f in futures]


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
    """`market.validation.validate_update` on every fetched update (format, project, round,
    base model, trainer, keys, shapes, dtype, finite values, norm, claimed samples)."""
    policy = ctx.spec.validation
    out = []
    for f in fetched:
        if f.data is None:
            out.append(Candidate(f.input, False, f.reason, f.detail))
            continue
        v = validate_update(
            f.data,
            expected_digest=_digest(f.input),
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


# ---------------------------------------------------------------------------------------------
# filter


def filter_updates(
    candidates: Sequence[Candidate],
    previous: Mapping[str, torch.Tensor],
    config: FilterConfig,
    global_step: torch.Tensor | None = None,
) -> tuple[list[Candidate], dict[str, float]]:
    """Zero and stale updates (free riders), copies (only the first committed is kept) and
    outliers, by `aggregator.filters.screen` over the updates that passed validation."""
    idx = [i for i, c in enumerate(candidates) if c.accepted]
    out = list(candidates)
    if not idx:
        return out, {}
    stack = torch.stack([candidates[i].delta for i in idx])  # type: ignore[misc]
    subs = [
        Submission(candidates[i].input.trainer, candidates[i].input.commit_block, candidates[i].input.commit_log_index)
        for i in idx
    ]
    report = screen(stack, subs, previous, config, global_step)
    for v in report.verdicts:
        i = idx[v.index]
        if not v.accepted:
            out[i] = out[i].rejected(v.reason, v.detail)
    return out, {f"filter_{k}": float(x) for k, x in report.stats.items()}


# ---------------------------------------------------------------------------------------------
# aggregate


def _weights(cands: Sequence[Candidate], cap: int) -> torch.Tensor:
    return torch.tensor([float(min(int(c.claimed_samples or 0), cap)) for c in cands], dtype=torch.float64)


def aggregate_updates(
    accepted: Sequence[Candidate], rule: Rule, max_claimed_samples: int, d: int
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The rule's aggregate `[d]` of the accepted updates (zeros if none); FedAvg-style rules
    get the claimed sample counts capped at the policy's `max_claimed_samples`."""
    if not accepted:
        return torch.zeros(d, dtype=torch.float32), {}
    stack = torch.stack([c.delta for c in accepted])  # type: ignore[misc]
    weights = _weights(accepted, max_claimed_samples) if rule.uses_weights else None
    agg = rule.aggregate(stack, weights)
    details: dict[str, Any] = {}
    if agg.selected is not None:
        details["selected"] = [accepted[i].input.trainer for i in agg.selected]
    return agg.vector, details


# ---------------------------------------------------------------------------------------------
# score


class _Evaluator:
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


def utility_rule(policy_cap: int) -> FedAvg:
    return FedAvg(cap=float(policy_cap))


def score_contributions(
    accepted: Sequence[Candidate],
    base_vector: torch.Tensor,
    evaluator: _Evaluator,
    server_lr: float,
    scorer_spec: str,
    seed: int,
    max_claimed_samples: int,
) -> tuple[dict[str, float], int, dict[str, Any]]:
    """Scores of the accepted trainers: the utility of a coalition is minus the validation loss
    of base + server_lr * FedAvg(its deltas) (sample counts capped), the scorer's random
    choices are seeded with the round seed."""
    if not accepted:
        return {}, 0, {}
    rule = utility_rule(max_claimed_samples)

    def aggregate_fn(sub: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        return rule(sub, w) * server_lr

    stack = torch.stack([c.delta for c in accepted])  # type: ignore[misc]
    utility = make_utility(aggregate_fn, evaluator.neg_loss, stack, base_vector, _weights(accepted, max_claimed_samples))
    result = make_scorer(scorer_spec).score([c.input.trainer for c in accepted], utility, seed)
    details = {k: v for k, v in dict(result.details).items() if isinstance(v, (int, float, bool))}
    return {k: float(v) for k, v in result.scores.items()}, int(result.evaluations), details


# ---------------------------------------------------------------------------------------------
# reward


@dataclass(frozen=True)
class RewardOutcome:
    increments: dict[str, int]
    cumulative: dict[str, int]
    allocation: int
    root: str
    proofs: dict[str, list[str]]


def allocate_rewards(
    candidates: Sequence[Candidate],
    scores: Mapping[str, float],
    available: int,
    previous_cumulative: Mapping[str, int],
) -> RewardOutcome:
    """All of `available` split over accepted trainers by positive score (exact integers), or 0
    (the reward rolls over) if nobody earns a share; cumulative amounts continue from the
    previous non-voided round. A tree needs one leaf: with nobody ever paid or present, a single
    zero-address leaf at 0 (the contract refuses a zero root)."""
    all_scores = {c.input.trainer: float(scores.get(c.input.trainer, 0.0)) for c in candidates}
    accepted = [c.input.trainer for c in candidates if c.accepted]
    rr = round_rewards(int(available), all_scores, accepted, dict(previous_cumulative))
    if rr.root is None:
        rr = round_rewards(0, {ZERO_ADDRESS: 0.0}, [], {})
        return RewardOutcome({}, rr.cumulative, 0, rr.root or "", rr.proofs)
    return RewardOutcome(rr.increments, rr.cumulative, rr.allocation.allocated, rr.root, rr.proofs)


# ---------------------------------------------------------------------------------------------
# adapt


def initial_state(config: RoundConfig, base_hyperparams: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "server_lr": float(config.server_lr),
        "best_accuracy": None,
        "stale_rounds": 0,
        "epochs": int(base_hyperparams.get("epochs", config.adapt.base_epochs)),
    }


def adapt_hyperparams(
    state_in: Mapping[str, Any], accuracy: float, policy: AdaptPolicy, base_hyperparams: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Plateau rule: track the best validation accuracy; after `patience` rounds without an
    improvement of `min_delta`, lower the server learning rate and ask for more local epochs.
    Returns (state for the next round, hyper-parameters for the next round's trainers)."""
    state = dict(state_in)
    best = state.get("best_accuracy")
    if best is None or accuracy > float(best) + policy.min_delta:
        state["best_accuracy"] = float(accuracy)
        state["stale_rounds"] = 0
    else:
        state["stale_rounds"] = int(state.get("stale_rounds", 0)) + 1
    if policy.enabled and state["stale_rounds"] >= policy.patience:
        state["server_lr"] = max(policy.min_server_lr, float(state["server_lr"]) * policy.lr_factor)
        state["epochs"] = min(policy.max_epochs, int(state["epochs"]) + policy.epochs_step)
        state["stale_rounds"] = 0
    hyper = dict(base_hyperparams)
    if int(state["epochs"]) != int(base_hyperparams.get("epochs", policy.base_epochs)) or "epochs" in hyper:
        hyper["epochs"] = int(state["epochs"])
    return state, hyper


# ---------------------------------------------------------------------------------------------
# the whole computation


@dataclass(frozen=True)
class Computed:
    """A computed round: the new model's bytes, and every record field but its CID."""

    model_bytes: bytes
    fields: dict[str, Any]
    candidates: tuple[Candidate, ...] = field(repr=False, default=())

    @property
    def model_digest(self) -> str:
        return "0x" + hashlib.sha256(self.model_bytes).hexdigest()

    @property
    def root(self) -> bytes:
        return bytes.fromhex(str(self.fields["rewards_root"]).removeprefix("0x"))

    @property
    def allocation(self) -> int:
        return int(self.fields["allocation"])

    def record(self, model_cid: str) -> RoundRecord:
        return RoundRecord(**self.fields, model_cid=model_cid)


def _model_limits(policy_bytes: int) -> DecodeLimits:
    return DecodeLimits(max_bytes=max(2 * policy_bytes, 1 << 20))


def load_base_model(
    store: ReadStore, cid: str, like: Mapping[str, torch.Tensor], max_bytes: int, timeout: float
) -> dict[str, torch.Tensor]:
    """The base model's weights in `like`'s (state_dict) order, checked against its layout."""
    data = store.cat(cid, max_bytes=max_bytes, timeout=timeout)
    try:
        _, tensors = decode_model(data, _model_limits(max_bytes))
    except UpdateRejected as exc:
        raise ProtocolError(f"base model {cid} is not a model file ({exc.detail}): the round cannot be built") from None
    if set(tensors) != set(like):
        raise ProtocolError(
            f"base model {cid} holds tensors {sorted(tensors)[:5]}..., the spec's model has {sorted(like)[:5]}...:"
            " it was built for another architecture"
        )
    out = {}
    for k, ref in like.items():
        t = tensors[k]
        if tuple(t.shape) != tuple(ref.shape) or t.dtype != ref.dtype:
            raise ProtocolError(f"base model {cid}: tensor {k!r} is {t.dtype}{list(t.shape)}, expected {ref.dtype}{list(ref.shape)}")
        out[k] = t.clone()
    return out


def _previous_updates(
    store: ReadStore,
    ctx: RoundContext,
    tensor_spec: Mapping[str, tuple[tuple[int, ...], str]],
    config: RoundConfig,
    cache: UpdateCache | None,
    trainers: set[str],
) -> dict[str, torch.Tensor]:
    """Each trainer's own previous-round update (flat), if it was revealed and is valid."""
    wanted = [u for u in ctx.previous_inputs if u.trainer.lower() in trainers]
    if not wanted or ctx.previous_base_model_cid is None:
        return {}
    fetched = fetch_updates(
        store, wanted, max_bytes=ctx.spec.validation.max_update_bytes, workers=config.fetch_workers,
        timeout=config.fetch_timeout, attempts=1, cache=cache,
    )
    checked = validate_updates(
        fetched, ctx, tensor_spec, round_=ctx.round - 1, base_model_cid=ctx.previous_base_model_cid
    )
    return {c.input.trainer: c.delta for c in checked if c.accepted and c.delta is not None}


def compute_round(
    ctx: RoundContext,
    store: ReadStore,
    config: RoundConfig,
    valset: ValidationSet,
    validation_cid: str,
    *,
    cache: UpdateCache | None = None,
    on_stage: Callable[[str], None] | None = None,
    code_version: str = CODE_VERSION,
) -> Computed:
    """The round's new model bytes and record fields: a pure function of `ctx` (chain data), the
    bytes the store serves and `config`. `on_stage(name)` is called after each stage."""
    done = on_stage or (lambda _name: None)
    policy = ctx.spec.validation
    rule = config.make_rule()
    with deterministic(config.threads):
        model = build_model(ctx.spec.model, allow_import=config.allow_user_models)
        like = model.state_dict()
        tensor_spec = update_spec(like)
        trainers = {u.trainer.lower() for u in ctx.inputs}

        # fetch: the round's updates, each trainer's previous update, the base model
        fetched = fetch_updates(
            store, ctx.inputs, max_bytes=policy.max_update_bytes, workers=config.fetch_workers,
            timeout=config.fetch_timeout, attempts=config.fetch_attempts, cache=cache,
        )
        previous = _previous_updates(store, ctx, tensor_spec, config, cache, trainers)
        base = load_base_model(store, ctx.base_model_cid, like, 2 * policy.max_update_bytes, config.fetch_timeout)
        base_vector = flatten(base, like.keys())
        global_step = None
        if ctx.previous_base_model_cid is not None:
            before = load_base_model(
                store, ctx.previous_base_model_cid, like, 2 * policy.max_update_bytes, config.fetch_timeout
            )
            global_step = base_vector - flatten(before, like.keys())
        done("fetch")

        candidates = validate_updates(fetched, ctx, tensor_spec)
        done("validate")

        candidates, filter_stats = filter_updates(candidates, previous, config.filters, global_step)
        done("filter")

        accepted = [c for c in candidates if c.accepted]
        state_in = dict(ctx.previous_aggregation.get("state_out") or initial_state(config, ctx.base_hyperparams))
        server_lr = float(state_in["server_lr"])
        aggregate, agg_details = aggregate_updates(accepted, rule, policy.max_claimed_samples, base_vector.numel())
        new_vector = base_vector + server_lr * aggregate
        new_state = unflatten(new_vector, like)
        model_bytes = encode_model(new_state, ModelHeader(ctx.project_id, ctx.round, ctx.spec.model.architecture))
        done("aggregate")

        evaluator = _Evaluator(model, like, valset)
        acc_before, loss_before = evaluator.both(base_vector)
        acc_after, loss_after = evaluator.both(new_vector)
        scorer_spec = config.scorer_for(len(accepted))
        scores, evaluations, score_details = score_contributions(
            accepted, base_vector, evaluator, server_lr, scorer_spec, ctx.seed, policy.max_claimed_samples
        )
        done("score")

        rewards = allocate_rewards(candidates, scores, ctx.available, ctx.cumulative_rewards)
        done("reward")

        state_out, hyper_next = adapt_hyperparams(state_in, acc_after, config.adapt, ctx.base_hyperparams)
        done("adapt")

    cumulative_scores = dict(ctx.cumulative_scores)
    for t, s in scores.items():
        cumulative_scores[t] = cumulative_scores.get(t, 0.0) + s
    metrics: dict[str, float] = {
        "accuracy_before": acc_before,
        "loss_before": loss_before,
        "accuracy_after": acc_after,
        "loss_after": loss_after,
        "inputs": float(len(candidates)),
        "accepted": float(len(accepted)),
        "aggregate_norm": float(aggregate.double().norm()),
        "score_evaluations": float(evaluations),
        "validation_samples": float(len(valset)),
    }
    metrics.update(filter_stats)
    metrics.update({f"scorer_{k}": float(v) for k, v in score_details.items()})
    for k, v in metrics.items():
        if not math.isfinite(v):
            metrics[k] = -1.0
    aggregation = {
        "server_lr": server_lr,
        "utility": {"metric": UTILITY, "rule": utility_rule(policy.max_claimed_samples).spec},
        "adapt": config.adapt.model_dump(),
        "state_in": state_in,
        "state_out": state_out,
        "threads": config.threads,
        **({"aggregate": agg_details} if agg_details else {}),
    }
    fields_ = {
        "project_id": ctx.project_id,
        "round": ctx.round,
        "chain_id": ctx.chain_id,
        "contract": ctx.contract,
        "code_version": code_version,
        "seed": ctx.seed,
        "base_model_cid": ctx.base_model_cid,
        "model_digest": "0x" + hashlib.sha256(model_bytes).hexdigest(),
        "validation_cid": validation_cid,
        "rule": rule.spec,
        "filters": dataclasses.asdict(config.filters),
        "scorer": scorer_spec,
        "hyperparams": hyper_next,
        "inputs": list(ctx.inputs),
        "verdicts": [c.verdict for c in candidates],
        "scores": scores,
        "cumulative_scores": cumulative_scores,
        "rewards": rewards.increments,
        "cumulative_rewards": rewards.cumulative,
        "allocation": rewards.allocation,
        "rewards_root": rewards.root,
        "proofs": rewards.proofs,
        "metrics": metrics,
        "aggregation": aggregation,
    }
    return Computed(model_bytes, fields_, tuple(candidates))


@dataclass(frozen=True)
class Published:
    model_cid: str
    record_cid: str
    record_bytes: bytes
    record: RoundRecord


class WriteStore(ReadStore, Protocol):
    def add(self, data: bytes) -> str: ...


def publish_round(store: WriteStore, computed: Computed) -> Published:
    """Add (and so pin) the model, then the record naming the model's CID. Same bytes, same CIDs:
    publishing again after a restart changes nothing."""
    model_cid = store.add(computed.model_bytes)
    record = computed.record(model_cid)
    data = record.to_bytes()
    record_cid = store.add(data)
    return Published(model_cid, record_cid, data, record)


def config_from_record(record: RoundRecord, **io: Any) -> RoundConfig:
    """The RoundConfig a record says its round was computed with (for replays)."""
    agg = record.aggregation
    try:
        return RoundConfig(
            rule=record.rule,
            filters=FilterConfig(**record.filters),
            scorer=record.scorer,
            server_lr=float((agg.get("state_in") or {}).get("server_lr", agg.get("server_lr", 1.0))),
            adapt=AdaptPolicy(**agg.get("adapt", {})),
            threads=int(agg.get("threads", 1)),
            **io,
        )
    except (TypeError, ValueError) as exc:
        raise MarketError(f"round {record.round}'s record holds settings this code cannot replay ({exc})") from None

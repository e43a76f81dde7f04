"""The one round computation: `compute_from_inputs(inputs, config) -> Computed`.

A pure, deterministic function from (chain context, fetched bytes, config) to the new model's
bytes and every field of the round record: inputs are in commit order, torch runs with
deterministic algorithms on a fixed number of threads, BLAS on one thread, every random choice
comes from the round's seed (derived from the hash of the reveal-deadline block), and every
document is canonical JSON. So the service after a restart, an auditor, `market simulate` and
the in-memory simulation (`lab.inprocess`) get byte-identical model and record bytes.

`compute_round` is `gather_inputs` (all the I/O) followed by `compute_from_inputs`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from aggregator.round._determinism import deterministic
from aggregator.round.adapt import initial_state
from aggregator.round.config import CODE_VERSION, UTILITY, RoundConfig
from aggregator.round.context import ReadStore, RoundContext
from aggregator.round.inputs import RoundInputs, UpdateCache, base_model_limit, gather_inputs
from aggregator.round.ledger import EvaluationLedger
from aggregator.round.stages import PIPELINE, Candidate, RoundState, utility_rule
from aggregator.valset import ValidationSet
from market.errors import UpdateRejected
from market.models import build_model, flatten
from market.protocol.codec import DecodeLimits, decode_model
from market.protocol.documents import RoundRecord
from market.protocol.evaluations import CROSS_MACHINE_VERSION, RecordedEvaluation
from market.protocol.reading import ProtocolError

__all__ = ["Computed", "compute_from_inputs", "compute_round", "decode_base_model"]


@dataclass(frozen=True)
class Computed:
    """A computed round: the new model's bytes, and every record field but its CID."""

    model_bytes: bytes
    fields: dict[str, Any]
    candidates: tuple[Candidate, ...] = field(repr=False, default=())
    #: the round's evaluations; after a replay, each recorded value against this machine's
    ledger: EvaluationLedger = field(repr=False, default_factory=EvaluationLedger)
    #: who the published model is sealed for (`ProjectSpec.model_reader_keys`; empty: public)
    model_readers: Mapping[str, str] = field(repr=False, default_factory=dict)

    def published_model(self) -> bytes:
        """The bytes to publish: the model itself, or an envelope of it for `model_readers`
        (fresh randomness each call: the record's digest is of the plaintext `model_bytes`)."""
        if not self.model_readers:
            return self.model_bytes
        from market.protocol.envelope import seal_model  # cryptography only for sealed projects

        return seal_model(self.model_bytes, self.model_readers, int(self.fields["project_id"]), int(self.fields["round"]))

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


def decode_base_model(data: bytes, cid: str, like: Mapping[str, torch.Tensor], max_bytes: int) -> dict[str, torch.Tensor]:
    """A base model's weights in `like`'s (state_dict) order, checked against its layout."""
    try:
        _, tensors = decode_model(data, DecodeLimits(max_bytes=max(2 * max_bytes, 1 << 20)))
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


def _setup(inputs: RoundInputs, config: RoundConfig, recorded: Sequence[RecordedEvaluation] | None) -> RoundState:
    ctx = inputs.context
    model = build_model(ctx.spec.model, allow_import=config.allow_user_models)
    like = model.state_dict()
    limit = base_model_limit(ctx)
    base_vector = flatten(decode_base_model(inputs.base_model, ctx.base_model_cid, like, limit), like.keys())
    global_step = None
    if ctx.previous_base_model_cid is not None and inputs.previous_base_model is not None:
        before = decode_base_model(inputs.previous_base_model, ctx.previous_base_model_cid, like, limit)
        global_step = base_vector - flatten(before, like.keys())
    state_in = dict(ctx.previous_aggregation.get("state_out") or initial_state(config, ctx.base_hyperparams))
    return RoundState(
        inputs=inputs, config=config, rule=config.make_rule(), model=model, like=like,
        base_vector=base_vector, global_step=global_step, state_in=state_in,
        ledger=EvaluationLedger(recorded),
    )


def _fields(state: RoundState, code_version: str) -> dict[str, Any]:
    ctx, config, policy = state.ctx, state.config, state.policy
    assert state.aggregate is not None and state.rewards is not None
    cumulative_scores = dict(ctx.cumulative_scores)
    for t, s in state.scores.items():
        cumulative_scores[t] = cumulative_scores.get(t, 0.0) + s
    metrics: dict[str, float] = {
        **state.evaluation,
        "inputs": float(len(state.candidates)),
        "accepted": float(len(state.accepted)),
        "aggregate_norm": float(state.aggregate.double().norm()),
        "score_evaluations": float(state.evaluations),
        "validation_samples": float(len(state.inputs.valset)),
    }
    metrics.update(state.filter_stats)
    metrics.update({f"scorer_{k}": float(v) for k, v in state.score_details.items()})
    for k, v in metrics.items():
        if not math.isfinite(v):
            metrics[k] = -1.0
    aggregation = {
        "server_lr": state.server_lr,
        "utility": {"metric": UTILITY, "rule": utility_rule(policy.max_claimed_samples).spec},
        "adapt": config.adapt.model_dump(),
        "state_in": state.state_in,
        "state_out": state.state_out,
        "threads": config.threads,
        **({"aggregate": state.aggregate_details} if state.aggregate_details else {}),
    }
    rewards = state.rewards
    return {
        "version": CROSS_MACHINE_VERSION,
        "project_id": ctx.project_id,
        "round": ctx.round,
        "chain_id": ctx.chain_id,
        "contract": ctx.contract,
        "code_version": code_version,
        "seed": ctx.seed,
        "base_model_cid": ctx.base_model_cid,
        "model_digest": "0x" + hashlib.sha256(state.model_bytes).hexdigest(),
        "validation_cid": state.inputs.validation_cid,
        "rule": state.rule.spec,
        "filters": dataclasses.asdict(config.filters),
        "scorer": state.scorer,
        "hyperparams": state.hyperparams,
        "inputs": list(ctx.inputs),
        "verdicts": [c.verdict for c in state.candidates],
        "scores": state.scores,
        "cumulative_scores": cumulative_scores,
        "rewards": rewards.increments,
        "cumulative_rewards": rewards.cumulative,
        "allocation": rewards.allocation,
        "rewards_root": rewards.root,
        "proofs": rewards.proofs,
        "metrics": metrics,
        "aggregation": aggregation,
        "evaluations": state.ledger.records(),
    }


def compute_from_inputs(
    inputs: RoundInputs,
    config: RoundConfig,
    *,
    on_stage: Callable[[str], None] | None = None,
    code_version: str = CODE_VERSION,
    recorded: Sequence[RecordedEvaluation] | None = None,
) -> Computed:
    """The round's new model bytes and record fields, from `inputs` and `config` alone (no I/O).
    `on_stage(name)` is called after each stage of `stages.PIPELINE`. `recorded` (a published
    record's evaluations) replays the round: the recorded values are used, each checked against
    this machine's measurement (`Computed.ledger`)."""
    done = on_stage or (lambda _name: None)
    with deterministic(config.run_threads or config.threads):
        state = _setup(inputs, config, recorded)
        for stage in PIPELINE:
            stage(state)
            done(stage.name)
    return Computed(state.model_bytes, _fields(state, code_version), tuple(state.candidates), state.ledger,
                    inputs.context.spec.model_reader_keys())


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
    recorded: Sequence[RecordedEvaluation] | None = None,
) -> Computed:
    """`gather_inputs` (the fetch stage) then `compute_from_inputs`: what the service and the
    audit run. `on_stage(name)` is called after each stage, "fetch" first."""
    inputs = gather_inputs(store, ctx, valset=valset, validation_cid=validation_cid, config=config, cache=cache)
    if on_stage is not None:
        on_stage("fetch")
    return compute_from_inputs(inputs, config, on_stage=on_stage, code_version=code_version, recorded=recorded)

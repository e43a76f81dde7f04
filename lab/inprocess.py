"""An in-memory federation: the trainers' code and the aggregator's one round computation, in one
process, with no chain and no IPFS.

`LocalProject` keeps what the chain and the store would hold for one project (the spec, every
round's reveals in commit order, every record and every published byte) and builds each round's
`RoundContext` and `RoundInputs` the way `aggregator.round.load_context` and `gather_inputs` do
from the chain and the store. The round itself is `aggregator.round.compute_from_inputs`, the
function the service and the audit run, with the service's own `RoundConfig`
(`aggregator.service.config_from_settings(AggregatorSettings())`): the figures measured here are
the service's figures. `tests/lab/test_inprocess.py` checks that the service's `compute_round`
over a content store holding the same bytes gives byte-identical records and models.

`simulate(RunSpec)` runs one whole federation: N trainers (the last m malicious, each with a
scripted `trainer.behaviours` behaviour) train with `trainer.training.train_local`, submit in a
seeded commit order, and the round is computed; it returns plain data (accuracy per round,
verdicts, scores, rewards) for `benchmarks/marketplace.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from eth_utils import to_checksum_address

from aggregator.round import (
    Computed,
    Evaluator,
    Fetched,
    RoundConfig,
    RoundContext,
    RoundInputs,
    compute_from_inputs,
    decode_base_model,
)
from aggregator.service import config_from_settings
from aggregator.settings import AggregatorSettings
from aggregator.valset import ValidationSet
from market.models import ModelSpec, build_model, flatten, init_model
from market.protocol.allocation import fixed_allocation
from market.protocol.codec import ModelHeader, UpdateHeader, encode_model, encode_update, encode_with_feedback
from market.protocol.documents import ProjectSpec, RoundRecord, UpdateInput
from market.protocol.privacy import DpPolicy, privatize_update
from market.storage import raw_cid
from trainer.behaviours import Behaviour, parse_behaviour
from trainer.behaviours.base import REVEALED_UPDATES
from trainer.context import Colluders, ContextSources, fill_context
from trainer.data import Dataset, load_builtin, train_val_test_split
from trainer.partition import dirichlet, iid, split_by_partition, with_label_noise
from trainer.training import TrainConfig, TrainResult, train_local

__all__ = [
    "DIRICHLET",
    "ETHER",
    "IID",
    "MODELS",
    "PROJECT_ID",
    "LocalProject",
    "RunSpec",
    "derive_seed",
    "service_config",
    "simulate",
    "splits",
    "trainer_address",
]

ETHER = 10**18
IID = "iid"
DIRICHLET = "dirichlet:0.5"
MODELS = {
    "mnist5k": ModelSpec(architecture="mnist_cnn", input_shape=(1, 28, 28), num_classes=10, dataset="mnist5k"),
    "digits": ModelSpec(architecture="digits_mlp", input_shape=(64,), num_classes=10, dataset="digits"),
}
PROJECT_ID = 1  # the simulation's updates claim project 1 (validation checks the header)
SIM_CHAIN_ID = 31337
SIM_CONTRACT = "0x000000000000000000000000000000000000dEaD"
#: Blocks per simulated round: commits at 100 r + 1.., reveals at 100 r + 50.., deadline 100 r + 99.
BLOCKS_PER_ROUND = 100


def trainer_address(i: int) -> str:
    return to_checksum_address(f"0x{0x1000 + i:040x}")


def derive_seed(*parts: object) -> int:
    """A 32-bit seed from any labels (sha256 of their text): every random choice here is named."""
    h = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:4], "big")


def service_config(*, score: bool = True) -> RoundConfig:
    """The aggregator service's defaults (no [aggregator] table, no flags). `score=False` swaps
    the scorer for `equal` (no evaluations): runs that measure accuracy only, whose models do
    not depend on the scores, then skip the cost of scoring."""
    config = config_from_settings(AggregatorSettings())
    return config if score else dataclasses.replace(config, scorer="equal")


# ---------------------------------------------------------------------------------------------
# the chain and the store, in memory


@dataclass
class LocalProject:
    """One project's chain and store state, in memory, round after round.

    `context(reveals)` is what `load_context` would read for the open round, `inputs(...)` what
    `gather_inputs` would fetch, and `finalize(computed)` records the round as finalized (the
    model and the record are "published": their bytes go into `blobs` under their CIDs).
    """

    spec: ProjectSpec
    initial_model: bytes
    num_rounds: int
    reward_per_round: int
    project_id: int = PROJECT_ID
    chain_id: int = SIM_CHAIN_ID
    contract: str = SIM_CONTRACT
    seed: int = 0
    #: every published byte by CID (updates, models, records)
    blobs: dict[str, bytes] = field(default_factory=dict)
    contexts: list[RoundContext] = field(default_factory=list)
    updates: list[tuple[Fetched, ...]] = field(default_factory=list)
    records: list[RoundRecord] = field(default_factory=list)
    models: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        cid = self.publish(self.initial_model)
        self.spec = self.spec.model_copy(update={"model": self.spec.model.model_copy(update={"initial_weights_cid": cid})})
        self.unallocated = self.reward_per_round * self.num_rounds
        self.allocated = 0

    @property
    def round(self) -> int:
        """The open round."""
        return len(self.records)

    @property
    def base_model(self) -> bytes:
        return self.models[-1] if self.models else self.initial_model

    @property
    def base_model_cid(self) -> str:
        return raw_cid(self.base_model)

    @property
    def hyperparams(self) -> dict[str, Any]:
        """The hyper-parameters the open round's trainers train with."""
        return dict(self.records[-1].hyperparams if self.records else self.spec.hyperparams)

    def publish(self, data: bytes) -> str:
        cid = raw_cid(data)
        self.blobs[cid] = data
        return cid

    def reveal(self, submissions: Sequence[tuple[str, bytes]]) -> tuple[UpdateInput, ...]:
        """Publish `(trainer, update bytes)` in commit order; their reveals, as the chain lists them."""
        r = self.round
        out = []
        for pos, (trainer, blob) in enumerate(submissions):
            out.append(UpdateInput(
                trainer=trainer, cid=self.publish(blob), digest="0x" + hashlib.sha256(blob).hexdigest(),
                commit_block=BLOCKS_PER_ROUND * r + pos + 1, commit_log_index=0,
                reveal_block=BLOCKS_PER_ROUND * r + BLOCKS_PER_ROUND // 2 + pos,
            ))
        return tuple(out)

    def context(self, reveals: Sequence[UpdateInput]) -> RoundContext:
        """The open round's context, as `load_context` reads it from the chain."""
        r = self.round
        prev = self.records[-1] if self.records else None
        return RoundContext(
            project_id=self.project_id, round=r, chain_id=self.chain_id, contract=self.contract, spec=self.spec,
            base_model_cid=self.base_model_cid, base_hyperparams=self.hyperparams,
            previous_aggregation=dict(prev.aggregation) if prev else {},
            reveal_deadline=BLOCKS_PER_ROUND * r + BLOCKS_PER_ROUND - 1,
            seed=derive_seed("round-seed", self.seed, r), inputs=tuple(reveals),
            previous_inputs=self.contexts[-1].inputs if self.contexts else (),
            previous_base_model_cid=prev.base_model_cid if prev else None,
            cumulative_rewards=dict(prev.cumulative_rewards) if prev else {},
            cumulative_scores=dict(prev.cumulative_scores) if prev else {},
            available=fixed_allocation(self.unallocated, self.allocated, self.reward_per_round, self.num_rounds, r),
        )

    def inputs(self, ctx: RoundContext, valset: ValidationSet, validation_cid: str) -> RoundInputs:
        """What `gather_inputs` fetches for `ctx` (the open round's, or a finalized round's for a
        replay): every byte is here, so nothing is missing."""
        trainers = {u.trainer.lower() for u in ctx.inputs}
        last = self.updates[ctx.round - 1] if 0 < ctx.round <= len(self.updates) else ()
        previous = tuple(f for f in last if f.input.trainer.lower() in trainers)
        before = self.blobs[ctx.previous_base_model_cid] if ctx.previous_base_model_cid else None
        return RoundInputs(
            context=ctx, updates=tuple(Fetched(u, self.blobs[u.cid]) for u in ctx.inputs),
            previous_updates=previous if ctx.previous_base_model_cid else (),
            base_model=self.blobs[ctx.base_model_cid], previous_base_model=before,
            valset=valset, validation_cid=validation_cid,
        )

    def finalize(self, inputs: RoundInputs, computed: Computed) -> RoundRecord:
        model_cid = self.publish(computed.model_bytes)
        record = computed.record(model_cid)
        self.publish(record.to_bytes())
        self.contexts.append(inputs.context)
        self.updates.append(inputs.updates)
        self.records.append(record)
        self.models.append(computed.model_bytes)
        self.unallocated -= record.allocation
        self.allocated += record.allocation
        return record

    def run_round(self, submissions: Sequence[tuple[str, bytes]], config: RoundConfig, valset: ValidationSet,
                  validation_cid: str) -> tuple[RoundInputs, Computed]:
        """Reveal, compute (the service's `compute_from_inputs`) and finalize the open round."""
        ctx = self.context(self.reveal(submissions))
        inputs = self.inputs(ctx, valset, validation_cid)
        computed = compute_from_inputs(inputs, config)
        self.finalize(inputs, computed)
        return inputs, computed


# ---------------------------------------------------------------------------------------------
# one federation


@dataclass(frozen=True)
class RunSpec:
    rule: str
    attack: str
    fraction: float
    partition: str
    dataset: str
    n: int
    rounds: int
    epochs: int
    lr: float
    batch_size: int
    seed: int = 0
    score: bool = False
    #: per-trainer label noise (the fairness run); empty: none
    noise: tuple[float, ...] = ()
    kind: str = "grid"  # grid | fairness
    #: how every update is encoded (a `market.protocol.codec` encoding) and the top fraction a
    #: sparse one keeps; `dp`: client-level DP every trainer applies before encoding
    encoding: str = "f32"
    keep_fraction: float = 1.0
    dp: DpPolicy | None = None
    #: each trainer adds what its last encoding dropped (`codec.encode_with_feedback`)
    error_feedback: bool = False

    @property
    def malicious(self) -> int:
        return 0 if self.attack == "none" else round(self.n * self.fraction)

    @property
    def name(self) -> str:
        extra = f" noise={list(self.noise)}" if self.noise else ""
        return f"{self.kind} {self.partition} {self.rule} {self.attack}@{self.fraction:g}{extra}"


_DATA: dict[str, tuple[Dataset, Dataset, Dataset]] = {}


def splits(dataset: str, seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """Train / validation / test parts (80/10/10, stratified) of a built-in dataset, cached."""
    key = f"{dataset}:{seed}"
    if key not in _DATA:
        ds = load_builtin(dataset, spec=MODELS[dataset])
        sp = train_val_test_split(ds, 0.1, 0.1, seed=seed)
        _DATA[key] = (sp.train, sp.val, sp.test)
    return _DATA[key]


#: RunSpec fields added after the first reports: left out of `simulate`'s "spec" at their defaults,
#: so runs that do not set them report exactly what they did before
_LATER_FIELDS = {"encoding": "f32", "keep_fraction": 1.0, "dp": None, "error_feedback": False}


def _spec_data(spec: RunSpec) -> dict[str, Any]:
    data = asdict(spec)
    for name, default in _LATER_FIELDS.items():
        if data[name] == default:
            del data[name]
        elif name == "dp":
            data[name] = spec.dp.model_dump(mode="json") if spec.dp is not None else None
    return data


def _state_of(model_bytes: bytes, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return decode_base_model(model_bytes, "(in memory)", like, len(model_bytes))


def _copy_sources(behaviours: Sequence[Behaviour], honest_ids: Sequence[int]) -> dict[int, int]:
    """Who each copying trainer copies: an honest trainer's update of the same round, as if leaked
    before the reveal (the strongest copy; through commit-reveal alone a copycat has nothing to
    copy). Trainers are matched by what they declare (`REVEALED_UPDATES`), never by class."""
    copiers = [i for i, b in enumerate(behaviours) if REVEALED_UPDATES in b.needs]
    return {i: honest_ids[k % len(honest_ids)] for k, i in enumerate(copiers)} if honest_ids else {}


def _produce(
    behaviours: Sequence[Behaviour], order: Sequence[int], honest: Mapping[int, TrainResult],
    state: Mapping[str, torch.Tensor], r: int, addresses: Sequence[str], sizes: Sequence[int],
    previous_global: Mapping[str, torch.Tensor] | None, prev_submitted: Mapping[int, Mapping[str, torch.Tensor]],
    group: Colluders, bad: set[int], copy_source: Mapping[int, int],
) -> dict[int, tuple[dict[str, torch.Tensor], int]]:
    """Every trainer's submission in commit order, each behaviour given exactly what it declares
    in `needs` (`trainer.context.fill_context`)."""
    submitted: dict[int, tuple[dict[str, torch.Tensor], int]] = {}

    def sources_for(i: int) -> ContextSources:
        return ContextSources(
            previous_global=lambda: previous_global,
            previous_delta=lambda: prev_submitted.get(i),
            revealed_updates=lambda: [submitted[copy_source[i]][0]] if i in copy_source else [],
            colluders=lambda: group if i in bad else None,
        )

    for i in order:
        ctx = fill_context(behaviours[i], global_state=state, round=r, seed=derive_seed(addresses[i], r),
                           num_samples=sizes[i], trainer_id=addresses[i], sources=sources_for(i))
        submitted[i] = behaviours[i].produce(honest.get(i), ctx)
    return submitted


def simulate(spec: RunSpec, *, config: RoundConfig | None = None,
             on_round: Callable[[LocalProject], None] | None = None,
             parts: Sequence[Sequence[int]] | None = None) -> dict[str, Any]:
    """One federated run; returns plain data (accuracy per round, verdicts, rewards).
    `config` defaults to the service's (`service_config(score=spec.score)`, rule `spec.rule`);
    `on_round(project)` is called after each round (the project holds every byte and record);
    `parts` (one list of training-split indices per trainer) replaces `spec.partition`, e.g. to
    deal one trainer's data over several identities."""
    started = time.perf_counter()
    torch.set_num_threads(1)
    config = config or dataclasses.replace(service_config(score=spec.score), rule=spec.rule)
    model_spec = MODELS[spec.dataset]
    train, val, test = splits(spec.dataset, spec.seed)
    n, m = spec.n, spec.malicious
    if parts is not None:
        if len(parts) != n:
            raise ValueError(f"{len(parts)} parts for {n} trainers; give one list of sample indices per trainer")
        dealt = [np.asarray(p, dtype=np.int64) for p in parts]
    elif spec.partition == IID:
        dealt = iid(len(train), n, seed=spec.seed)
    else:
        dealt = dirichlet(train.y, n, alpha=float(spec.partition.split(":")[1]), seed=spec.seed)
    shards = split_by_partition(train, dealt)
    if spec.noise:
        shards = [with_label_noise(s, spec.noise[i], seed=derive_seed("noise", spec.seed, i)) if spec.noise[i] else s
                  for i, s in enumerate(shards)]
    addresses = [trainer_address(i) for i in range(n)]
    position = {a: i for i, a in enumerate(addresses)}
    bad = set(range(n - m, n))
    honest_ids = [i for i in range(n) if i not in bad]
    behaviours: list[Behaviour] = [parse_behaviour(spec.attack if i in bad else "honest") for i in range(n)]
    copy_source = _copy_sources(behaviours, honest_ids)
    data = [behaviours[i].transform_dataset(shards[i]) for i in range(n)]

    like = {k: v.detach().clone() for k, v in init_model(model_spec, spec.seed).state_dict().items()}
    project = LocalProject(
        spec=ProjectSpec(model=model_spec, hyperparams={"epochs": spec.epochs, "lr": spec.lr, "batch_size": spec.batch_size},
                         privacy=spec.dp),
        initial_model=encode_model(like, ModelHeader(PROJECT_ID, 0, model_spec.architecture)),
        num_rounds=spec.rounds, reward_per_round=ETHER, seed=spec.seed,
    )
    valset = ValidationSet(val.x, val.y, f"{spec.dataset}:val")
    validation_cid = project.publish(valset.to_npz())
    test_eval = Evaluator(build_model(model_spec), like, ValidationSet(test.x, test.y, f"{spec.dataset}:test"))
    base_cfg = TrainConfig(epochs=spec.epochs, lr=spec.lr, batch_size=spec.batch_size)
    acc0 = test_eval.accuracy(flatten(like))

    state = dict(like)
    previous_global: dict[str, torch.Tensor] | None = None
    prev_submitted: Mapping[int, Mapping[str, torch.Tensor]] = {}
    rounds_out: list[dict[str, Any]] = []
    residuals: dict[int, dict[str, torch.Tensor]] = {}
    for r in range(spec.rounds):
        t_round = time.perf_counter()
        cfg = base_cfg.with_overrides({k: v for k, v in project.hyperparams.items() if k in TrainConfig.model_fields})
        honest: dict[int, TrainResult] = {}
        for i in range(n):
            if behaviours[i].needs_training:
                honest[i] = train_local(model_spec, state, data[i],
                                        cfg.with_overrides({"seed": derive_seed(addresses[i], r)}), num_threads=1)
        group = Colluders([honest[j].delta for j in sorted(bad) if j in honest], n, max(m, 1))
        order = [int(i) for i in np.random.default_rng(derive_seed("order", spec.seed, r)).permutation(n)]
        order = [i for i in order if i not in copy_source] + [i for i in order if i in copy_source]
        submitted = _produce(behaviours, order, honest, state, r, addresses, [len(s) for s in shards],
                             previous_global, prev_submitted, group, bad, copy_source)
        t_train = time.perf_counter() - t_round

        blobs = []
        for i in order:
            delta, claimed = submitted[i]
            delta = {k: delta[k].to(torch.float32).contiguous() for k in like}
            if spec.dp is not None:
                # seeded so a run repeats; a real trainer draws its noise from the OS (trainer.update)
                delta, _ = privatize_update(delta, spec.dp, torch.Generator().manual_seed(derive_seed("dp", spec.seed, i, r)))
            header = UpdateHeader(PROJECT_ID, r, project.base_model_cid, addresses[i], int(claimed),
                                  encoding=spec.encoding)  # type: ignore[arg-type]
            if spec.error_feedback:
                blob, residuals[i] = encode_with_feedback(delta, header, residuals.get(i), keep_fraction=spec.keep_fraction)
            else:
                blob = encode_update(delta, header, keep_fraction=spec.keep_fraction)
            blobs.append((addresses[i], blob))
        _, computed = project.run_round(blobs, config, valset, validation_cid)
        record = project.records[-1]
        new_state = _state_of(computed.model_bytes, like)
        acc_test = test_eval.accuracy(flatten(new_state, like.keys()))
        rounds_out.append({
            "round": r,
            "val_accuracy": record.metrics["accuracy_after"],
            "test_accuracy": acc_test,
            "server_lr": float(record.aggregation["server_lr"]),
            "epochs": cfg.epochs,
            "accepted": sum(1 for v in record.verdicts if v.accepted),
            "verdicts": [
                {"trainer": position[v.trainer], "malicious": position[v.trainer] in bad,
                 "accepted": v.accepted, "reason": v.reason or "ok"}
                for v in record.verdicts
            ],
            "scorer": record.scorer,
            "score_evaluations": int(record.metrics["score_evaluations"]),
            "scores": {str(position[t]): s for t, s in record.scores.items()},
            "rewards": {str(position[t]): int(v) for t, v in record.rewards.items() if t in position},
            "allocation": int(record.allocation),
            "filter_stats": {k: v for k, v in record.metrics.items() if k.startswith("filter_")},
            "seconds": time.perf_counter() - t_round,
            "train_seconds": t_train,
        })
        prev_submitted = {i: submitted[i][0] for i in range(n)}
        previous_global = state
        state = new_state
        if on_round is not None:
            on_round(project)

    last = project.records[-1]
    return {
        "spec": _spec_data(spec),
        "name": spec.name,
        "malicious": sorted(bad),
        "quality": [(0.0 if i in bad else 1.0 - (spec.noise[i] if spec.noise else 0.0)) for i in range(n)],
        "initial_test_accuracy": acc0,
        "final_test_accuracy": rounds_out[-1]["test_accuracy"],
        "rounds": rounds_out,
        "cumulative_rewards": {str(position[t]): int(v) for t, v in last.cumulative_rewards.items() if t in position},
        "cumulative_scores": {str(position[t]): s for t, s in last.cumulative_scores.items() if t in position},
        "unallocated": int(project.unallocated),
        "seconds": time.perf_counter() - started,
    }

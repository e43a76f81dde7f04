"""The marketplace's figures (issue 6): robustness, filters, rewards, and protocol overhead.

Run: .venv/bin/python benchmarks/marketplace.py [--fast] [--full] [--smoke] [--workers 2]
     (default ~11 min on 2 quiet cores, most of it contribution scoring; --full ~45 min; --smoke ~20 s)

1. **Accuracy under attack**: an in-process federated simulation (trainer + aggregator code, no
   chain, no IPFS). MNIST-5k with `mnist_cnn` (`--fast`: scikit-learn digits with `digits_mlp`)
   is split 80/10/10 (stratified, seed 0): the training part is dealt to N = 10 trainers (IID, or
   Dirichlet alpha = 0.5 label skew), the validation part is the aggregator's validation set
   (scores, plateau adaptation), the test part gives the final accuracy. Every round runs the
   trainers' code (`train_local` with the round's hyper-parameters, then the scripted behaviour
   of `trainer.behaviours`), encodes each update with `market.protocol.codec`, then runs the aggregator
   service's own stages from `aggregator.pipeline`: `validate_updates` (the same checks as on
   the real stack), `filter_updates` (zero, stale, copy and outlier filters with the service's
   `FilterConfig`), `aggregate_updates` with the rule, `score_contributions` (the service's
   scorer, `auto`), `allocate_rewards`, and `adapt_hyperparams` (server learning rate and
   local epochs on a plateau). The service's defaults come from `AggregatorSettings()` through
   `aggregator.service.config_from_settings`. Training defaults are `market demo`'s: 5 rounds,
   2 local epochs, lr 0.05, batch 32. The malicious trainers are the last m = round(N x
   fraction); commit order is a seeded shuffle per round, with copycats committing after the
   trainer they copy. Scripted attacks use their defaults (`parse_behaviour(name)`):
   sign_flip k=1, gaussian_noise sigma=1, scaling x10, label_flip, alie (z from n and m, the
   colluders' own honest deltas as the group), ipm epsilon=0.1, free_rider mode=zero, copycat
   (the same round's update of an honest trainer, as if leaked before the reveal: the strongest
   copy; through commit-reveal alone a copycat has nothing to copy and sends zeros), sample_liar
   (claims 10x its samples). Runs are independent (models diverge per rule) and go to a pool of
   `--workers` processes, one torch thread each.
   Default grid: the service's default rule, fedavg and median x every attack at 30% malicious
   (IID), plus Dirichlet(0.5) for fedavg without attack, the default rule under every attack, and
   fedavg with free-riders (their zero updates are rejected: FedAvg over the honest trainers only,
   a reference for what is lost with the malicious trainers' data).
   `--full`: + trimmed_mean:beta=0.2 (plain trimmed_mean is the default rule's beta=0.1), krum,
   foundation_fl, at 20/30/40% malicious, Dirichlet for every rule at 30%.
2. **Filters**: precision and recall of "rejected" (validation + filters) against "malicious",
   over every round of the same runs, with the reasons given to malicious updates.
3. **Rewards**: in the default rule's IID attack runs every round is scored and split as the service
   does (the round's allocation as the contract allows it, what nobody earns rolls over): the
   share of all rewards paid to honest trainers, what free-riders and copycats got (must be 0),
   and a fairness run: 10 honest trainers with label noise 0, 0.1, 0.2, 0.3, 0.5 (two each,
   `trainer.partition.with_label_noise`), Spearman between total reward and quality = 1 - noise.
4. **Protocol overhead per round on the real local stack**: this script starts anvil
   (`market.anvil.Anvil`, automine) and a js-ipfs daemon (`market.ipfsnode.IpfsNode`) on free
   loopback ports, deploys LearningMarket, and for 10, 50 and 100 trainers (keys funded with
   anvil_setBalance, registered, each its own `trainer.participant.Participant` with its own
   IPFS client and state directory) runs rounds with pre-encoded updates (a real `mnist_cnn`
   delta, perturbed per trainer, encoded with `market.protocol.codec` before the clock starts):
   trainers (thread pool): upload to IPFS, commit, [mine past the commit deadline], reveal;
   aggregator (`aggregator.pipeline`): `load_context` (chain events, spec, previous record),
   `fetch_updates` (`fetch_verified`, journal cache as the service) + the base model,
   `validate_updates`, build the record (verdicts, equal scores, reward split, Merkle root and
   proofs) and `publish_round` (model + record on IPFS), `finalizeRound`.
   Not counted: training, scoring, filter + aggregate (shown apart), and chain waiting
   (deadlines are passed with anvil_mine; the time of those calls is shown apart).
   Both processes are stopped by PID at the end.

Targets: 30% malicious running any one attack -> default rule within 2 accuracy points of FedAvg
without attack; honest trainers >= 95% of rewards; free-riders and copycats paid 0;
Spearman(reward, data quality) >= 0.8; protocol overhead <= 3 s per round for 50 trainers.
Everything printed is also written to reports/benchmarks/marketplace.json (`--out`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import signal
import socket
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here and in workers

import numpy as np
import torch
from eth_utils import to_checksum_address
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aggregator.pipeline import (
    CODE_VERSION,
    UTILITY,
    Computed,
    Fetched,
    RoundConfig,
    RoundContext,
    _Evaluator,
    adapt_hyperparams,
    aggregate_updates,
    allocate_rewards,
    fetch_updates,
    filter_updates,
    initial_state,
    load_base_model,
    load_context,
    publish_round,
    score_contributions,
    utility_rule,
    validate_updates,
)
from aggregator.rules import make_rule
from aggregator.service import available_for, config_from_settings
from aggregator.settings import AggregatorSettings
from aggregator.valset import ValidationSet
from market.models import ModelSpec, build_model, flatten, init_model, unflatten
from market.protocol.codec import ModelHeader, UpdateHeader, encode_model, encode_update
from market.protocol.documents import ProjectSpec, UpdateInput
from market.protocol.validation import update_spec
from market.storage import raw_cid
from trainer.behaviours import Behaviour, BehaviourContext, Copycat, parse_behaviour
from trainer.data import Dataset, load_builtin, train_val_test_split
from trainer.partition import dirichlet, iid, split_by_partition, with_label_noise
from trainer.training import TrainConfig, TrainResult, train_local

ETHER = 10**18
ATTACKS = ("none", "sign_flip", "gaussian_noise", "scaling", "label_flip", "alie", "ipm", "free_rider", "copycat",
           "sample_liar")
UNPAID_ATTACKS = ("free_rider", "copycat")
NOISE_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.5)
IID = "iid"
DIRICHLET = "dirichlet:0.5"
#: market demo's training defaults (market.simulate.Scenario)
DEMO = {"rounds": 5, "epochs": 2, "lr": 0.05, "batch_size": 32}
#: the project's round-0 hyper-parameters (`market demo`'s project.toml [hyperparams])
DEMO_HP = {"epochs": DEMO["epochs"], "lr": DEMO["lr"], "batch_size": DEMO["batch_size"]}
MODELS = {
    "mnist5k": ModelSpec(architecture="mnist_cnn", input_shape=(1, 28, 28), num_classes=10, dataset="mnist5k"),
    "digits": ModelSpec(architecture="digits_mlp", input_shape=(64,), num_classes=10, dataset="digits"),
}
PROJECT_ID = 1  # the simulation's updates claim project 1 (validation checks the header)
SIM_CONTRACT = "0x000000000000000000000000000000000000dEaD"
TARGET_ACC_GAP = 0.02
TARGET_HONEST_SHARE = 0.95
TARGET_SPEARMAN = 0.8
TARGET_OVERHEAD_S = 3.0
TARGET_OVERHEAD_N = 50


def service_settings() -> AggregatorSettings:
    """The aggregator service's defaults (no [aggregator] table, no flags)."""
    return AggregatorSettings()


def service_config() -> RoundConfig:
    return config_from_settings(service_settings())


# ============================================================================ 1-3: simulation


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

    @property
    def malicious(self) -> int:
        return 0 if self.attack == "none" else round(self.n * self.fraction)

    @property
    def name(self) -> str:
        extra = f" noise={list(self.noise)}" if self.noise else ""
        return f"{self.kind} {self.partition} {self.rule} {self.attack}@{self.fraction:g}{extra}"


def trainer_address(i: int) -> str:
    return to_checksum_address(f"0x{0x1000 + i:040x}")


def _seed(*parts: object) -> int:
    h = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:4], "big")


_DATA: dict[str, tuple[Dataset, Dataset, Dataset]] = {}


def _splits(dataset: str, seed: int) -> tuple[Dataset, Dataset, Dataset]:
    key = f"{dataset}:{seed}"
    if key not in _DATA:
        ds = load_builtin(dataset, spec=MODELS[dataset])
        sp = train_val_test_split(ds, 0.1, 0.1, seed=seed)
        _DATA[key] = (sp.train, sp.val, sp.test)
    return _DATA[key]


def evaluator(model: torch.nn.Module, like: dict[str, torch.Tensor], ds: Dataset, source: str) -> _Evaluator:
    """The service's own evaluator (what `score_contributions` calls for its utility) on `ds`.
    It is private to `aggregator.pipeline`; using it keeps the benchmark's scores the service's."""
    return _Evaluator(model, like, ValidationSet(ds.x, ds.y, source))


def _worker_init() -> None:
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def simulate(spec: RunSpec) -> dict[str, Any]:
    """One federated run; returns plain data (accuracy per round, verdicts, rewards)."""
    started = time.perf_counter()
    torch.set_num_threads(1)
    config = service_config()
    rule = make_rule(spec.rule)
    model_spec = MODELS[spec.dataset]
    train, val, test = _splits(spec.dataset, spec.seed)
    n, m = spec.n, spec.malicious
    if spec.partition == IID:
        parts = iid(len(train), n, seed=spec.seed)
    else:
        parts = dirichlet(train.y, n, alpha=float(spec.partition.split(":")[1]), seed=spec.seed)
    shards = split_by_partition(train, parts)
    if spec.noise:
        shards = [with_label_noise(s, spec.noise[i], seed=_seed("noise", spec.seed, i)) if spec.noise[i] else s
                  for i, s in enumerate(shards)]
    addresses = [trainer_address(i) for i in range(n)]
    bad = set(range(n - m, n))
    honest_ids = [i for i in range(n) if i not in bad]
    behaviours: list[Behaviour] = [parse_behaviour(spec.attack if i in bad else "honest") for i in range(n)]
    copy_source = {i: honest_ids[k % len(honest_ids)] for k, i in enumerate(sorted(bad))} if spec.attack == "copycat" else {}
    data = [behaviours[i].transform_dataset(shards[i]) for i in range(n)]

    project_spec = ProjectSpec(model=model_spec,
                               hyperparams={"epochs": spec.epochs, "lr": spec.lr, "batch_size": spec.batch_size})
    base_hyper = dict(project_spec.hyperparams)
    policy = project_spec.validation
    model = build_model(model_spec)
    like = {k: v.detach().clone() for k, v in init_model(model_spec, spec.seed).state_dict().items()}
    tspec = update_spec(like)
    val_eval = evaluator(model, like, val, f"{spec.dataset}:val")
    test_eval = evaluator(model, like, test, f"{spec.dataset}:test")

    state = dict(like)
    previous_global: dict[str, torch.Tensor] | None = None
    state_in = initial_state(config, base_hyper)
    hyper = dict(base_hyper)
    prev_updates: dict[str, torch.Tensor] = {}
    prev_submitted: dict[int, dict[str, torch.Tensor]] = {}
    cumulative: dict[str, int] = {}
    cumulative_scores: dict[str, float] = {}
    unallocated = spec.rounds * ETHER
    rounds_out: list[dict[str, Any]] = []
    base_cfg = TrainConfig(epochs=spec.epochs, lr=spec.lr, batch_size=spec.batch_size)
    train_overrides = {k: v for k, v in hyper.items() if k in TrainConfig.model_fields}
    acc0 = test_eval.accuracy(flatten(state))

    for r in range(spec.rounds):
        t_round = time.perf_counter()
        base_vector = flatten(state, like.keys())
        base_cid = raw_cid(base_vector.numpy().tobytes())
        cfg = base_cfg.with_overrides(train_overrides)
        honest: dict[int, TrainResult] = {}
        for i in range(n):
            if behaviours[i].needs_training:
                honest[i] = train_local(model_spec, state, data[i], cfg.with_overrides({"seed": _seed(addresses[i], r)}),
                                        num_threads=1)
        group = [honest[j].delta for j in sorted(bad) if j in honest]
        submitted: dict[int, tuple[dict[str, torch.Tensor], int]] = {}
        order = [int(i) for i in np.random.default_rng(_seed("order", spec.seed, r)).permutation(n)]
        order = [i for i in order if i not in copy_source] + [i for i in order if i in copy_source]
        for i in order:
            b = behaviours[i]
            if isinstance(b, Copycat):
                src = copy_source[i]
                b.source = lambda _ctx, src=src, sub=submitted: sub[src][0]
            ctx = BehaviourContext(
                global_state=state, round=r, seed=_seed(addresses[i], r), previous_global_state=previous_global,
                honest_deltas=group if i in bad else (), num_trainers=n, num_malicious=max(m, 1),
                num_samples=len(shards[i]), previous_delta=prev_submitted.get(i), trainer_id=addresses[i],
            )
            submitted[i] = b.produce(honest.get(i), ctx)
        t_train = time.perf_counter() - t_round

        # the service's stages, on encoded updates in commit order
        fetched, position = [], {}
        for pos, i in enumerate(order):
            delta, claimed = submitted[i]
            blob = encode_update({k: delta[k].to(torch.float32).contiguous() for k in like},
                                 UpdateHeader(PROJECT_ID, r, base_cid, addresses[i], int(claimed)))
            u = UpdateInput(trainer=addresses[i], cid=raw_cid(blob), digest="0x" + hashlib.sha256(blob).hexdigest(),
                            commit_block=100 * r + pos + 1, commit_log_index=0, reveal_block=100 * r + 50 + pos)
            fetched.append(Fetched(u, blob))
            position[addresses[i]] = i
        available = max(0, unallocated - ETHER * (spec.rounds - r - 1))
        rctx = RoundContext(
            project_id=PROJECT_ID, round=r, chain_id=31337, contract=SIM_CONTRACT, spec=project_spec,
            base_model_cid=base_cid, base_hyperparams=hyper, previous_aggregation={}, reveal_deadline=100 * r + 99,
            seed=_seed("round-seed", spec.seed, r), inputs=tuple(f.input for f in fetched), previous_inputs=(),
            previous_base_model_cid=None, cumulative_rewards=dict(cumulative), cumulative_scores=dict(cumulative_scores),
            available=available,
        )
        candidates = validate_updates(fetched, rctx, tspec)
        validated = {c.input.trainer: c.delta for c in candidates if c.accepted and c.delta is not None}
        candidates, filter_stats = filter_updates(candidates, prev_updates, config.filters)
        accepted = [c for c in candidates if c.accepted]
        server_lr = float(state_in["server_lr"])
        aggregate, _ = aggregate_updates(accepted, rule, policy.max_claimed_samples, base_vector.numel())
        new_vector = base_vector + server_lr * aggregate
        acc_val, _loss = val_eval.both(new_vector)
        scores: dict[str, float] = {}
        increments: dict[str, int] = {}
        allocation = 0
        evaluations = 0
        scorer = ""
        if spec.score:
            scorer = config.scorer_for(len(accepted))
            scores, evaluations, _ = score_contributions(accepted, base_vector, val_eval, server_lr, scorer,
                                                         rctx.seed, policy.max_claimed_samples)
            outcome = allocate_rewards(candidates, scores, available, cumulative)
            increments, cumulative, allocation = dict(outcome.increments), dict(outcome.cumulative), outcome.allocation
            unallocated -= allocation
            for t, s in scores.items():
                cumulative_scores[t] = cumulative_scores.get(t, 0.0) + s
        state_out, hyper_next = adapt_hyperparams(state_in, acc_val, config.adapt, base_hyper)
        acc_test = test_eval.accuracy(new_vector)
        rounds_out.append({
            "round": r,
            "val_accuracy": acc_val,
            "test_accuracy": acc_test,
            "server_lr": server_lr,
            "epochs": cfg.epochs,
            "accepted": len(accepted),
            "verdicts": [
                {"trainer": position[c.input.trainer], "malicious": position[c.input.trainer] in bad,
                 "accepted": c.accepted, "reason": c.reason or "ok"}
                for c in candidates
            ],
            "scorer": scorer,
            "score_evaluations": evaluations,
            "scores": {str(position[t]): s for t, s in scores.items()},
            "rewards": {str(position[t]): int(v) for t, v in increments.items() if t in position},
            "allocation": int(allocation),
            "filter_stats": filter_stats,
            "seconds": time.perf_counter() - t_round,
            "train_seconds": t_train,
        })
        prev_updates = validated
        prev_submitted = {i: submitted[i][0] for i in range(n)}
        previous_global = state
        state = unflatten(new_vector, like)
        state_in, hyper = state_out, hyper_next
        train_overrides = {k: v for k, v in hyper.items() if k in TrainConfig.model_fields}

    total = {str(position[t]): int(v) for t, v in cumulative.items() if t in position}
    return {
        "spec": asdict(spec),
        "name": spec.name,
        "malicious": sorted(bad),
        "quality": [(0.0 if i in bad else 1.0 - (spec.noise[i] if spec.noise else 0.0)) for i in range(n)],
        "initial_test_accuracy": acc0,
        "final_test_accuracy": rounds_out[-1]["test_accuracy"],
        "rounds": rounds_out,
        "cumulative_rewards": total,
        "cumulative_scores": {str(position[t]): s for t, s in cumulative_scores.items() if t in position},
        "unallocated": int(unallocated),
        "seconds": time.perf_counter() - started,
    }


def safe_simulate(spec: RunSpec) -> dict[str, Any]:
    try:
        return simulate(spec)
    except Exception as exc:  # noqa: BLE001 - one failed run must not hide the others
        return {"spec": asdict(spec), "name": spec.name, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}


def grid(args: argparse.Namespace, default_rule: str) -> list[RunSpec]:
    common = {"dataset": args.dataset, "n": args.trainers, "rounds": args.rounds, "epochs": args.epochs, "lr": args.lr,
              "batch_size": args.batch_size, "seed": args.seed}
    if args.full:
        rules = [default_rule, "fedavg", "median", "trimmed_mean:beta=0.2", "krum", "foundation_fl"]
    else:
        rules = [default_rule, "fedavg", "median"]
    rules = list(dict.fromkeys(make_rule(r).spec for r in rules))
    attacks = list(args.attacks)
    runs: list[RunSpec] = []
    for rule in rules:
        for attack in attacks:
            fracs = [0.0] if attack == "none" else args.fractions
            for f in fracs:
                # rewards are scored in the default rule's attack runs (without attack every
                # trainer is honest; the fairness run scores that case)
                runs.append(RunSpec(rule, attack, f, IID, score=(rule == default_rule and attack != "none"), **common))
    d_rules = rules if args.full else [default_rule]
    for rule in d_rules:
        for attack in attacks:
            runs.append(RunSpec(rule, attack, 0.0 if attack == "none" else 0.3, DIRICHLET, **common))
    if not args.full and "fedavg" in rules:
        runs.append(RunSpec("fedavg", "none", 0.0, DIRICHLET, **common))
        if "free_rider" in attacks:
            # FedAvg over the honest trainers only (the free-riders' zero updates are rejected): what
            # a perfect filter could reach once the malicious trainers' data is missing
            runs.append(RunSpec("fedavg", "free_rider", 0.3, DIRICHLET, **common))
    noise = tuple(NOISE_LEVELS[i * len(NOISE_LEVELS) // args.trainers] for i in range(args.trainers))
    runs.append(RunSpec(default_rule, "none", 0.0, IID, score=True, noise=noise, kind="fairness", **common))
    # longest first: scored runs, then the rest
    return sorted(runs, key=lambda s: (not s.score, s.partition != IID))


def run_all(runs: list[RunSpec], workers: int, console: Console) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    progress = Progress(TextColumn("[bold]simulation[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=console, transient=False)
    with progress:
        task = progress.add_task("", total=len(runs))
        if workers <= 1:
            _worker_init()
            for spec in runs:
                progress.update(task, description=spec.name)
                results.append(safe_simulate(spec))
                progress.advance(task)
            return results
        import multiprocessing as mp

        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init)
        try:
            pending: set[Future[dict[str, Any]]] = {pool.submit(safe_simulate, s) for s in runs}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    res = fut.result()
                    results.append(res)
                    line = res["name"] + (" FAILED" if "error" in res else
                                          f" {res['final_test_accuracy'] * 100:.1f}% ({res['seconds']:.0f} s)")
                    progress.update(task, description=line)
                    progress.advance(task)
                    if not console.is_terminal:  # no live bar in a log: one line per run
                        console.print(f"  [{len(results)}/{len(runs)}] {line}", highlight=False)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


# ---------------------------------------------------------------------------- summaries


def _key(res: dict[str, Any]) -> tuple[str, str, str, float]:
    s = res["spec"]
    return s["partition"], s["rule"], s["attack"], float(s["fraction"])


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho with average ranks for ties (Pearson on ranks)."""

    def ranks(values: Sequence[float]) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        i = 0
        while i < len(x):
            j = i
            while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
                j += 1
            r[order[i:j + 1]] = (i + j) / 2.0
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def summarize_sim(results: list[dict[str, Any]], default_rule: str) -> dict[str, Any]:
    ok = [r for r in results if "error" not in r]
    grid_runs = [r for r in ok if r["spec"]["kind"] == "grid"]
    acc: list[dict[str, Any]] = []
    baseline: dict[str, float] = {}
    honest_only: dict[str, float] = {}
    for r in grid_runs:
        p, rule, attack, frac = _key(r)
        if rule == "fedavg" and attack == "none":
            baseline[p] = r["final_test_accuracy"]
        if rule == "fedavg" and attack == "free_rider" and abs(frac - 0.3) < 1e-9:
            honest_only[p] = r["final_test_accuracy"]
    for r in grid_runs:
        p, rule, attack, frac = _key(r)
        base = baseline.get(p)
        acc.append({
            "partition": p, "rule": rule, "attack": attack, "fraction": frac, "malicious": len(r["malicious"]),
            "final_accuracy": r["final_test_accuracy"],
            "accuracy_per_round": [x["test_accuracy"] for x in r["rounds"]],
            "fedavg_no_attack": base,
            "gap_to_fedavg_no_attack": None if base is None else base - r["final_test_accuracy"],
            "seconds": r["seconds"],
        })

    # filters: rejected (validation + filters) vs malicious, every round of every run
    filt: dict[str, dict[str, Any]] = {}
    for r in grid_runs:
        p, rule, attack, frac = _key(r)
        key = f"{p}|{attack}|{frac:g}"
        f = filt.setdefault(key, {"partition": p, "attack": attack, "fraction": frac, "tp": 0, "fp": 0, "fn": 0,
                                  "tn": 0, "runs": 0, "malicious_reasons": {}, "honest_reasons": {}})
        f["runs"] += 1
        for rd in r["rounds"]:
            for v in rd["verdicts"]:
                flagged = not v["accepted"]
                code = v["reason"].split(":", 1)[0]
                if v["malicious"]:
                    f["tp" if flagged else "fn"] += 1
                    f["malicious_reasons"][code] = f["malicious_reasons"].get(code, 0) + 1
                else:
                    f["fp" if flagged else "tn"] += 1
                    if flagged:
                        f["honest_reasons"][code] = f["honest_reasons"].get(code, 0) + 1
    for f in filt.values():
        f["precision"] = f["tp"] / (f["tp"] + f["fp"]) if f["tp"] + f["fp"] else None
        f["recall"] = f["tp"] / (f["tp"] + f["fn"]) if f["tp"] + f["fn"] else None
        f["honest_flag_rate"] = f["fp"] / (f["fp"] + f["tn"]) if f["fp"] + f["tn"] else None

    # rewards in the scored runs
    rewards = []
    for r in grid_runs:
        if not r["spec"]["score"]:
            continue
        p, rule, attack, frac = _key(r)
        cum = {int(k): v for k, v in r["cumulative_rewards"].items()}
        total = sum(cum.values())
        bad = set(r["malicious"])
        honest_paid = sum(v for k, v in cum.items() if k not in bad)
        mal_paid = sum(v for k, v in cum.items() if k in bad)
        rewards.append({
            "partition": p, "rule": rule, "attack": attack, "fraction": frac, "paid_total_wei": total,
            "paid_honest_wei": honest_paid, "paid_malicious_wei": mal_paid,
            "honest_share": honest_paid / total if total else None,
            "unallocated_wei": r["unallocated"],
            "malicious_paid_each_wei": {str(k): cum.get(k, 0) for k in sorted(bad)},
            "scorers": sorted({x["scorer"] for x in r["rounds"]}),
            "score_evaluations": sum(x["score_evaluations"] for x in r["rounds"]),
        })

    fairness = None
    for r in ok:
        if r["spec"]["kind"] != "fairness":
            continue
        n = r["spec"]["n"]
        cum = {int(k): v for k, v in r["cumulative_rewards"].items()}
        noise = r["spec"]["noise"]
        paid = [cum.get(i, 0) for i in range(n)]
        quality = [1.0 - noise[i] for i in range(n)]
        accepted = [sum(1 for rd in r["rounds"] for v in rd["verdicts"] if v["trainer"] == i and v["accepted"])
                    for i in range(n)]
        fairness = {
            "trainers": [{"trainer": i, "label_noise": noise[i], "quality": quality[i], "reward_wei": paid[i],
                          "score_sum": r["cumulative_scores"].get(str(i), 0.0), "accepted_rounds": accepted[i]}
                         for i in range(n)],
            "spearman": spearman(paid, quality),
            "paid_total_wei": sum(paid),
            "final_accuracy": r["final_test_accuracy"],
        }
    return {"accuracy": acc, "fedavg_no_attack": baseline, "fedavg_honest_only": honest_only, "filters": list(filt.values()), "rewards": rewards,
            "fairness": fairness, "failed": [{"name": r["name"], "error": r["error"]} for r in results if "error" in r]}


# ============================================================================ 4: overhead


def free_ports(n: int) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in out:
            out.append(port)
    return out


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuMeter:
    """CPU seconds used by this process (the trainers' and the aggregator's clients), anvil and
    the IPFS daemon between `start()` and `stop()`: shows which one a phase waits on."""

    def __init__(self, pids: dict[str, int | None]):
        self.pids = pids
        self._t0: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        t = os.times()
        return {"clients": t.user + t.system, **{k: _cpu_seconds(p) for k, p in self.pids.items()}}

    def start(self) -> None:
        self._t0 = self._now()

    def stop(self) -> dict[str, float]:
        now = self._now()
        return {k: now[k] - self._t0.get(k, 0.0) for k in now}


@dataclass
class RoundTiming:
    n: int
    round: int
    upload: float = 0.0
    commit: float = 0.0
    reveal: float = 0.0
    context: float = 0.0
    fetch: float = 0.0
    validate: float = 0.0
    publish: float = 0.0
    finalize: float = 0.0
    compute_not_counted: float = 0.0
    mine_not_counted: float = 0.0
    mined_blocks: int = 0
    update_bytes: int = 0
    record_bytes: int = 0
    accepted: int = 0
    #: CPU seconds per process during the trainers' phases and the aggregator's phase
    cpu_trainers: dict[str, float] = field(default_factory=dict)
    cpu_aggregator: dict[str, float] = field(default_factory=dict)

    @property
    def trainers(self) -> float:
        return self.upload + self.commit + self.reveal

    @property
    def aggregator(self) -> float:
        return self.context + self.fetch + self.validate + self.publish + self.finalize

    @property
    def total(self) -> float:
        return self.trainers + self.aggregator


def _real_delta(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """One real mnist_cnn update: one epoch on 400 MNIST-5k samples from the initial weights."""
    train, _, _ = _splits("mnist5k", 0)
    shard = train.subset(np.arange(400))
    res = train_local(spec, init_model(spec, 0).state_dict(), shard, TrainConfig(epochs=1, lr=0.05, seed=1))
    return res.delta


def overhead(counts: Sequence[int], rounds: int, console: Console, workers: int) -> dict[str, Any]:
    from eth_account import Account
    from eth_utils import keccak

    from aggregator.journal import Journal
    from aggregator.valset import load_validation_set
    from devnet.anvil import Anvil, rpc_call
    from devnet.ipfsnode import IpfsNode
    from market.chain import ProjectParams, connect
    from market.chain.accounts import dev_account
    from market.chain.deployment import deploy
    from market.storage import IpfsStore
    from trainer.participant import Participant

    config = service_config()
    ms = MODELS["mnist5k"]
    out: dict[str, Any] = {"rounds_per_count": rounds, "timings": []}
    with tempfile.TemporaryDirectory(prefix="marketplace-bench-") as d:
        tmp = Path(d)
        anvil_port, api, gw, rpcp = free_ports(4)
        ipfs = IpfsNode(tmp / "ipfs" / "repo", api, gw, rpcp)
        anvil = Anvil(tmp / "anvil", port=anvil_port, accounts=10)
        anvil.state_dir.mkdir(parents=True)
        stores: list[IpfsStore] = []
        try:
            with console.status("starting anvil and the js-ipfs daemon..."):
                ipfs.start(timeout=120)
                anvil.start()
            out["pids"] = {"anvil": anvil.process.pid, "ipfs": ipfs.status().pid}
            cpu = CpuMeter(out["pids"])
            out["ipfs_version"] = ipfs.status().version
            w3 = connect(anvil.url)
            dep = deploy(w3, dev_account(0), anvil.url)
            owner = dep.client(w3, dev_account(0))
            agg = dep.client(w3, dev_account(1))
            agg_store = IpfsStore(ipfs.api_multiaddr, timeout=120)
            stores.append(agg_store)
            with console.status("training one real mnist_cnn delta and publishing the spec..."):
                delta0 = _real_delta(ms)
                init = init_model(ms, 0).state_dict()
                wcid = agg_store.add(encode_model(init, ModelHeader(0, 0, ms.architecture)))
                pspec = ProjectSpec(model=ms.model_copy(update={"initial_weights_cid": wcid}), hyperparams=dict(DEMO_HP))
                spec_cid = agg_store.add(pspec.to_bytes())
                valset = load_validation_set("mnist5k:size=500,seed=0", ms)
                validation_cid = agg_store.add(valset.to_npz())
            like = build_model(ms).state_dict()
            tspec = update_spec(like)
            rule = config.make_rule()
            policy = pspec.validation
            for n in counts:
                accounts = [Account.from_key(keccak(text=f"marketplace-benchmark-trainer-{n}-{i}")) for i in range(n)]
                for a in accounts:
                    rpc_call(anvil.url, "anvil_setBalance", [a.address, hex(10**21)])
                params = ProjectParams(
                    aggregator=dev_account(1).address, arbiter=dev_account(2).address, num_rounds=rounds,
                    reward_per_round=ETHER, commit_window=2 * n + 30, reveal_window=n + 30, challenge_window=1,
                    spec_cid=spec_cid,
                )
                pid, _ = owner.create_project(params)
                parts = []
                for i, a in enumerate(accounts):
                    st = IpfsStore(ipfs.api_multiaddr, timeout=120)
                    stores.append(st)
                    parts.append(Participant(owner.with_account(a), st, tmp / "trainers" / f"n{n}-{i}",
                                             poll_interval=0.01))
                journal = Journal(tmp / "journal" / f"p{pid}")
                threads = min(n, workers)
                with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="trainer") as pool:
                    with console.status(f"{n} trainers register in project {pid}..."):
                        list(pool.map(Participant.join, parts, [pid] * n))
                    base_cid = wcid
                    for r in range(rounds):
                        timing = RoundTiming(n, r)
                        # pre-encoded updates (the training side; not timed)
                        gen = torch.Generator().manual_seed(1000 * n + r)
                        blobs = []
                        for i, p in enumerate(parts):
                            d_i = {k: v * (1.0 + 0.1 * torch.randn(v.shape, generator=gen)) for k, v in delta0.items()}
                            blobs.append(encode_update(d_i, UpdateHeader(pid, r, base_cid, p.address, 400)))
                        timing.update_bytes = len(blobs[0])
                        with console.status(f"{n} trainers, round {r}: upload, commit, reveal"):
                            cpu.start()
                            t0 = time.perf_counter()
                            states = list(pool.map(Participant.prepare, parts, [pid] * n, [r] * n, blobs))
                            t1 = time.perf_counter()
                            states = list(pool.map(Participant.commit, parts, states))
                            t2 = time.perf_counter()
                            timing.upload, timing.commit = t1 - t0, t2 - t1
                            info = agg.project(pid)
                            tm = time.perf_counter()
                            k = info.commit_deadline - agg.block_number + 1
                            if k > 0:
                                anvil.mine(k)
                                timing.mined_blocks += k
                            timing.mine_not_counted += time.perf_counter() - tm
                            t3 = time.perf_counter()
                            states = list(pool.map(Participant.reveal, parts, states))
                            timing.reveal = time.perf_counter() - t3
                            assert all(s.stage.value == "revealed" for s in states)
                            tm = time.perf_counter()
                            k = info.reveal_deadline - agg.block_number + 1
                            if k > 0:
                                anvil.mine(k)
                                timing.mined_blocks += k
                            timing.mine_not_counted += time.perf_counter() - tm
                            timing.cpu_trainers = cpu.stop()
                        with console.status(f"{n} trainers, round {r}: aggregator fetch, validate, publish, finalize"):
                            cpu.start()
                            published = _aggregate_round(agg, agg_store, journal, pid, r, pspec, tspec, like, rule,
                                                         config, policy, validation_cid, timing)
                            timing.cpu_aggregator = cpu.stop()
                        base_cid = published
                        out["timings"].append({**asdict(timing), "trainers": timing.trainers,
                                               "aggregator": timing.aggregator, "total": timing.total})
                        console.print(
                            f"  overhead n={n} round {r}: trainers {timing.trainers:.2f} s (upload {timing.upload:.2f}, "
                            f"commit {timing.commit:.2f}, reveal {timing.reveal:.2f}); aggregator {timing.aggregator:.2f} s "
                            f"(context {timing.context:.2f}, fetch {timing.fetch:.2f}, validate {timing.validate:.2f}, "
                            f"publish {timing.publish:.2f}, finalize {timing.finalize:.2f}); total {timing.total:.2f} s",
                            highlight=False)
        finally:
            for st in stores:
                with contextlib.suppress(Exception):
                    st.close()
            anvil.stop()
            ipfs.stop()
            out["stopped"] = {"anvil": anvil.process.pid is None, "ipfs": not ipfs.is_running()}
    return out


def _aggregate_round(agg: Any, store: Any, journal: Any, pid: int, r: int, pspec: ProjectSpec,
                     tspec: dict[str, Any], like: dict[str, torch.Tensor], rule: Any, config: RoundConfig,
                     policy: Any, validation_cid: str, timing: RoundTiming) -> str:
    """The service's round without scoring: context, fetch, validate, [filter + aggregate, not
    counted], record with equal scores and the reward split, publish, finalize. Returns the
    new model's CID."""
    t0 = time.perf_counter()
    info = agg.project(pid)
    ctx = load_context(agg, store, pid, r, available_for(info, r), spec=pspec)
    t1 = time.perf_counter()
    fetched = fetch_updates(store, ctx.inputs, max_bytes=policy.max_update_bytes, workers=config.fetch_workers,
                            timeout=config.fetch_timeout, attempts=config.fetch_attempts, cache=journal)
    base = load_base_model(store, ctx.base_model_cid, like, 2 * policy.max_update_bytes, config.fetch_timeout)
    t2 = time.perf_counter()
    candidates = validate_updates(fetched, ctx, tspec)
    t3 = time.perf_counter()
    assert all(c.accepted for c in candidates), [c.reason for c in candidates if not c.accepted]
    candidates, _ = filter_updates(candidates, {}, config.filters)
    accepted = [c for c in candidates if c.accepted]
    base_vector = flatten(base, like.keys())
    aggregate, agg_details = aggregate_updates(accepted, rule, policy.max_claimed_samples, base_vector.numel())
    new_state = unflatten(base_vector + float(config.server_lr) * aggregate, like)
    t4 = time.perf_counter()
    scores = {c.input.trainer: 1.0 for c in accepted}  # scoring is not protocol overhead
    rewards = allocate_rewards(candidates, scores, ctx.available, ctx.cumulative_rewards)
    model_bytes = encode_model(new_state, ModelHeader(pid, r, pspec.model.architecture))
    cumulative_scores = dict(ctx.cumulative_scores)
    for t, s in scores.items():
        cumulative_scores[t] = cumulative_scores.get(t, 0.0) + s
    state_in = dict(ctx.previous_aggregation.get("state_out") or initial_state(config, ctx.base_hyperparams))
    fields = {
        "project_id": pid, "round": r, "chain_id": ctx.chain_id, "contract": ctx.contract,
        "code_version": CODE_VERSION, "seed": ctx.seed, "base_model_cid": ctx.base_model_cid,
        "model_digest": "0x" + hashlib.sha256(model_bytes).hexdigest(), "validation_cid": validation_cid,
        "rule": rule.spec, "filters": asdict(config.filters), "scorer": "none (benchmark: scoring not timed)",
        "hyperparams": dict(ctx.base_hyperparams), "inputs": list(ctx.inputs),
        "verdicts": [c.verdict for c in candidates], "scores": scores, "cumulative_scores": cumulative_scores,
        "rewards": rewards.increments, "cumulative_rewards": rewards.cumulative, "allocation": rewards.allocation,
        "rewards_root": rewards.root, "proofs": rewards.proofs,
        "metrics": {"inputs": float(len(candidates)), "accepted": float(len(accepted))},
        "aggregation": {"server_lr": float(state_in["server_lr"]), "state_in": state_in, "state_out": state_in,
                        "utility": {"metric": UTILITY, "rule": utility_rule(policy.max_claimed_samples).spec},
                        "adapt": config.adapt.model_dump(), "threads": config.threads,
                        **({"aggregate": agg_details} if agg_details else {})},
    }
    computed = Computed(model_bytes, fields, tuple(candidates))
    published = publish_round(store, computed)
    t5 = time.perf_counter()
    agg.finalize_round(pid, r, published.model_cid, published.record_cid, computed.root, computed.allocation)
    t6 = time.perf_counter()
    timing.context, timing.fetch, timing.validate = t1 - t0, t2 - t1, t3 - t2
    timing.compute_not_counted = t4 - t3
    timing.publish, timing.finalize = t5 - t4, t6 - t5
    timing.record_bytes = len(published.record_bytes)
    timing.accepted = len(accepted)
    return published.model_cid


def summarize_overhead(ov: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    by_n: dict[int, list[dict[str, Any]]] = {}
    for t in ov.get("timings", []):
        by_n.setdefault(int(t["n"]), []).append(t)
    keys = ("upload", "commit", "reveal", "trainers", "context", "fetch", "validate", "publish", "finalize",
            "aggregator", "total", "compute_not_counted", "mine_not_counted")
    for n, ts in sorted(by_n.items()):
        cpu = {f"cpu_{phase}_{proc}": statistics.median(t[f"cpu_{phase}"].get(proc, 0.0) for t in ts)
               for phase in ("trainers", "aggregator") for proc in ("clients", "anvil", "ipfs")}
        rows.append({"n": n, "rounds": len(ts), **{k: statistics.median(t[k] for t in ts) for k in keys}, **cpu,
                     "total_max": max(t["total"] for t in ts), "update_bytes": ts[0]["update_bytes"],
                     "record_bytes": statistics.median(t["record_bytes"] for t in ts)})
    return rows


# ============================================================================ printing


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f}"


def yes(ok: bool | None) -> str:
    return "[dim]n/a[/]" if ok is None else ("[green]met[/]" if ok else "[red]NOT met[/]")


def print_accuracy(console: Console, summary: dict[str, Any], default_rule: str, attacks: Sequence[str]) -> None:
    acc = summary["accuracy"]
    for partition in (IID, DIRICHLET):
        rows = [a for a in acc if a["partition"] == partition]
        if not rows:
            continue
        base = summary["fedavg_no_attack"].get(partition)
        fracs = sorted({a["fraction"] for a in rows if a["attack"] != "none"})
        rules = list(dict.fromkeys(a["rule"] for a in sorted(rows, key=lambda a: a["rule"] != default_rule)))
        for frac in fracs:
            honest = summary["fedavg_honest_only"].get(partition)
            t = Table(title=f"Final test accuracy (%), {partition}, {round(frac * 100)}% malicious "
                            f"(FedAvg without attack: {pct(base)}%)")
            if honest is not None:
                t.caption = (f"FedAvg over the honest trainers only (its free_rider run: the zero updates are rejected): "
                             f"{pct(honest)}%")
            t.add_column("attack")
            for rule in rules:
                t.add_column(rule + (" (default)" if rule == default_rule else ""), justify="right")
            t.add_column("default - FedAvg clean", justify="right")
            t.add_column(f"within {TARGET_ACC_GAP * 100:g} pts", justify="center")
            for attack in attacks:
                cells = []
                gap = None
                for rule in rules:
                    hit = [a for a in rows if a["rule"] == rule and a["attack"] == attack
                           and (attack == "none" or a["fraction"] == frac)]
                    cells.append(pct(hit[0]["final_accuracy"]) if hit else "")
                    if hit and rule == default_rule:
                        gap = hit[0]["gap_to_fedavg_no_attack"]
                ok = None if gap is None or attack == "none" else gap <= TARGET_ACC_GAP + 1e-12
                t.add_row(attack, *cells, "-" if gap is None else f"{-gap * 100:+.1f}", yes(ok) if attack != "none" else "")
            console.print(t)


def print_filters(console: Console, summary: dict[str, Any]) -> None:
    t = Table(title="Filter verdicts (validation + filters) against the truth, every round of every rule's run")
    for c in ("partition", "attack", "malicious", "flagged malicious", "flagged honest", "precision", "recall",
              "reasons (malicious)", "reasons (honest flagged)"):
        t.add_column(c, justify="right" if c not in ("partition", "attack") and "reasons" not in c else "left")
    for f in sorted(summary["filters"], key=lambda f: (f["partition"] != IID, ATTACKS.index(f["attack"]), f["fraction"])):
        mal = f["tp"] + f["fn"]
        t.add_row(f["partition"], f["attack"], f"{round(f['fraction'] * 100)}%" if f["attack"] != "none" else "0",
                  f"{f['tp']}/{mal}", f"{f['fp']}/{f['fp'] + f['tn']}", pct(f["precision"]), pct(f["recall"]),
                  ", ".join(f"{k} {v}" for k, v in sorted(f["malicious_reasons"].items())),
                  ", ".join(f"{k} {v}" for k, v in sorted(f["honest_reasons"].items())))
    console.print(t)


def print_rewards(console: Console, summary: dict[str, Any], default_rule: str) -> None:
    t = Table(title=f"Rewards in the default rule's runs ({default_rule}, IID; service scorer, reward split per round)")
    for c in ("attack", "malicious", "paid (ETH)", "to honest", "to malicious (ETH)", f">= {TARGET_HONEST_SHARE:.0%}",
              "scorers", "evaluations"):
        t.add_column(c, justify="left" if c in ("attack", "scorers") else "right")
    for rw in sorted(summary["rewards"], key=lambda x: (ATTACKS.index(x["attack"]), x["fraction"])):
        share = rw["honest_share"]
        mal = f"{round(rw['fraction'] * 100)}%" if rw["attack"] != "none" else "0"
        t.add_row(rw["attack"], mal, f"{rw['paid_total_wei'] / ETHER:.3f}", pct(share, 2),
                  f"{rw['paid_malicious_wei'] / ETHER:.4f}",
                  yes(None if share is None or rw["attack"] == "none" else share >= TARGET_HONEST_SHARE),
                  ", ".join(rw["scorers"]), str(rw["score_evaluations"]))
    console.print(t)
    for rw in summary["rewards"]:
        if rw["attack"] in UNPAID_ATTACKS:
            paid = rw["malicious_paid_each_wei"]
            ok = all(v == 0 for v in paid.values())
            console.print(f"{'PASS' if ok else 'FAIL'}: {rw['attack']} at {rw['fraction']:.0%}: paid "
                          f"{paid} wei to trainers {list(paid)} (must be 0 each)",
                          style="green" if ok else "red", highlight=False)
    fair = summary["fairness"]
    if fair:
        t = Table(title=f"Fairness: honest trainers with label noise, default rule, IID "
                        f"(Spearman(reward, quality) = {fair['spearman']:.3f}; final accuracy {pct(fair['final_accuracy'])}%)")
        for c in ("trainer", "label noise", "quality", "reward (ETH)", "share", "score sum", "accepted rounds"):
            t.add_column(c, justify="right")
        total = fair["paid_total_wei"] or 1
        for tr in fair["trainers"]:
            t.add_row(str(tr["trainer"]), f"{tr['label_noise']:g}", f"{tr['quality']:g}", f"{tr['reward_wei'] / ETHER:.4f}",
                      pct(tr["reward_wei"] / total), f"{tr['score_sum']:.4f}", str(tr["accepted_rounds"]))
        console.print(t)


def print_overhead(console: Console, rows: list[dict[str, Any]]) -> None:
    t = Table(title="Protocol overhead per round on the real stack (anvil + js-ipfs), median over rounds, seconds; "
                    "training, scoring and chain waiting excluded")
    cols = ("trainers", "upload", "commit", "reveal", "context", "fetch", "validate", "publish", "finalize",
            "total", "max", f"<= {TARGET_OVERHEAD_S:g} s", "filter+agg*", "mining*",
            "CPU s trainers py/anvil/ipfs", "py ms /trainer", "CPU s aggr. py/anvil/ipfs")
    for c in cols:
        t.add_column(c, justify="right")
    for r in rows:
        ok = r["total"] <= TARGET_OVERHEAD_S if r["n"] == TARGET_OVERHEAD_N else None
        t.add_row(str(r["n"]), *(f"{r[k]:.2f}" for k in ("upload", "commit", "reveal", "context", "fetch", "validate",
                                                            "publish", "finalize", "total")),
                  f"{r['total_max']:.2f}", yes(ok), f"{r['compute_not_counted']:.2f}", f"{r['mine_not_counted']:.2f}",
                  "/".join(f"{r[f'cpu_trainers_{p}']:.1f}" for p in ("clients", "anvil", "ipfs")),
                  f"{r['cpu_trainers_clients'] / r['n'] * 1000:.0f}",
                  "/".join(f"{r[f'cpu_aggregator_{p}']:.1f}" for p in ("clients", "anvil", "ipfs")))
    if rows:
        t.caption = (f"update {rows[0]['update_bytes'] / 1024:.0f} KiB (mnist_cnn, f32); upload/commit/reveal: all trainers "
                     "in parallel from this one process (wall); context..finalize: the aggregator; * not counted; load average at the "
                     f"end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    console.print(t)


def targets(summary: dict[str, Any] | None, ov_rows: list[dict[str, Any]] | None, default_rule: str,
            central: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if summary:
        for partition in (IID, DIRICHLET):
            gaps = [a for a in summary["accuracy"] if a["partition"] == partition and a["rule"] == default_rule
                    and a["attack"] != "none" and abs(a["fraction"] - central) < 1e-9 and a["gap_to_fedavg_no_attack"] is not None]
            if gaps:
                worst = max(gaps, key=lambda a: a["gap_to_fedavg_no_attack"])
                out.append({
                    "target": f"default rule within {TARGET_ACC_GAP * 100:g} pts of FedAvg clean, {central:.0%} malicious, "
                              f"any attack ({partition})",
                    "measured": f"worst {worst['attack']}: {-worst['gap_to_fedavg_no_attack'] * 100:+.1f} pts; "
                                f"{sum(a['gap_to_fedavg_no_attack'] <= TARGET_ACC_GAP + 1e-12 for a in gaps)}/{len(gaps)} attacks within",
                    "met": all(a["gap_to_fedavg_no_attack"] <= TARGET_ACC_GAP + 1e-12 for a in gaps),
                })
        shares = [r for r in summary["rewards"] if r["attack"] != "none" and r["honest_share"] is not None]
        if shares:
            worst = min(shares, key=lambda r: r["honest_share"])
            total_h = sum(r["paid_honest_wei"] for r in shares)
            total = sum(r["paid_total_wei"] for r in shares)
            out.append({
                "target": f"honest trainers >= {TARGET_HONEST_SHARE:.0%} of rewards (each attack run)",
                "measured": f"worst {worst['attack']}@{worst['fraction']:.0%}: {pct(worst['honest_share'], 2)}%; "
                            f"over all attack runs {pct(total_h / total if total else None, 2)}%; "
                            f"{sum(r['honest_share'] >= TARGET_HONEST_SHARE for r in shares)}/{len(shares)} runs",
                "met": all(r["honest_share"] >= TARGET_HONEST_SHARE for r in shares),
            })
        unpaid = [r for r in summary["rewards"] if r["attack"] in UNPAID_ATTACKS]
        if unpaid:
            paid = sum(r["paid_malicious_wei"] for r in unpaid)
            out.append({"target": "free-riders and copycats paid 0",
                        "measured": f"{paid} wei over {len(unpaid)} runs", "met": paid == 0})
        if summary["fairness"]:
            rho = summary["fairness"]["spearman"]
            out.append({"target": f"Spearman(reward, data quality) >= {TARGET_SPEARMAN}", "measured": f"{rho:.3f}",
                        "met": bool(rho >= TARGET_SPEARMAN)})
    if ov_rows:
        hit = [r for r in ov_rows if r["n"] == TARGET_OVERHEAD_N]
        if hit:
            out.append({"target": f"protocol overhead <= {TARGET_OVERHEAD_S:g} s per round, {TARGET_OVERHEAD_N} trainers",
                        "measured": f"{hit[0]['total']:.2f} s (median of {hit[0]['rounds']}, max {hit[0]['total_max']:.2f})",
                        "met": hit[0]["total"] <= TARGET_OVERHEAD_S})
        else:
            big = max(ov_rows, key=lambda r: r["n"])
            out.append({"target": f"protocol overhead <= {TARGET_OVERHEAD_S:g} s per round, {TARGET_OVERHEAD_N} trainers",
                        "measured": f"not run ({TARGET_OVERHEAD_N} trainers); {big['n']} trainers: {big['total']:.2f} s",
                        "met": None})
    return out


def print_targets(console: Console, rows: list[dict[str, Any]]) -> None:
    t = Table(title="Targets (issue 6)")
    t.add_column("target")
    t.add_column("measured")
    t.add_column("", justify="center")
    for r in rows:
        t.add_row(r["target"], r["measured"], yes(r["met"]))
    console.print(t)


# ============================================================================ main


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind, so the finally blocks stop anvil and IPFS by PID


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true", help="digits + digits_mlp instead of MNIST-5k + mnist_cnn")
    ap.add_argument("--full", action="store_true", help="every rule x attack x {20, 30, 40}%% malicious")
    ap.add_argument("--smoke", action="store_true",
                    help="2 rounds, digits, 4 trainers, one attack (free_rider); overhead with 10 trainers only")
    ap.add_argument("--rounds", type=int, default=DEMO["rounds"])
    ap.add_argument("--epochs", type=int, default=DEMO["epochs"])
    ap.add_argument("--lr", type=float, default=DEMO["lr"])
    ap.add_argument("--batch-size", type=int, default=DEMO["batch_size"])
    ap.add_argument("--trainers", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=max(1, min(os.cpu_count() or 1, 8)),
                    help="simulation processes (one torch thread each)")
    ap.add_argument("--overhead-counts", default="10,50,100")
    ap.add_argument("--overhead-rounds", type=int, default=3)
    ap.add_argument("--overhead-threads", type=int, default=32, help="trainer threads on the real stack")
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default reports/benchmarks/marketplace.json)")
    args = ap.parse_args(argv)
    args.dataset = "digits" if (args.fast or args.smoke) else "mnist5k"
    args.attacks = list(ATTACKS)
    args.fractions = [0.2, 0.3, 0.4] if args.full else [0.3]
    if args.smoke:
        args.rounds, args.trainers = 2, 4
        args.attacks = ["none", "free_rider"]
        args.fractions = [0.3]
        args.full = False
        args.overhead_counts = "10"
        args.overhead_rounds = 2
    args.counts = [int(x) for x in str(args.overhead_counts).split(",") if x.strip()]
    if args.out is None:
        name = "marketplace.smoke.json" if args.smoke else "marketplace.json"
        args.out = ROOT / "reports" / "benchmarks" / name
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    console = Console(width=None if sys.stdout.isatty() else 200)
    settings = service_settings()
    config = service_config()
    default_rule = make_rule(settings.rule).spec
    started = time.perf_counter()
    report: dict[str, Any] = {
        "meta": {
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                        "platform": platform.platform()},
            "dataset": args.dataset, "model": MODELS[args.dataset].architecture, "trainers": args.trainers,
            "rounds": args.rounds, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
            "seed": args.seed, "workers": args.workers, "full": args.full, "smoke": args.smoke,
            "loadavg_start": os.getloadavg(),
            "service": {"rule": default_rule, "scorer": settings.scorer, "filters": asdict(config.filters),
                        "server_lr": settings.server_lr, "adapt": settings.adapt.model_dump()},
            "attacks": {a: parse_behaviour(a).describe() for a in args.attacks if a != "none"},
        },
    }
    console.print(f"service defaults: rule [bold]{default_rule}[/], scorer {settings.scorer}, filters {asdict(config.filters)}",
                  highlight=False)
    summary = None
    if not args.skip_sim:
        runs = grid(args, default_rule)
        console.print(f"simulation: {len(runs)} runs of {args.rounds} rounds, {args.trainers} trainers, {args.dataset} "
                      f"({MODELS[args.dataset].architecture}), {args.workers} worker process(es)", highlight=False)
        results = run_all(runs, args.workers, console)
        summary = summarize_sim(results, default_rule)
        report["simulation"] = summary
        report["runs"] = results
        for f in summary["failed"]:
            console.print(f"[red]run failed[/] {f['name']}: {f['error']}", highlight=False)
        print_accuracy(console, summary, default_rule, args.attacks)
        print_filters(console, summary)
        print_rewards(console, summary, default_rule)
        report["meta"]["simulation_seconds"] = time.perf_counter() - started
        report["meta"]["loadavg_after_simulation"] = os.getloadavg()
    ov_rows = None
    if not args.skip_overhead:
        t0 = time.perf_counter()
        ov = overhead(args.counts, args.overhead_rounds, console, args.overhead_threads)
        ov_rows = summarize_overhead(ov)
        report["overhead"] = {**ov, "summary": ov_rows}
        report["meta"]["overhead_seconds"] = time.perf_counter() - t0
        report["meta"]["loadavg_after_overhead"] = os.getloadavg()
        print_overhead(console, ov_rows)
    tg = targets(summary, ov_rows, default_rule, 0.3)
    report["targets"] = tg
    report["meta"]["seconds"] = time.perf_counter() - started
    print_targets(console, tg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    console.print(f"figures written to {args.out} ({report['meta']['seconds']:.0f} s in all)", highlight=False)
    return 1 if summary and summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

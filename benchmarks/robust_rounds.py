"""Robust, fair rounds (issue 11): the default defence against every attack, per cell, with the targets.

Run: .venv/bin/python benchmarks/robust_rounds.py [--smoke] [--full] [--dataset mnist5k|digits] [--seeds 3]
     [--workers CPUS] [--rounds 5] [--out reports/benchmarks/robust_rounds.json]
     [--n 4 --partition iid --attack none ...] [--filter gate_noise_z=0 ...]

Every run is `lab.inprocess.simulate`: the trainers' code (`train_local`, then the scripted
`trainer.behaviours` behaviour) and the aggregator's one round computation
(`aggregator.round.compute_from_inputs` with the service's own `RoundConfig`, i.e. the default
defence: statistical filters -> validation gate -> FedAvg -> exact / GTG Shapley -> pay). The
dataset is split 80/10/10 (stratified): the training part dealt to n trainers (IID or
Dirichlet(alpha) label skew), the validation part is the aggregator's, the test part gives the
accuracy. The malicious trainers are the last round(n x fraction). Training: `market demo`'s
defaults (2 local epochs, lr 0.05, batch 32), 5 rounds.

Cells: n x partition x fraction x attack x seed. Default: n in {4, 10}, IID and Dirichlet 0.3,
40 % malicious, every attack, mnist5k, 3 seeds (216 runs; about an hour on 2 cores, dominated by
the validation gate's CNN evaluations; `--dataset digits` takes ~3 min). `--full`: n in {4, 10,
30}, IID, Dirichlet 0.5 and 0.3, 20/30/40 %, every attack, digits and mnist5k (hours: `--backend
ray --address ...` spreads it over a cluster). `--smoke`:
n = 4, IID, 2 rounds, three attacks and the Sybil split, 1 seed, digits (seconds). `--n`,
`--partition` and `--attack` (each repeatable; `none` for the attack-free cells only) narrow the
default grid; `--filter KEY=VALUE` runs it with a different `[aggregator.filters]` threshold.

Per cell (mean and worst over seeds) and the issue's targets, unmet marked `x`:
- acc: final test accuracy; `d_clean` = acc - the same defence without attack (target >= -3
  points); `d_absent` = acc - the same honest trainers with the attackers absent (their data
  gone too: the part of `d_clean` no defence can win back); without attack `d_fedavg` = acc -
  FedAvg without the gate (target >= -2 points);
- backdoor success (backdoor cells; target <= 5 %);
- honest share of all rewards paid (target >= 98 %);
- honest updates rejected, of all honest verdicts (target <= 1 %);
- reward spread among honest trainers (max/min cumulative reward; IID cells only, where their
  data is statistically equal; target <= 1.25);
- gain: one attacker's mean reward over one honest trainer's, minus 1 (target <= 0: attacking
  does not pay; the figure that matters for the reward attacks, stretch and sample_liar, whose
  senders hold honest data, so that the honest share target cannot apply to them);
- Sybil gain: trainer 0's data dealt over k = 2 identities (every other trainer's data the same):
  (the identities' total reward - trainer 0's reward as one identity), in units of an even share
  (total paid / n) of the unsplit run (target <= 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator.round import decode_base_model
from lab.backends import BACKENDS, open_backend
from lab.inprocess import IID, MODELS, LocalProject, RunSpec, service_config, simulate, splits
from market.models import build_model
from trainer.behaviours import backdoor_success
from trainer.partition import dirichlet, iid

ATTACKS = (
    "label_flip", "sign_flip:k=4", "gaussian_noise", "scaling", "alie", "ipm", "min_max", "min_sum",
    "gate_evader", "stretch", "backdoor", "free_rider", "copycat", "sample_liar",
)
SMOKE_ATTACKS = ("sign_flip:k=4", "backdoor", "stretch")
BACKDOOR_TARGET = 0  # trainer.behaviours.Backdoor's default target
TARGETS = {"d_clean": -0.03, "d_fedavg": -0.02, "backdoor": 0.05, "honest_share": 0.98, "honest_rejected": 0.01,
           "spread": 1.25, "sybil_gain": 0.0, "gain": 0.0}


@dataclasses.dataclass(frozen=True)
class Job:
    kind: str  # cell | clean | fedavg | absent | sybil_base | sybil_split
    dataset: str
    n: int
    partition: str
    fraction: float
    attack: str
    seed: int
    rounds: int
    #: `[aggregator.filters]` thresholds to run with instead of the defaults
    filters: tuple[tuple[str, Any], ...] = ()

    def config(self) -> Any:
        config = service_config(score=True)
        return dataclasses.replace(config, filters=dataclasses.replace(config.filters, **dict(self.filters)))

    def spec(self, n: int | None = None) -> RunSpec:
        config = self.config()
        return RunSpec(rule=config.rule, attack=self.attack, fraction=self.fraction, partition=self.partition,
                       dataset=self.dataset, n=n or self.n, rounds=self.rounds, epochs=2, lr=0.05, batch_size=32,
                       seed=self.seed, score=True)


def _parts(job: Job) -> list[np.ndarray]:
    train, _, _ = splits(job.dataset, job.seed)
    if job.partition == IID:
        return iid(len(train), job.n, seed=job.seed)
    return dirichlet(train.y, job.n, alpha=float(job.partition.split(":")[1]), seed=job.seed)


def _backdoor(project: LocalProject, job: Job) -> float:
    spec = MODELS[job.dataset]
    model = build_model(spec)
    like = model.state_dict()
    model.load_state_dict(decode_base_model(project.models[-1], "(final)", like, len(project.models[-1])))
    _, _, test = splits(job.dataset, job.seed)
    return backdoor_success(model, test.x, test.y, BACKDOOR_TARGET)


def run(job: Job) -> dict[str, Any]:
    """One simulation; plain figures."""
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    kept: list[LocalProject] = []
    config = job.config()
    parts: list[list[int]] | None = None
    spec = job.spec()
    if job.kind == "fedavg":
        config = dataclasses.replace(config, filters=dataclasses.replace(config.filters, validation_gate=False))
    elif job.kind == "absent":  # the honest trainers of the attacked cell, with the attackers' data gone
        m = job.spec().malicious
        parts = [p.tolist() for p in _parts(job)[: job.n - m]]
        spec = dataclasses.replace(job.spec(job.n - m), attack="none", fraction=0.0)
    elif job.kind == "sybil_split":  # trainer 0's part dealt over 2 identities, everyone else's the same
        whole = _parts(job)
        parts = [p.tolist() for p in (whole[0][0::2], whole[0][1::2], *whole[1:])]
        spec = job.spec(job.n + 1)
    out = simulate(spec, config=config, on_round=lambda p: kept.append(p) if not kept else None, parts=parts)
    bad = set(out["malicious"])
    honest_verdicts = [v for r in out["rounds"] for v in r["verdicts"] if not v["malicious"]]
    rewards = {int(k): int(v) for k, v in out["cumulative_rewards"].items()}
    paid = sum(rewards.values())
    honest_rewards = [rewards.get(i, 0) for i in range(spec.n) if i not in bad]
    res = {
        "job": dataclasses.asdict(job),
        "acc": out["final_test_accuracy"],
        "honest_share": (sum(honest_rewards) / paid) if paid else math.nan,
        "honest_rejected": sum(1 for v in honest_verdicts if not v["accepted"]) / max(len(honest_verdicts), 1),
        "malicious_accepted": sum(1 for r in out["rounds"] for v in r["verdicts"] if v["malicious"] and v["accepted"]),
        "spread": (max(honest_rewards) / min(honest_rewards)) if honest_rewards and min(honest_rewards) > 0
        else math.inf,
        # what one attacker earns against one honest trainer, minus 1 (<= 0: attacking does not pay)
        "gain": (statistics.fmean(rewards.get(i, 0) for i in bad) / statistics.fmean(honest_rewards) - 1)
        if bad and honest_rewards and sum(honest_rewards) else math.nan,
        "rewards": rewards,
        "reasons": sorted({v["reason"] for r in out["rounds"] for v in r["verdicts"] if v["malicious"]}),
        "honest_reasons": sorted({v["reason"] for v in honest_verdicts if not v["accepted"]}),
        "seconds": time.perf_counter() - started,
    }
    if job.attack.startswith("backdoor"):
        res["backdoor"] = _backdoor(kept[0], job)
    return res


def jobs(args: argparse.Namespace) -> list[Job]:
    ns: Sequence[int]
    partitions: Sequence[str]
    fractions: Sequence[float]
    attacks: Sequence[str]
    datasets: Sequence[str]
    if args.smoke:
        ns, partitions, fractions, attacks, datasets = (4,), (IID,), (0.4,), SMOKE_ATTACKS, (args.dataset,)
    elif args.full:
        ns, partitions, fractions, attacks, datasets = ((4, 10, 30), (IID, "dirichlet:0.5", "dirichlet:0.3"),
                                                        (0.2, 0.3, 0.4), ATTACKS, ("digits", "mnist5k"))
    else:
        ns, partitions, fractions, attacks, datasets = (4, 10), (IID, "dirichlet:0.3"), (0.4,), ATTACKS, (args.dataset,)
    ns, partitions = args.n or ns, args.partition or partitions
    attacks = [a for a in attacks if not args.attack or a in args.attack or a.split(":")[0] in args.attack]
    overrides = tuple(args.filter)
    out = []
    for ds in datasets:
        for seed in range(args.seeds):
            for n in ns:
                for part in partitions:
                    base = Job("clean", ds, n, part, 0.0, "none", seed, args.rounds, overrides)
                    out += [base, dataclasses.replace(base, kind="fedavg"),
                            dataclasses.replace(base, kind="sybil_split")]
                    for f in fractions:
                        out.append(dataclasses.replace(base, kind="absent", fraction=f, attack="sign_flip:k=4"))
                        out += [dataclasses.replace(base, kind="cell", fraction=f, attack=a) for a in attacks]
    return out


def _agg(values: Sequence[float], worst: str) -> tuple[float, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (min(vals) if worst == "min" else max(vals))


def _fmt(x: float, pct: bool = True) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{100 * x:+.1f}" if pct else f"{x:.2f}"


def report(results: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in results:
        j = r["job"]
        by.setdefault((j["kind"], j["dataset"], j["n"], j["partition"], j["fraction"], j["attack"]), []).append(r)

    def ref(kind: str, ds: str, n: int, part: str, seed: int, f: float = 0.0) -> dict[str, Any] | None:
        for r in results:
            j = r["job"]
            if (j["kind"], j["dataset"], j["n"], j["partition"], j["seed"]) == (kind, ds, n, part, seed) \
                    and (kind != "absent" or j["fraction"] == f):
                return r
        return None

    rows, unmet = [], []
    header = (f"{'dataset':8} {'n':>3} {'partition':14} {'frac':>4} {'attack':14} {'acc':>6} {'d_clean':>8} "
              f"{'d_absent':>8} {'d_fedavg':>8} {'backdoor':>8} {'hon.share':>9} {'hon.rej':>7} {'spread':>6} "
              f"{'sybil':>6} {'gain':>6} {'mal.acc':>7}  unmet")
    print(header)
    print("-" * len(header))
    for key in sorted(k for k in by if k[0] in ("cell", "clean")):
        kind, ds, n, part, f, attack = key
        cell = by[key]
        d_clean, d_absent, d_fedavg, sybil = [], [], [], []
        for r in cell:
            seed = r["job"]["seed"]
            clean = ref("clean", ds, n, part, seed)
            if kind == "cell" and clean:
                d_clean.append(r["acc"] - clean["acc"])
                absent = ref("absent", ds, n, part, seed, f)
                if absent:
                    d_absent.append(r["acc"] - absent["acc"])
            if kind == "clean":
                fed = ref("fedavg", ds, n, part, seed)
                if fed:
                    d_fedavg.append(r["acc"] - fed["acc"])
                split = ref("sybil_split", ds, n, part, seed)
                if split and r["rewards"]:
                    fair = sum(r["rewards"].values()) / n  # one identity's even share of what was paid
                    sybil.append((split["rewards"].get(0, 0) + split["rewards"].get(1, 0) - r["rewards"].get(0, 0)) / fair)
        acc = _agg([r["acc"] for r in cell], "min")
        figures = {
            "acc": acc,
            "d_clean": _agg(d_clean, "min"),
            "d_absent": _agg(d_absent, "min"),
            "d_fedavg": _agg(d_fedavg, "min"),
            "backdoor": _agg([r.get("backdoor", math.nan) for r in cell], "max"),
            "honest_share": _agg([r["honest_share"] for r in cell], "min"),
            "honest_rejected": _agg([r["honest_rejected"] for r in cell], "max"),
            "spread": _agg([r["spread"] for r in cell], "max") if part == IID else (math.nan, math.nan),
            "sybil_gain": _agg(sybil, "max"),
            "gain": _agg([r["gain"] for r in cell], "max"),
            "malicious_accepted": _agg([float(r["malicious_accepted"]) for r in cell], "max"),
        }
        misses = []
        for name, target in TARGETS.items():
            worst = figures[name][1]
            if math.isnan(worst):
                continue
            low_is_bad = name in ("d_clean", "d_fedavg", "honest_share")
            if (worst < target - 1e-12) if low_is_bad else (worst > target + 1e-12):
                misses.append(name)
        row = {"dataset": ds, "n": n, "partition": part, "fraction": f, "attack": attack, "seeds": len(cell),
               "figures": {k: {"mean": v[0], "worst": v[1]} for k, v in figures.items()}, "unmet": misses,
               "malicious_reasons": sorted({x for r in cell for x in r["reasons"]})}
        rows.append(row)
        if misses:
            unmet.append(row)
        print(f"{ds:8} {n:>3} {part:14} {f:>4.0%} {attack[:14]:14} {100 * acc[0]:>6.1f} "
              f"{_fmt(figures['d_clean'][1]):>8} {_fmt(figures['d_absent'][1]):>8} {_fmt(figures['d_fedavg'][1]):>8} "
              f"{_fmt(figures['backdoor'][1], False):>8} {_fmt(figures['honest_share'][1], False):>9} "
              f"{_fmt(figures['honest_rejected'][1], False):>7} {_fmt(figures['spread'][1], False):>6} "
              f"{_fmt(figures['sybil_gain'][1], False):>6} {_fmt(figures['gain'][1], False):>6} "
              f"{figures['malicious_accepted'][1]:>7.0f}  "
              f"{' '.join('x ' + m for m in misses)}")
    print("\nfigures: worst over seeds (acc: mean); d_* and backdoor in points / fractions as printed; targets:",
          ", ".join(f"{k} {'>=' if k in ('d_clean', 'd_fedavg', 'honest_share') else '<='} {v:g}" for k, v in TARGETS.items()))
    print(f"cells: {len(rows)}, with an unmet target: {len(unmet)}")
    return {"rows": rows, "unmet": len(unmet)}


def _threshold(text: str) -> tuple[str, Any]:
    from aggregator.filters import FilterConfig

    key, sep, value = text.partition("=")
    known = {f.name for f in dataclasses.fields(FilterConfig)}
    if not sep or key not in known:
        raise argparse.ArgumentTypeError(f"{text!r}: give KEY=VALUE with KEY one of {', '.join(sorted(known))}")
    try:
        default = getattr(FilterConfig(), key)
        parsed = (value.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {key} takes a {type(getattr(FilterConfig(), key)).__name__}") from None
    return key, parsed


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="n = 4, IID, 2 rounds, 3 attacks + Sybil, 1 seed")
    ap.add_argument("--full", action="store_true", help="the whole grid (hours)")
    ap.add_argument("--dataset", default=None, choices=sorted(MODELS), help="default mnist5k (digits with --smoke)")
    ap.add_argument("--seeds", type=int, default=None, help="default 3 (1 with --smoke)")
    ap.add_argument("--rounds", type=int, default=None, help="default 5 (2 with --smoke)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="runs at a time (default: one per CPU; with --backend ray and --address: the cluster's)")
    ap.add_argument("--backend", default="local", choices=BACKENDS,
                    help="local processes, or Ray tasks (a private loopback instance, or --address ADDR)")
    ap.add_argument("--address", default=None, help="a Ray cluster to run on (with --backend ray)")
    ap.add_argument("--n", type=int, action="append", help="trainers per project (repeatable; default 4 and 10)")
    ap.add_argument("--partition", action="append", help="iid or dirichlet:ALPHA (repeatable)")
    ap.add_argument("--attack", action="append", help="an attack of the grid (repeatable; `none`: no attacked cell)")
    ap.add_argument("--filter", type=_threshold, action="append", default=[], metavar="KEY=VALUE",
                    help="an [aggregator.filters] threshold to run with (repeatable)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default reports/benchmarks/robust_rounds.json, .smoke.json with --smoke)")
    args = ap.parse_args(argv)
    args.seeds = args.seeds or (1 if args.smoke else 3)
    args.dataset = args.dataset or ("digits" if args.smoke else "mnist5k")
    args.out = args.out or ROOT / "reports" / "benchmarks" / f"robust_rounds{'.smoke' if args.smoke else ''}.json"
    args.rounds = args.rounds or (2 if args.smoke else 5)
    todo = jobs(args)
    started = time.perf_counter()
    print(f"{len(todo)} runs on {args.workers} {args.backend} worker(s): default defence = {service_config().rule} + validation gate"
          + (f" with {', '.join(f'{k}={v}' for k, v in args.filter)}" if args.filter else ""), flush=True)
    results: list[dict[str, Any]] = []
    with open_backend(args.backend, address=args.address, workers=args.workers) as backend:
        step = 16 * max(args.workers, 1)  # chunks, for progress on stderr; each chunk runs in parallel
        for k in range(0, len(todo), step):
            results += backend.map(run, todo[k:k + step])
            print(f"\r{len(results)}/{len(todo)} runs, {time.perf_counter() - started:.0f} s", end="",
                  file=sys.stderr, flush=True)
    print(file=sys.stderr)
    out = report(results)
    out["seconds"] = time.perf_counter() - started
    out["command"] = " ".join(sys.argv)
    print(f"{out['seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**out, "runs": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

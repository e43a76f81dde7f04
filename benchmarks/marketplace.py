"""The marketplace's figures (issue 6): robustness, filters and rewards.

Run: .venv/bin/python benchmarks/marketplace.py [--fast] [--full] [--smoke] [--workers 2]
     (default ~11 min on 2 quiet cores, most of it contribution scoring; --full ~45 min; --smoke seconds)

1. **Accuracy under attack**: the in-memory federation of `lab.inprocess` (trainer + aggregator
   code, no chain, no IPFS). MNIST-5k with `mnist_cnn` (`--fast`: scikit-learn digits with
   `digits_mlp`) is split 80/10/10 (stratified, seed 0): the training part is dealt to N = 10
   trainers (IID, or Dirichlet alpha = 0.5 label skew), the validation part is the aggregator's
   validation set (scores, plateau adaptation), the test part gives the final accuracy. Every
   round runs the trainers' code (`train_local` with the round's hyper-parameters, then the
   scripted behaviour of `trainer.behaviours`, given what it declares in `needs`), encodes each
   update with `market.protocol.codec`, and computes the round with
   `aggregator.round.compute_from_inputs`, the very function the service and the audit run
   (validate, filter with the replayed-global-step and previous-update references, aggregate,
   score, reward, adapt), with the service's defaults (`AggregatorSettings()` through
   `aggregator.service.config_from_settings`). Runs that do not measure rewards use the `equal`
   scorer (no evaluations; the model does not depend on the scores). Training defaults are
   `market demo`'s: 5 rounds, 2 local epochs, lr 0.05, batch 32. The malicious trainers are the
   last m = round(N x fraction); commit order is a seeded shuffle per round, with copycats
   committing after the trainer they copy. Scripted attacks use their defaults
   (`parse_behaviour(name)`): sign_flip k=1, gaussian_noise sigma=1, scaling x10, label_flip,
   alie (z from n and m, the colluders' own honest deltas as the group), ipm epsilon=0.1,
   free_rider mode=zero, copycat (the same round's update of an honest trainer, as if leaked
   before the reveal: the strongest copy; through commit-reveal alone a copycat has nothing to
   copy and sends zeros), sample_liar (claims 10x its samples). Runs are independent (models
   diverge per rule) and go to a pool of `--workers` processes, one torch thread each.
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
Protocol overhead on the real local stack (chain + IPFS, 10 to 1,000 trainers) is measured by
`benchmarks/protocol_overhead.py`.

Targets: 30% malicious running any one attack -> default rule within 2 accuracy points of FedAvg
without attack; honest trainers >= 95% of rewards; free-riders and copycats paid 0;
Spearman(reward, data quality) >= 0.8.
Everything printed is also written to reports/benchmarks/marketplace.json (`--out`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here and in workers

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aggregator.rules import make_rule
from aggregator.settings import AggregatorSettings
from lab.inprocess import DIRICHLET, ETHER, IID, MODELS, RunSpec, service_config, simulate
from trainer.behaviours import parse_behaviour

ATTACKS = ("none", "sign_flip", "gaussian_noise", "scaling", "label_flip", "alie", "ipm", "free_rider", "copycat",
           "sample_liar")
UNPAID_ATTACKS = ("free_rider", "copycat")
NOISE_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.5)
#: market demo's training defaults (market.simulate.Scenario)
DEMO = {"rounds": 5, "epochs": 2, "lr": 0.05, "batch_size": 32}
#: the project's round-0 hyper-parameters (`market demo`'s project.toml [hyperparams])
DEMO_HP = {"epochs": DEMO["epochs"], "lr": DEMO["lr"], "batch_size": DEMO["batch_size"]}
TARGET_ACC_GAP = 0.02
TARGET_HONEST_SHARE = 0.95
TARGET_SPEARMAN = 0.8


def service_settings() -> AggregatorSettings:
    """The aggregator service's defaults (no [aggregator] table, no flags)."""
    return AggregatorSettings()


# ============================================================================ 1-3: simulation (lab.inprocess)


def _worker_init() -> None:
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def safe_simulate(spec: RunSpec) -> dict[str, Any]:
    try:
        return simulate(spec)
    except Exception as exc:  # noqa: BLE001 - one failed run must not hide the others
        return {"spec": asdict(spec), "name": spec.name, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}


def grid(args: argparse.Namespace, default_rule: str) -> list[RunSpec]:
    common = {"dataset": args.dataset, "n": args.trainers, "rounds": args.rounds, "epochs": args.epochs, "lr": args.lr,
              "batch_size": args.batch_size, "seed": args.seed}
    if args.smoke:  # one point: the default rule against the first attack, scored
        return [RunSpec(default_rule, args.attacks[0], args.fractions[0], IID, score=True, **common)]
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


def targets(summary: dict[str, Any] | None, default_rule: str,
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
                    help="seconds: one scored run (default rule, free_rider), 3 trainers, 2 rounds, digits")
    ap.add_argument("--rounds", type=int, default=DEMO["rounds"])
    ap.add_argument("--epochs", type=int, default=DEMO["epochs"])
    ap.add_argument("--lr", type=float, default=DEMO["lr"])
    ap.add_argument("--batch-size", type=int, default=DEMO["batch_size"])
    ap.add_argument("--trainers", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=max(1, min(os.cpu_count() or 1, 8)),
                    help="simulation processes (one torch thread each)")
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default reports/benchmarks/marketplace.json)")
    args = ap.parse_args(argv)
    args.dataset = "digits" if (args.fast or args.smoke) else "mnist5k"
    args.attacks = list(ATTACKS)
    args.fractions = [0.2, 0.3, 0.4] if args.full else [0.3]
    if args.smoke:
        args.rounds, args.trainers, args.epochs = 2, 3, 1
        args.attacks = ["free_rider"]
        args.fractions = [0.3]
        args.full = False
        args.workers = 1
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
    tg = targets(summary, default_rule, 0.3)
    report["targets"] = tg
    report["meta"]["seconds"] = time.perf_counter() - started
    print_targets(console, tg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    console.print(f"figures written to {args.out} ({report['meta']['seconds']:.0f} s in all)", highlight=False)
    return 1 if summary and summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

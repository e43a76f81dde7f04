"""Ray as the engine for large rounds and grids (issue 15): local against Ray on this machine.

Run: .venv/bin/python benchmarks/ray_backend.py [--smoke] [--sizes 10 50 100] [--workers 2]
     (~5 min on 2 quiet cores; --smoke ~1 min: 10 trainers, a 4-point grid)

1. **Whole-round aggregator time** including the default scorer, at 10, 50 and 100 trainers:
   `aggregator.round.compute_from_inputs` (the function the service and the audit run) with the
   service's defaults (`lab.inprocess.service_config()`: validation gate, `auto` scorer = exact
   Shapley up to 8 accepted updates, GTG-Shapley above) over `lab.rounds.synthetic_round(n)`:
   `digits_mlp` on scikit-learn's digits (and `mnist_cnn` on MNIST-5k at 10 trainers, where each
   evaluation is a real CNN forward pass), 4 real deltas dealt to n trainers, each scaled and
   perturbed by its own seeded noise. "local" measures the coalitions in this process (what the
   service does by default); "ray" is `compute = "ray"` (`aggregator.ray_scoring`: the gate's and
   the scorer's coalitions measured as Ray tasks, one CPU each, on a local Ray instance started
   by this script). Ray's start and a warm-up (the workers' first imports and one 9-trainer round
   on Ray) are timed apart, once per run: a service pays them once, not per round.
   Every Ray round's record and model are asserted byte-identical to the local ones.
2. **A scenario grid** of 24 points (3 rules x 2 attacks x 2 malicious fractions x 2 seeds; 5
   trainers, 3 rounds of 2 local epochs, digits) with `market simulate --engine memory` (`lab.scenario.run_grid`, the
   in-memory federation of `lab.inprocess`) on the local backend (one point after the other, as
   `market simulate` runs today) and on the Ray backend (each point a Ray task): results.json
   and every round record asserted identical, and the wall time of each.

Speed-up = local time / Ray time; per worker = speed-up / Ray workers (1.0 would be perfect
scaling). Figures depend on the machine: the report says how many cores it has and how loaded
it was (a busy machine leaves Ray's workers no idle core to win on).
Everything printed is also written to reports/benchmarks/ray_backend.json (`--out`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from aggregator.round import compute_from_inputs
from lab.backends import RayBackend
from lab.inprocess import service_config
from lab.rounds import synthetic_round
from lab.scenario import Grid, run_grid

console = Console(width=140)


def _machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), load average {load} (1, 5, 15 min)"


def _warm(_: int) -> int:
    """Import what a grid point or a coalition task needs, on a worker (timed apart)."""
    import lab.scenario  # noqa: F401

    return os.getpid()


def round_times(cases: list[tuple[str, int]], workers: int) -> list[dict[str, Any]]:
    rows = []
    ray_config = dataclasses.replace(service_config(), compute="ray")
    for dataset, n in cases:
        inputs = synthetic_round(n, dataset=dataset)
        t = time.perf_counter()
        local = compute_from_inputs(inputs, service_config())
        t_local = time.perf_counter() - t
        t = time.perf_counter()
        on_ray = compute_from_inputs(inputs, ray_config)
        t_ray = time.perf_counter() - t
        assert on_ray.model_bytes == local.model_bytes, f"n={n}: the model differs on Ray"
        assert on_ray.record("Qm").to_bytes() == local.record("Qm").to_bytes(), f"n={n}: the record differs on Ray"
        metrics = local.fields["metrics"]
        rows.append({
            "dataset": dataset, "trainers": n, "accepted": sum(1 for v in local.fields["verdicts"] if v.accepted),
            "scorer": local.fields["scorer"], "evaluations": len(local.fields["evaluations"]),
            "score_evaluations": int(metrics["score_evaluations"]),
            "local_s": round(t_local, 3), "ray_s": round(t_ray, 3), "speedup": round(t_local / t_ray, 3),
            "per_worker": round(t_local / t_ray / workers, 3), "identical": True,
        })
        console.print(rows[-1], highlight=False)
    return rows


def grid_times(points: int, tmp: Path) -> dict[str, Any]:
    base: dict[str, Any]
    if points >= 24:
        axes: dict[str, Any] = {"rule": ["fedavg", "median", "trimmed_mean:beta=0.25"],
                                "attack": ["sign_flip:k=4", "gaussian_noise:sigma=1"],
                                "malicious_fraction": [0.2, 0.4], "seed": [0, 1], "trainers": 5}
        base = {"rounds": 3, "epochs": 2}
    else:
        axes = {"attack": "sign_flip:k=4", "malicious_fraction": [0.0, 0.34], "seed": [0, 1], "trainers": 3}
        base = {"rounds": 1}
    base = {"dataset": "digits", "architecture": "digits_mlp", "input_shape": [64], "epochs": 1} | base
    grid = Grid.model_validate({"base": base, "grid": axes})
    quiet = Console(quiet=True)
    t = time.perf_counter()
    local = run_grid(grid, tmp / "local", quiet, engine="memory")
    t_local = time.perf_counter() - t
    t = time.perf_counter()
    on_ray = run_grid(grid, tmp / "ray", quiet, backend=RayBackend(), engine="memory")
    t_ray = time.perf_counter() - t
    assert on_ray == local
    assert (tmp / "ray" / "results.json").read_bytes() == (tmp / "local" / "results.json").read_bytes()
    records = sorted(p.relative_to(tmp / "local") for p in (tmp / "local").glob("*/records/*.json"))
    same = all((tmp / "ray" / rel).read_bytes() == (tmp / "local" / rel).read_bytes() for rel in records)
    assert same and records, "a round record differs between the backends"
    return {"points": len(local), "records": len(records), "identical": same, "local_s": round(t_local, 2),
            "ray_s": round(t_ray, 2), "speedup": round(t_local / t_ray, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="10 trainers and a 4-point grid (about a minute)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100], help="trainers per round, digits_mlp")
    ap.add_argument("--mnist-sizes", type=int, nargs="*", default=[10],
                    help="trainers per round with mnist_cnn on mnist5k (an evaluation is a real CNN forward pass)")
    ap.add_argument("--points", type=int, default=24, help="grid points (24, or fewer for a 4-point grid)")
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--out", type=Path, default=None, help="JSON of the figures (default: reports/benchmarks/"
                    "ray_backend.json; --smoke writes none)")
    args = ap.parse_args()
    cases = [("digits", 10)] if args.smoke else [("digits", n) for n in args.sizes] + [("mnist5k", n) for n in args.mnist_sizes]
    points = 4 if args.smoke else args.points
    import ray

    console.print(f"machine: {_machine()}; Ray {ray.__version__}, local instance with {args.workers} worker CPUs")
    t = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        t_start = time.perf_counter() - t
        t = time.perf_counter()
        RayBackend().map(_warm, list(range(args.workers * 2)))
        compute_from_inputs(synthetic_round(9), dataclasses.replace(service_config(), compute="ray"))
        t_warm = time.perf_counter() - t
        console.print(f"Ray start {t_start:.1f} s, warm-up (workers' first imports, one 9-trainer round) {t_warm:.1f} s (not counted below)")
        rounds = round_times(cases, args.workers)
        with tempfile.TemporaryDirectory(prefix="ray-grid-") as tmp:
            grid = grid_times(points, Path(tmp))
    finally:
        ray.shutdown()

    note = f"this machine: {_machine()}; Ray workers: {args.workers}"
    table = Table("model", "trainers", "accepted", "scorer", "evaluations", "local (s)", "Ray (s)", "speed-up", "per worker",
                  "record identical", title="Whole-round aggregator time (compute_from_inputs, default scorer)",
                  caption=note)
    for r in rounds:
        table.add_row("digits_mlp" if r["dataset"] == "digits" else "mnist_cnn", str(r["trainers"]), str(r["accepted"]), r["scorer"], str(r["evaluations"]), f"{r['local_s']:.2f}",
                      f"{r['ray_s']:.2f}", f"{r['speedup']:.2f}x", f"{r['per_worker']:.2f}", "yes" if r["identical"] else "NO")
    console.print(table)
    g = Table("points", "round records", "local (s)", "Ray (s)", "speed-up", "results identical",
              title="Scenario grid, engine memory (market simulate --backend local | ray)", caption=note)
    g.add_row(str(grid["points"]), str(grid["records"]), f"{grid['local_s']:.1f}", f"{grid['ray_s']:.1f}",
              f"{grid['speedup']:.2f}x", "yes" if grid["identical"] else "NO")
    console.print(g)
    out = args.out or (None if args.smoke else Path("reports/benchmarks/ray_backend.json"))
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": _machine(), "workers": args.workers, "ray_start_s": round(t_start, 2),
                                    "ray_warmup_s": round(t_warm, 2), "rounds": rounds, "grid": grid,
                                    "smoke": args.smoke}, indent=2))
    console.print(f"written to {out}")


if __name__ == "__main__":
    main()

"""`market demo` and `market simulate`: whole marketplaces on the local stack.

They are plugins of the `market` CLI (entry-point group `market.commands`, like `market audit`), so
the protocol library never imports the experiments. Progress goes to stderr; `--json` prints one
JSON document on stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from lab.backends import open_backend
from lab.scenario import ENGINES, Grid, Scenario, TrainerPlan, run_grid, run_scenario, stop_on_sigterm
from market.cli.kit import JsonOpt, console, emit_json, err_console
from market.errors import ConfigError, ExitCode

__all__ = ["demo", "simulate"]


def demo(
    out: Path = typer.Option(Path("reports/demo"), "--out", help="Output directory (report, logs, chain state)."),
    trainers: int = typer.Option(10, "--trainers", min=2, help="Number of trainers (the last --malicious of them attack)."),
    malicious: int = typer.Option(2, "--malicious", min=0, help="How many trainers misbehave (sign flip, then free-rider, ...)."),
    rounds: int = typer.Option(5, "--rounds", min=1, help="Rounds of training."),
    dataset: str = typer.Option("mnist5k", "--dataset", help="mnist5k (CNN) or digits (MLP)."),
    as_json: bool = JsonOpt,
) -> None:
    """The whole marketplace on the local stack: anvil + IPFS, deploy, an escrowed project, one OS
    process per trainer, the aggregator service, claims, the audit, and a report (HTML + PNG)."""
    stop_on_sigterm()
    attacks = ["sign_flip:k=4", "free_rider:mode=zero", "scaling:factor=10", "gaussian_noise:sigma=1", "label_flip"]
    if malicious >= trainers:
        raise ConfigError("--malicious must leave at least one honest trainer")
    plans = [TrainerPlan()] * (trainers - malicious) + [TrainerPlan(behaviour=attacks[i % len(attacks)]) for i in range(malicious)]
    model = {"mnist5k": ("mnist_cnn", [1, 28, 28]), "digits": ("digits_mlp", [64])}
    if dataset not in model:
        raise ConfigError(f"--dataset must be mnist5k or digits, got {dataset!r}")
    arch, shape = model[dataset]
    sc = Scenario(trainers=plans, rounds=rounds, dataset=dataset, architecture=arch, input_shape=shape)
    result = run_scenario(sc, out, console=err_console, live=not as_json, dashboard=True)
    if as_json:
        emit_json(result.report.to_json() | {"summary": result.summary()})
    else:
        _print_result(result)
    if not result.audit_ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _print_result(result: Any) -> None:
    rep = result.report
    acc = Table("round", "accuracy", title="Accuracy per round")
    for r, a in rep.accuracy():
        acc.add_row(str(r), f"{a * 100:.2f}%")
    console.print(acc)
    t = Table("trainer", "truth", "accepted", "rejected (reasons)", "score", "rewarded (ETH)", "claimed (ETH)",
              title="Trainers")
    verdicts, cum = rep.verdict_summary(), rep.final_cumulative()
    for addr, truth in result.truth.items():
        v = verdicts.get(addr, {"accepted": 0, "rejected": 0, "reasons": {}, "score": 0.0})
        reasons = ", ".join(f"{k} x{n}" for k, n in v["reasons"].items())
        t.add_row(truth["label"], truth["behaviour"], str(v["accepted"]), f"{v['rejected']} {reasons}".strip(),
                  f"{v['score']:.4f}", f"{cum.get(addr, 0) / 1e18:.4f}", f"{rep.paid.get(addr, 0) / 1e18:.4f}")
    console.print(t)
    g = Table("role", "gas", title="Gas per role")
    for role, gas in sorted(rep.gas_by_role.items()):
        g.add_row(role, f"{gas:,}")
    console.print(g)
    s = result.summary()
    console.print(
        f"audit: {'[green]passed[/]' if result.audit_ok else '[red]FAILED[/]'}; honest share of rewards "
        f"{(s['honest_share'] or 0) * 100:.1f}%; {s['seconds']} s; report: {result.out_dir / 'report' / 'report.html'}"
    )


def simulate(
    config_file: Path = typer.Option(..., "--config", help="Scenario grid TOML: [base] scenario fields, [grid] axes."),
    out: Path = typer.Option(Path("reports/simulate"), "--out", help="Output directory (results.csv/json, plots, runs)."),
    backend: str = typer.Option("local", "--backend", help="Where grid points run: local (here) or ray (Ray tasks)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster to join (ray://head:10001); default: a local Ray instance for the run."),
    workers: int | None = typer.Option(None, "--workers", help="Points at a time (local) / CPUs of the local Ray instance."),
    engine: str = typer.Option("stack", "--engine", help="stack: each point on its own local stack; memory: the in-memory federation (deterministic)."),
    as_json: bool = JsonOpt,
) -> None:
    """Experiment grids: rule x attack x malicious fraction x non-IID alpha x seed, each on a fresh
    local stack (or in memory); results as CSV/JSON plus plots; points as Ray tasks with --backend ray."""
    stop_on_sigterm()
    grid = Grid.load(config_file)
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {list(ENGINES)}, got {engine!r}")
    with open_backend(backend, address=address, workers=workers) as runner:
        rows = run_grid(grid, out, err_console, backend=runner, engine=engine)
    if as_json:
        emit_json(rows)
    else:
        t = Table(*rows[0].keys(), title="Scenario results")
        for r in rows:
            t.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()))
        console.print(t)

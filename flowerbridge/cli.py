"""`python -m flowerbridge check APP`: the checks the ServerApp runs before its first round, from a
shell, with one line and an exit code (`market.errors.EXIT_CODES`) instead of a Flower traceback.

It reads the app's run config (`[tool.flwr.app.config]` of APP/pyproject.toml) with `--run-config`
overrides on top, exactly as `flwr run` would, then: the bridge's keys parse; market.toml loads;
the chain answers; the deployment is there; the project exists and the aggregator account is its
aggregator (or the project file loads, for a run that brings one). Nothing is sent.
"""

from __future__ import annotations

from pathlib import Path

import typer

from market.cli.kit import console, handle_errors

app = typer.Typer(name="flowerbridge", help="Check a Flower app's market configuration.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def _main() -> None:
    """Check a Flower app's market configuration."""


@app.command("check")
@handle_errors
def check(
    path: Path = typer.Argument(Path("."), help="The Flower app's directory (with its pyproject.toml)."),
    run_config: list[str] = typer.Option(None, "--run-config", "-c", help="Overrides, as for `flwr run`."),
) -> None:
    """Check the run config's market keys against the chain, as the ServerApp will."""
    from flwr.common.config import get_fused_config_from_dir, parse_config_args

    from flowerbridge.config import BridgeConfig
    from flowerbridge.errors import BridgeConfigError
    from flowerbridge.server import MarketRounds

    if not (path / "pyproject.toml").is_file():
        raise BridgeConfigError(f"{path} has no pyproject.toml: pass the Flower app's directory")
    try:
        fused = get_fused_config_from_dir(path, parse_config_args(run_config or []))
    except (ValueError, KeyError) as exc:
        raise BridgeConfigError(f"{path}/pyproject.toml or --run-config does not parse ({exc}): fix it") from None
    config = BridgeConfig.from_run_config(fused)
    if not config.enabled:
        console.print("market-project is 0: a plain Flower run, nothing to check")
        return
    rounds = MarketRounds.open(config)
    try:
        if config.project_file is not None:
            from market.cli.project_file import ProjectFile

            ProjectFile.load(config.project_file)
            console.print(f"ok: the ServerApp will create a project from {config.project_file}; aggregator"
                          f" {rounds.client.account_address}")
            return
        info = rounds.project()
        if info.ended or info.current_round >= info.num_rounds:
            rounds.open_round()  # raises RoundOutOfStep: nothing left for a run
        console.print(f"ok: project {rounds.project_id}, round {info.current_round} of {info.num_rounds} open,"
                      f" aggregator {rounds.client.account_address}")
    finally:
        rounds.close()

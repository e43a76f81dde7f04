"""`market simulate --backend ray`: grid points as Ray tasks give the same records and results.json
as the local backend; bad backends, addresses and a missing Ray are one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from lab.backends import open_backend
from lab.cli import simulate
from lab.scenario import Grid, memory_spec, run_grid
from market.cli.kit import handle_errors
from market.errors import ConfigError, ExitCode

GRID = """
[base]
rounds = 1
dataset = "digits"
architecture = "digits_mlp"
input_shape = [64]
epochs = 1
[grid]
trainers = 3
attack = "sign_flip:k=4"
malicious_fraction = [0.34]
seed = [0, 1]
"""


def _grid_file(tmp_path: Path) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    return path


def _simulate(*argv: str) -> Any:
    """`market simulate ARGV` (the plugin as `market` registers it)."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command()(handle_errors(simulate))
    return CliRunner().invoke(app, list(argv), env={"RAY_USAGE_STATS_ENABLED": "0"})


def _said(result: Any) -> str:
    return str(result.output)  # stdout and stderr, interleaved


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--backend", "nope"], "--backend must be one of"),
        (["--address", "127.0.0.1:1"], "use it with --backend ray"),
        (["--backend", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers at '127.0.0.1:1'"),
        (["--backend", "ray", "--address", "head"], "is not host:port"),
        (["--engine", "chain"], "--engine must be one of"),
    ],
)
def test_bad_backend_options_are_one_line_config_errors(tmp_path: Path, argv: list[str], needle: str) -> None:
    result = _simulate("--config", str(_grid_file(tmp_path)), "--out", str(tmp_path / "out"), "--engine", "memory", *argv)
    assert result.exit_code == ExitCode.CONFIG
    said = _said(result).strip()
    assert needle in said and len(said.splitlines()) == 1


def test_missing_ray_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = _simulate("--config", str(_grid_file(tmp_path)), "--engine", "memory", "--backend", "ray")
    assert result.exit_code == ExitCode.CONFIG
    assert "pip install .[ray]" in _said(result)


def test_memory_engine_refuses_what_it_cannot_run() -> None:
    grid = Grid.model_validate({"base": {"trainers": [{"behaviour": "copycat"}, {}]}})
    with pytest.raises(ConfigError, match="one attack, on the last trainers"):
        memory_spec(grid.scenarios()[0])
    with pytest.raises(ConfigError, match="engine memory runs"):
        memory_spec(Grid.model_validate({"base": {"dataset": "digits"}}).scenarios()[0])  # mnist_cnn on digits


def test_grid_on_ray_gives_the_local_records_and_results(tmp_path: Path, ray_runtime: Any) -> None:
    grid_file = _grid_file(tmp_path)
    quiet = Console(quiet=True)
    local = run_grid(Grid.load(grid_file), tmp_path / "local", quiet, engine="memory")
    result = _simulate("--config", str(grid_file), "--out", str(tmp_path / "ray"), "--engine", "memory",
                       "--backend", "ray", "--json")
    assert result.exit_code == 0, _said(result)
    assert ray_runtime.is_initialized()  # the test's runtime was used, and left running
    assert json.loads(result.stdout) == local
    assert (tmp_path / "ray" / "results.json").read_bytes() == (tmp_path / "local" / "results.json").read_bytes()
    records = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").glob("*/records/*.json"))
    assert len(records) == 2
    for rel in records:
        assert (tmp_path / "ray" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes()
    assert json.loads((tmp_path / "ray" / "timings.json").read_text())["backend"] == "ray"


def test_open_backend_maps_in_order_and_keeps_a_running_runtime(ray_runtime: Any) -> None:
    with open_backend("ray") as backend:
        assert backend.map(lambda x: -x, [-3, 2, -1]) == [3, -2, 1]
    assert ray_runtime.is_initialized()
    with open_backend("local") as backend:
        assert backend.map(lambda x: -x, [-3, 2]) == [3, -2]

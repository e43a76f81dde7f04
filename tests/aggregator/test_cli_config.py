"""`aggregator` CLI configuration (issue 10): the one config file, strict, and the user-model flag
named the same as `market audit`'s."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aggregator.cli import app


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('[aggregator]\nrul = "median"\n', "did you mean 'rule'"),
        ('[aggregator]\nallow_user_model = true\n', "did you mean 'allow_user_models'"),
        ('[market]\nanvil_prot = 1\n', "did you mean 'anvil_port'"),
    ],
)
def test_a_misspelled_key_is_refused_naming_the_closest(tmp_path: Path, body: str, needle: str) -> None:
    cfg = tmp_path / "market.toml"
    cfg.write_text(body)
    result = CliRunner().invoke(app, ["status", "1", "--config", str(cfg)], env={"MARKET_DEBUG": None})
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_serve_takes_the_user_model_flag_of_the_audit() -> None:
    serve = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    audit = CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "200"})
    assert "--allow-user-models" in serve.output and "--allow-user-models" in audit.output

"""Scenario and grid parsing (no stack needed; the real-stack scenario is tests/test_demo_scenario.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.scenario import Grid, Scenario, TrainerPlan
from market.cli.project_file import ProjectFile
from market.errors import ConfigError


def test_grid_expands_every_combination(tmp_path: Path) -> None:
    g = Grid.model_validate(
        {"base": {"rounds": 2}, "grid": {"trainers": 5, "rule": ["median", "krum:f=1"], "attack": "sign_flip:k=4",
                                         "malicious_fraction": [0.2, 0.4], "alpha": [0.5]}}
    )
    scenarios = g.scenarios()
    assert len(scenarios) == 4
    assert {s.rule for s in scenarios} == {"median", "krum:f=1"}
    for s in scenarios:
        assert len(s.trainers) == 5 and s.rounds == 2 and s.partition == "dirichlet:0.5"
        bad = sum(t.malicious for t in s.trainers)
        assert bad == (1 if "0.2" in s.name else 2)
        assert all(t.behaviour == "sign_flip:k=4" for t in s.trainers if t.malicious)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"grid": {"colour": ["red"]}}, "unknown axes"),
        ({"base": {"rounds": 0}}, "rounds"),
        ({"base": {"nonsense": 1}}, "nonsense"),
    ],
)
def test_bad_grids_are_refused(data: dict, needle: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=needle):
        Grid.model_validate(data).scenarios()


def test_scenario_writes_a_valid_project_file(tmp_path: Path) -> None:
    sc = Scenario(trainers=[TrainerPlan(), TrainerPlan(behaviour="label_flip", label_noise=0.1)])
    path = tmp_path / "p.toml"
    path.write_text(sc.project_toml())
    pf = ProjectFile.load(path)
    params = pf.params("QmSpec")
    assert params.num_rounds == sc.rounds and params.reward_per_round == 10**18
    assert pf.model["architecture"] == "mnist_cnn" and pf.hyperparams["epochs"] == sc.epochs
    assert sc.trainers[1].malicious and sc.trainers[1].quality == 0.0
    assert TrainerPlan(label_noise=0.25).quality == 0.75


def test_shipped_grid_example_parses() -> None:
    scenarios = Grid.load(Path(__file__).resolve().parents[2] / "examples" / "grid.toml").scenarios()
    # 2 rules x 4 attacks (among them the issue-11 ones) x 2 malicious fractions x 1 seed
    assert len(scenarios) == 16
    assert len({s.name for s in scenarios}) == 16


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "examples" / "scenarios").glob("*.toml")))
def test_shipped_scenarios_parse_with_real_behaviours(path: Path) -> None:
    from trainer.behaviours import parse_behaviour

    scenarios = Grid.load(path).scenarios()
    assert scenarios
    for s in scenarios:
        assert len(s.trainers) >= 4
        for t in s.trainers:
            parse_behaviour(t.behaviour)  # the trainer CLI accepts every behaviour a scenario names


def test_explicit_trainer_lists_are_kept() -> None:
    g = Grid.model_validate({"base": {"trainers": [{}, {"behaviour": "copycat"}]}, "grid": {"seed": [0, 1]}})
    assert [[t.behaviour for t in s.trainers] for s in g.scenarios()] == [["honest", "copycat"]] * 2

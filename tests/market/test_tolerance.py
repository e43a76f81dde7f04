"""No silent collapse: what a defence tolerates per round size, and `market project create` refusing none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from market.cli.project_file import ProjectFile
from market.errors import ConfigError
from market.protocol.tolerance import MIN_GATE_SAMPLES, DefencePolicy, check_defence, rule_tolerance, tolerance


@pytest.mark.parametrize(
    ("rule", "n", "tolerated"),
    [
        ("fedavg", 10, 0),
        ("norm_clip", 10, 0),
        ("trimmed_mean:beta=0.1", 4, 0),
        ("trimmed_mean:beta=0.1", 9, 0),
        ("trimmed_mean:beta=0.1", 10, 1),
        ("trimmed_mean:beta=0.1", 30, 3),
        ("trimmed_mean:f=1", 3, 1),
        ("trimmed_mean:f=5", 4, 1),  # clamped: at most floor((n - 1) / 2)
        ("median", 3, 1),
        ("median", 4, 1),
        ("median", 100, 49),
        ("geomed", 10, 4),
        ("krum", 4, 0),
        ("krum", 5, 1),
        ("krum:f=1", 10, 1),
        ("multi_krum", 10, 3),
        ("centered_clipping", 10, 1),
        ("foundation_fl", 10, 2),
        ("median:clip=median", 4, 1),  # clip= keeps the inner rule's breakdown
    ],
)
def test_rule_tolerance(rule: str, n: int, tolerated: int) -> None:
    assert rule_tolerance(rule, n)[0] == tolerated


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ConfigError, match="no stated tolerance for 'bogus'"):
        rule_tolerance("bogus", 4)


def test_the_default_tolerates_a_minority_at_every_size() -> None:
    table = check_defence(DefencePolicy())
    assert set(table) == set(range(3, 101))
    assert all(t.tolerates >= 1 for t in table.values())
    # FedAvg under the gate: the gate is what holds, at every size
    assert table[4].rule_tolerates == 0 and table[4].gate_tolerates == 3
    assert table[100].rule_tolerates == 0 and table[100].gate_tolerates == 99
    # a robust rule under the gate adds a breakdown bound
    assert check_defence(DefencePolicy(rule="trimmed_mean:beta=0.1"))[10].rule_tolerates == 1
    assert not table[4].outlier_filter_active and table[5].outlier_filter_active


def test_collapsing_configurations_are_refused_with_the_sizes() -> None:
    with pytest.raises(ConfigError, match=r"rounds of 3-9 trainers \(trimmed_mean trims floor\(0.1 x 3\) = 0"):
        check_defence(DefencePolicy(rule="trimmed_mean:beta=0.1", gate=False))
    with pytest.raises(ConfigError, match="rounds of 3-100 trainers"):
        check_defence(DefencePolicy(rule="fedavg", gate=False))
    with pytest.raises(ConfigError, match="rounds of 4 trainers"):
        check_defence(DefencePolicy(rule="krum", gate=False, min_trainers=4))
    # a gate on too few validation samples per round counts for nothing
    with pytest.raises(ConfigError, match="counts for nothing"):
        check_defence(DefencePolicy(rule="fedavg"), validation_samples=MIN_GATE_SAMPLES - 1)
    # these hold
    check_defence(DefencePolicy(rule="median", gate=False))
    check_defence(DefencePolicy(rule="trimmed_mean:beta=0.1", gate=False, min_trainers=10))
    check_defence(DefencePolicy(rule="fedavg"), validation_samples=MIN_GATE_SAMPLES)


def test_fraction_is_stated_per_n() -> None:
    t = tolerance(DefencePolicy(rule="median", gate=False), 10)
    assert t.tolerates == 4 and t.fraction == pytest.approx(0.4)


def _project(tmp: Path, defence: str) -> Path:
    path = tmp / "p.toml"
    path.write_text(
        'spec_cid = "QmX"\n[project]\nrounds = 2\nreward_per_round = 1\ncommit_window = 5\nreveal_window = 5\n'
        'challenge_window = 3\naggregator = "dev:1"\narbiter = "dev:2"\n[validation.defence]\n' + defence
    )
    return path


def test_project_file_refuses_a_defence_that_tolerates_none(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tolerates no attacker in rounds of 3-9 trainers"):
        ProjectFile.load(_project(tmp_path, 'rule = "trimmed_mean:beta=0.1"\ngate = false\n'))
    ProjectFile.load(_project(tmp_path, 'rule = "median"\ngate = false\n'))
    with pytest.raises(ConfigError, match="max_trainers"):
        ProjectFile.load(_project(tmp_path, "min_trainers = 10\nmax_trainers = 5\n"))


def test_market_project_create_refuses_before_touching_the_chain(tmp_path: Path) -> None:
    # the file is checked before any connection: no node answers on port 1, yet the error is the defence's
    p = subprocess.run(
        [sys.executable, "-m", "market.cli", "project", "create", str(_project(tmp_path, 'rule = "fedavg"\ngate = false\n')),
         "--rpc", "http://127.0.0.1:1", "--dev-account", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "tolerates no attacker in rounds of 3-100 trainers" in lines[0]

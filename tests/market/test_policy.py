"""The aggregation policy in the project file and the spec (issue 13 point 4): `market project create`
writes the whole policy into the spec (the defaults when the file names none), refuses unknown
names with a did-you-mean before touching the chain, and old specs keep parsing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from market.cli.project_file import ProjectFile
from market.errors import ConfigError
from market.protocol.documents import ProjectSpec
from market.protocol.policy import AdaptSchedule, FilterThresholds
from market.protocol.tolerance import DefencePolicy

HEAD = (
    "[project]\nrounds = 2\nreward_per_round = 1\ncommit_window = 5\nreveal_window = 5\nchallenge_window = 3\n"
    'aggregator = "dev:1"\narbiter = "dev:2"\n'
    '[model]\narchitecture = "digits_mlp"\ninput_shape = [64]\nnum_classes = 10\ndataset = "digits"\n'
)


class _Store:
    def add(self, data: bytes) -> str:
        return "Qm" + str(len(data))


def _file(tmp: Path, extra: str = "", head: str = HEAD) -> Path:
    path = tmp / "p.toml"
    path.write_text(head + extra)
    return path


def _spec(tmp: Path, extra: str = "", head: str = HEAD) -> ProjectSpec:
    return ProjectSpec.from_bytes(ProjectFile.load(_file(tmp, extra, head)).spec(_Store()).to_bytes())


def test_a_project_without_a_policy_table_fixes_the_defaults(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert spec.validation.defence == DefencePolicy(validation="digits:size=500,seed=0")
    written = json.loads(spec.to_bytes())["validation"]["defence"]
    # every field is written out: the spec means the same whatever later code's defaults are
    assert set(written) == set(DefencePolicy.model_fields)
    assert set(written["filters"]) == set(FilterThresholds.model_fields)
    assert set(written["adapt"]) == set(AdaptSchedule.model_fields)


def test_the_owner_fixes_every_choice_in_the_project_file(tmp_path: Path) -> None:
    spec = _spec(tmp_path, '[validation.defence]\nrule = "median"\nscorer = "gtg:eps=0.01"\nserver_lr = 0.5\n'
                           'validation = "digits:size=300,seed=4"\n'
                           "[validation.defence.filters]\nzero_rel_norm = 0.02\npay_data_share = 0.25\n"
                           "[validation.defence.adapt]\npatience = 3\n")
    d = spec.validation.defence
    assert d is not None
    assert (d.rule, d.scorer, d.server_lr, d.validation) == ("median", "gtg:eps=0.01", 0.5, "digits:size=300,seed=4")
    assert (d.filters.zero_rel_norm, d.filters.pay_data_share, d.adapt.patience) == (0.02, 0.25, 3)
    assert d.round_filters()["zero_rel_norm"] == 0.02 and d.round_filters()["validation_gate"] is True


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('rule = "krun"', "unknown aggregation rule 'krun' (did you mean 'krum'?)"),
        ('rule = "krum:g=1"', "aggregation rule 'krum' has no parameter 'g'"),
        ('rule = "trimmed_mean:beta=0.2,clip=median"', None),
        ('scorer = "gtg_shaply"', "unknown scorer 'gtg_shaply' (did you mean 'gtg_shapley'?)"),
        ('scorer = "exact:max_player=3"', "did you mean 'max_players'?"),
        ('validation = "digts:size=100"', "did you mean 'digits'?"),
        ('validation = "digits:size=x"', "digits.size must be an integer"),
        ('scorr = "auto"', "unknown key 'scorr' (did you mean 'scorer'?)"),
        ("[validation.defence.filters]\nzero_rel_nrm = 0.5", "unknown key 'zero_rel_nrm' (did you mean 'zero_rel_norm'?)"),
        ("[validation.defence.filters]\nvalidation_gate = false", "write gate = ... there"),
        ("[validation.defence.filters]\nzero_rel_norm = 1.5", "zero_rel_norm"),
        ("[validation.defence.adapt]\npatiance = 3", "did you mean 'patience'?"),
        ("server_lr = 0", "server_lr"),
    ],
)
def test_creation_refuses_unknown_names_with_a_did_you_mean(tmp_path: Path, table: str, says: str | None) -> None:
    path = _file(tmp_path, "[validation.defence]\n" + table + "\n")
    if says is None:
        ProjectFile.load(path)
        return
    with pytest.raises(ConfigError) as exc:
        ProjectFile.load(path)
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_the_validation_data_is_named_once_and_the_audit_can_rebuild_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both name the validation data"):
        ProjectFile.load(_file(tmp_path, '[validation.defence]\nvalidation = "digits"\n'
                                         '[validation.data]\npool = "digits"\n'))
    custom = HEAD.replace('dataset = "digits"', 'dataset = "my_scans"')
    with pytest.raises(ConfigError, match="'my_scans' has no built-in validation split"):
        _spec(tmp_path, head=custom)
    assert _spec(tmp_path, '[validation.defence]\nvalidation = "digits:size=200"\n', head=custom).validation.defence


def test_old_specs_mean_the_defaults_for_what_they_do_not_name() -> None:
    old = {"version": 1, "hyperparams": {}, "validation": {"defence": {"rule": "median", "gate": False}},
           "model": {"architecture": "digits_mlp", "input_shape": [64], "num_classes": 10, "dataset": "digits"}}
    d = ProjectSpec.model_validate(old).validation.defence
    assert d == DefencePolicy(rule="median", gate=False)
    assert (d.scorer, d.server_lr, d.validation, d.filters, d.adapt) == ("auto", 1.0, None, FilterThresholds(),
                                                                         AdaptSchedule())


def test_market_project_create_refuses_an_unknown_rule_before_touching_the_chain(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "market.cli", "project", "create", str(_file(tmp_path, '[validation.defence]\nrule = "medain"\n')),
         "--rpc", "http://127.0.0.1:1", "--dev-account", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown aggregation rule 'medain' (did you mean 'median'?)" in lines[0]

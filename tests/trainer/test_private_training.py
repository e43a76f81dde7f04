"""Client-level DP in `train_update`: the project's policy (or the trainer's own `[trainer.dp]`)
clips and noises the delta before it is encoded, with secret noise, and says what it did."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from market.protocol.codec import decode_update
from market.protocol.documents import ProjectSpec
from market.protocol.privacy import DpPolicy
from tests.aggregator.support import MODEL, initial_state
from trainer.config import TrainerSettings
from trainer.data import load_builtin
from trainer.errors import ConfigError
from trainer.participant import effective_privacy, own_privacy
from trainer.update import GlobalModel, train_update

TRAINER = "0x0000000000000000000000000000000000000003"
BASE = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


def _spec(privacy: DpPolicy | None) -> ProjectSpec:
    return ProjectSpec(model=MODEL.model_copy(update={"initial_weights_cid": BASE}), privacy=privacy)


def _train(spec: ProjectSpec, settings: TrainerSettings) -> tuple[dict[str, torch.Tensor], dict | None]:  # type: ignore[type-arg]
    model = GlobalModel(0, BASE, {k: v.clone() for k, v in initial_state().items()}, {}, "0x")
    data = load_builtin("digits").subset(range(200))
    update = train_update(settings, spec, model, data, project_id=1, trainer=TRAINER)
    return decode_update(update.data)[1], update.privacy


def _norm(delta: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(v.double().square().sum()) for v in delta.values()))


def test_the_project_policy_clips_and_adds_secret_noise(tmp_path: Path) -> None:
    settings = TrainerSettings(state=tmp_path, train={"epochs": 1, "max_batches": 2, "seed": 0})
    plain, none = _train(_spec(None), settings)
    assert none is None
    policy = DpPolicy(noise_multiplier=2.0, clip_norm=0.01)
    first, privacy = _train(_spec(policy), settings)
    second, _ = _train(_spec(policy), settings)
    assert privacy is not None and privacy["source"] == "project"
    assert privacy["noise_std"] == pytest.approx(0.02) and privacy["clip_factor"] < 1.0
    assert privacy["norm_before"] == pytest.approx(_norm(plain), rel=1e-5)
    d = sum(v.numel() for v in plain.values())
    assert _norm(first) == pytest.approx(0.02 * math.sqrt(d), rel=0.1)  # mostly noise, as DP at this C is
    # the same training seed, different noise: it is drawn from the OS, not from public data
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_the_trainer_can_add_dp_on_its_own_and_the_project_policy_wins(tmp_path: Path) -> None:
    settings = TrainerSettings(state=tmp_path, train={"epochs": 1, "max_batches": 1}, dp={"noise_multiplier": 1.0})
    _, privacy = _train(_spec(None), settings)
    assert privacy is not None and privacy["source"] == "trainer" and privacy["noise_std"] == pytest.approx(1.0)
    project = DpPolicy(noise_multiplier=4.0)
    assert effective_privacy(_spec(project), own_privacy(settings.dp)) == project


def test_a_bad_trainer_dp_table_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"\[trainer\] dp.noise_multiplier") as info:
        own_privacy({"noise_multiplier": -1})
    assert "\n" not in str(info.value)
    assert own_privacy({}) is None

"""trainer.behaviours: each scripted behaviour submits exactly the update and claim it says."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from market.models import ModelSpec, flatten, init_model
from trainer.behaviours import (
    ALIE,
    BEHAVIOURS,
    IPM,
    BehaviourContext,
    Copycat,
    FreeRider,
    GaussianNoise,
    Honest,
    LabelFlip,
    SampleLiar,
    Scaling,
    SignFlip,
    alie_z,
    make_behaviour,
    parse_behaviour,
)
from trainer.data import Dataset, load_builtin
from trainer.errors import BehaviourError
from trainer.training import TrainConfig, TrainResult, train_local

KEYS = ("w", "b")


def _delta(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}


@pytest.fixture
def glob() -> dict[str, torch.Tensor]:
    return {"w": torch.ones(4, 3), "b": torch.zeros(3)}


@pytest.fixture
def honest() -> TrainResult:
    return TrainResult(delta=_delta(0), num_samples=120, loss=0.5, steps=4)


def _ctx(glob: dict[str, torch.Tensor], **kw: object) -> BehaviourContext:
    return BehaviourContext(global_state=glob, round=3, seed=7, num_samples=120, **kw)  # type: ignore[arg-type]


def _vec(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return flatten(d, KEYS)


def test_honest_submits_its_delta(glob: dict, honest: TrainResult) -> None:
    delta, claim = Honest().produce(honest, _ctx(glob))
    assert torch.equal(_vec(delta), _vec(honest.delta)) and claim == 120
    assert list(delta) == list(glob)


@pytest.mark.parametrize("k", [1.0, 2.5])
def test_sign_flip_is_minus_k_honest(glob: dict, honest: TrainResult, k: float) -> None:
    delta, claim = SignFlip(k=k).produce(honest, _ctx(glob))
    assert torch.equal(_vec(delta), -k * _vec(honest.delta)) and claim == 120


def test_scaling_is_factor_times_honest(glob: dict, honest: TrainResult) -> None:
    delta, claim = parse_behaviour("scaling:factor=10").produce(honest, _ctx(glob))
    assert torch.equal(_vec(delta), 10.0 * _vec(honest.delta)) and claim == 120


def test_gaussian_noise_statistics_and_determinism(glob: dict) -> None:
    big = {"w": torch.zeros(200, 100), "b": torch.zeros(100)}
    b = GaussianNoise(sigma=0.3)
    assert not b.needs_training
    delta, claim = b.produce(None, _ctx(big))
    v = _vec(delta)
    assert claim == 120 and v.shape == (20100,)
    assert abs(v.mean().item()) < 0.01 and v.std().item() == pytest.approx(0.3, rel=0.03)
    again, _ = b.produce(None, _ctx(big))
    assert torch.equal(_vec(again), v)
    other_round, _ = b.produce(None, BehaviourContext(global_state=big, round=4, seed=7,
                                                      num_samples=1))
    assert not torch.equal(_vec(other_round), v)


def test_alie_is_mean_minus_z_std(glob: dict, honest: TrainResult) -> None:
    group = [_delta(i) for i in range(5)]
    ctx = _ctx(glob, honest_deltas=group, num_trainers=20, num_malicious=5)
    delta, claim = ALIE().produce(honest, ctx)
    # independent computation: Baruch et al. z for n=20, m=5; population std per coordinate
    n, m = 20, 5
    s = math.floor(n / 2 + 1) - m
    z = NormalDist().inv_cdf((n - s) / n)
    rows = torch.stack([_vec(d) for d in group]).double()
    mean = rows.mean(0)
    std = ((rows - mean) ** 2).mean(0).sqrt()
    assert alie_z(n, m) == pytest.approx(z)
    assert torch.allclose(_vec(delta).double(), mean - z * std, atol=1e-6)
    assert claim == 120
    # explicit z and sample std
    d2, _ = ALIE(z=1.5, ddof=1).produce(honest, ctx)
    assert torch.allclose(_vec(d2).double(), mean - 1.5 * rows.std(0), atol=1e-6)


def test_alie_z_values_and_errors(glob: dict, honest: TrainResult) -> None:
    assert alie_z(50, 12) == pytest.approx(NormalDist().inv_cdf(36 / 50))
    assert ALIE(n=50, m=12).z_value(_ctx(glob)) == pytest.approx(alie_z(50, 12))
    with pytest.raises(BehaviourError, match="majority"):
        alie_z(10, 6)
    with pytest.raises(BehaviourError, match="needs n"):
        ALIE().produce(honest, _ctx(glob))


def test_alie_single_colluder_falls_back_to_own_delta(glob: dict, honest: TrainResult) -> None:
    delta, _ = ALIE(z=2.0).produce(honest, _ctx(glob))
    assert torch.allclose(_vec(delta), _vec(honest.delta))  # std of one is zero


def test_ipm_is_minus_epsilon_mean(glob: dict, honest: TrainResult) -> None:
    group = [_delta(i) for i in range(4)]
    delta, claim = IPM(epsilon=0.5).produce(honest, _ctx(glob, honest_deltas=group))
    expected = -0.5 * torch.stack([_vec(d) for d in group]).mean(0)
    assert torch.allclose(_vec(delta), expected, atol=1e-7) and claim == 120
    assert torch.dot(_vec(delta), torch.stack([_vec(d) for d in group]).mean(0)) < 0


def test_free_rider_zero_has_norm_zero(glob: dict) -> None:
    b = FreeRider(mode="zero")
    assert not b.needs_training
    delta, claim = b.produce(None, _ctx(glob))
    assert _vec(delta).norm().item() == 0.0 and claim == 120


def test_free_rider_global_with_and_without_noise(glob: dict) -> None:
    exact, _ = FreeRider(mode="global").produce(None, _ctx(glob))
    assert _vec(exact).norm().item() == 0.0
    noisy, _ = parse_behaviour("free_rider:mode=global,noise=1e-6").produce(None, _ctx(glob))
    v = _vec(noisy)
    assert 0 < v.abs().max().item() < 1e-5


def test_free_rider_stale_resends_previous(glob: dict, honest: TrainResult) -> None:
    b = FreeRider(mode="stale")
    assert b.needs_training  # first round: trains once
    first, _ = b.produce(honest, _ctx(glob))
    assert torch.equal(_vec(first), _vec(honest.delta))
    assert not b.needs_training
    second, claim = b.produce(None, _ctx(glob))
    assert torch.equal(_vec(second), _vec(first)) and claim == 120
    given = _delta(9)
    third, _ = FreeRider(mode="stale").produce(None, _ctx(glob, previous_delta=given))
    assert torch.equal(_vec(third), _vec(given))
    nothing, _ = FreeRider(mode="stale").produce(None, _ctx(glob))
    assert _vec(nothing).norm().item() == 0.0


def test_free_rider_delta_mode_resends_last_global_step(glob: dict) -> None:
    prev = {"w": torch.zeros(4, 3), "b": torch.ones(3)}
    delta, _ = FreeRider(mode="delta").produce(None, _ctx(glob, previous_global_state=prev))
    assert torch.equal(delta["w"], torch.ones(4, 3)) and torch.equal(delta["b"], -torch.ones(3))


def test_copycat_copies_the_source_and_falls_back(glob: dict) -> None:
    revealed = _delta(5)
    seen: list[BehaviourContext] = []

    def source(ctx: BehaviourContext) -> dict[str, torch.Tensor]:
        seen.append(ctx)
        return revealed

    b = Copycat(source=source)
    assert not b.needs_training
    delta, claim = b.produce(None, _ctx(glob))
    assert torch.equal(_vec(delta), _vec(revealed)) and claim == 120 and seen
    # before the reveal (commit-reveal): nothing to copy
    early = Copycat(source=lambda ctx: None)
    zero, _ = early.produce(None, _ctx(glob))
    assert _vec(zero).norm().item() == 0.0
    with pytest.raises(BehaviourError, match="no revealed update"):
        Copycat(source=lambda ctx: None, fallback="raise").produce(None, _ctx(glob))


def test_sample_liar_claims_factor_times_samples(glob: dict, honest: TrainResult) -> None:
    delta, claim = SampleLiar(factor=7.5).produce(honest, _ctx(glob))
    assert torch.equal(_vec(delta), _vec(honest.delta))
    assert claim == 900


def test_behaviours_that_need_training_say_so(glob: dict) -> None:
    for name in ("honest", "label_flip", "sign_flip", "scaling", "sample_liar"):
        b = make_behaviour(name)
        assert b.needs_training
        with pytest.raises(BehaviourError, match="needs the honest training result"):
            b.produce(None, _ctx(glob))


def test_non_training_behaviour_needs_a_sample_count(glob: dict) -> None:
    with pytest.raises(BehaviourError, match="num_samples"):
        GaussianNoise().produce(None, BehaviourContext(global_state=glob))


def test_label_flip_trains_on_flipped_labels() -> None:
    ds = load_builtin("digits")
    b = LabelFlip()
    flipped = b.transform_dataset(ds)
    assert torch.equal(flipped.y, 9 - ds.y) and torch.equal(flipped.x, ds.x)
    spec = ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10)
    g = init_model(spec, 0).state_dict()
    cfg = TrainConfig(max_batches=10)
    poisoned = train_local(spec, g, flipped, cfg, num_threads=1)
    delta, claim = b.produce(poisoned, BehaviourContext(global_state=g))
    expected = train_local(spec, g, Dataset(ds.x, 9 - ds.y, 10, "manual"), cfg, num_threads=1)
    assert torch.equal(flatten(delta), flatten(expected.delta))
    assert not torch.equal(flatten(delta), flatten(train_local(spec, g, ds, cfg,
                                                               num_threads=1).delta))
    assert claim == len(ds)


def test_parse_behaviour_strings() -> None:
    assert parse_behaviour("honest") == Honest()
    assert parse_behaviour("sign_flip:k=3") == SignFlip(k=3.0)
    assert parse_behaviour(" scaling : factor = 10 ") == Scaling(factor=10.0)
    assert parse_behaviour("alie:n=50,m=12") == ALIE(n=50, m=12)
    assert parse_behaviour("alie:z=none") == ALIE()
    assert parse_behaviour("free_rider:mode=stale") == FreeRider(mode="stale")
    assert parse_behaviour("sample_liar:factor=4") == SampleLiar(factor=4.0)
    for name in BEHAVIOURS:
        b = make_behaviour(name)
        assert parse_behaviour(b.describe()) == b


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("byzantine", "unknown behaviour 'byzantine'"),
        ("scaling:fctor=2", "no parameter 'fctor'"),
        ("scaling:factor=big", "must be a number"),
        ("scaling:factor=inf", "finite"),
        ("alie:n=2.5", "integer"),
        ("free_rider:mode=lazy", "must be one of"),
        ("scaling:factor", "not key=value"),
        ("scaling:factor=1,factor=2", "twice"),
        ("copycat:source=x", "no parameter 'source'"),
    ],
)
def test_parse_behaviour_errors(text: str, match: str) -> None:
    with pytest.raises(BehaviourError, match=match):
        parse_behaviour(text)

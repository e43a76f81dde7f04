"""Client-level DP: clipping, Gaussian noise, and Opacus's RDP accountant over rounds."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from opacus.accountants import RDPAccountant

from market.protocol.documents import ProjectSpec
from market.protocol.model_spec import ModelSpec
from market.protocol.privacy import (
    DpPolicy,
    clip_update,
    epsilon_spent,
    noise_consistent,
    noise_for_budget,
    privatize_update,
    rounds_within_budget,
)


def update(scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(30, 20, generator=g) * scale, "b": torch.randn(20, generator=g) * scale}


def norm(u: dict[str, torch.Tensor]) -> float:
    return float(torch.cat([t.flatten() for t in u.values()]).double().norm())


def test_clip_scales_the_whole_update_to_the_bound() -> None:
    big = update(10.0)
    clipped, before, factor = clip_update(big, 1.5)
    assert before == pytest.approx(norm(big)) and factor == pytest.approx(1.5 / before)
    assert norm(clipped) == pytest.approx(1.5, rel=1e-6)
    for name in big:  # direction kept
        assert torch.allclose(clipped[name], big[name] * factor)
    small = update(1e-3)
    same, _, factor = clip_update(small, 1.5)
    assert factor == 1.0 and all(torch.equal(same[n], small[n]) for n in small)
    with pytest.raises(ValueError):
        clip_update({"w": torch.tensor([float("nan")])}, 1.0)
    with pytest.raises(ValueError):
        clip_update(small, 0.0)


def test_noise_has_std_sigma_times_clip_and_is_seeded() -> None:
    policy = DpPolicy(noise_multiplier=2.0, clip_norm=0.5)
    zero = {"w": torch.zeros(200_000)}
    noised, applied = privatize_update(zero, policy, torch.Generator().manual_seed(1))
    assert applied.noise_std == 1.0 and not applied.clipped
    assert float(noised["w"].std()) == pytest.approx(1.0, rel=0.01)
    assert abs(float(noised["w"].mean())) < 0.01
    again, _ = privatize_update(zero, policy, torch.Generator().manual_seed(1))
    assert torch.equal(noised["w"], again["w"])
    big = update(100.0)
    out, applied = privatize_update(big, DpPolicy(noise_multiplier=1e-6, clip_norm=1.0), torch.Generator())
    assert applied.clipped and norm(out) == pytest.approx(1.0, rel=1e-3)
    assert all(t.dtype == torch.float32 for t in out.values())


@pytest.mark.parametrize(("sigma", "rate", "rounds"), [(1.0, 1.0, 1), (1.1, 1.0, 10), (0.8, 0.1, 100), (3.0, 1.0, 20)])
def test_epsilon_matches_opacus(sigma: float, rate: float, rounds: int) -> None:
    accountant = RDPAccountant()
    for _ in range(rounds):
        accountant.step(noise_multiplier=sigma, sample_rate=rate)
    policy = DpPolicy(noise_multiplier=sigma, sample_rate=rate, delta=1e-5)
    assert epsilon_spent(policy, rounds) == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-9)


def test_epsilon_grows_with_rounds_and_shrinks_with_noise() -> None:
    policy = DpPolicy()
    spent = [epsilon_spent(policy, r) for r in (0, 1, 2, 5, 10, 50)]
    assert spent[0] == 0.0 and all(a < b for a, b in itertools.pairwise(spent))
    assert epsilon_spent(DpPolicy(noise_multiplier=6.0), 10) < epsilon_spent(policy, 10)
    # replace adjacency doubles the sensitivity: the same as half the noise
    replace = DpPolicy(noise_multiplier=3.0, adjacency="replace")
    assert epsilon_spent(replace, 5) == pytest.approx(epsilon_spent(DpPolicy(noise_multiplier=1.5), 5))
    with pytest.raises(ValueError):
        epsilon_spent(policy, -1)


def test_budget_in_rounds_and_noise_for_a_budget() -> None:
    policy = DpPolicy(max_epsilon=8.0, noise_multiplier=3.0)
    rounds = rounds_within_budget(policy)
    assert rounds >= 1
    assert epsilon_spent(policy, rounds) <= 8.0 < epsilon_spent(policy, rounds + 1)
    assert rounds_within_budget(DpPolicy(max_epsilon=0.01, noise_multiplier=0.5)) == 0
    sigma = noise_for_budget(8.0, 1e-5, 20)
    eps = epsilon_spent(DpPolicy(noise_multiplier=sigma), 20)
    assert eps <= 8.0 and math.isclose(eps, 8.0, rel_tol=0.02)


def test_policy_travels_in_the_project_spec() -> None:
    model = ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10)
    spec = ProjectSpec(model=model, privacy=DpPolicy(max_epsilon=4.0))
    again = ProjectSpec.from_bytes(spec.to_bytes())
    assert again.privacy == DpPolicy(max_epsilon=4.0)
    with pytest.raises(ValueError):
        DpPolicy(delta=1.5)


def test_noise_consistency_catches_skipped_noise_and_missing_clipping() -> None:
    policy = DpPolicy(noise_multiplier=1.0, clip_norm=0.5)
    raw = {"w": torch.randn(50_000, generator=torch.Generator().manual_seed(2)) * 0.01}
    honest, _ = privatize_update(raw, policy, torch.Generator().manual_seed(3))
    assert noise_consistent(honest, policy)[0]
    assert not noise_consistent(raw, policy)[0]  # no noise at all
    weak, _ = privatize_update(raw, DpPolicy(noise_multiplier=0.9, clip_norm=0.5), torch.Generator().manual_seed(3))
    assert not noise_consistent(weak, policy)[0]
    loud = {"w": honest["w"] + raw["w"] * 100}  # an unclipped signal of norm ~ 224 under the noise
    ok, detail = noise_consistent(loud, policy)
    assert not ok and "not clipped" in detail

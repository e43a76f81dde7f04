"""The aggregator's check of declared DP noise (`dp_noise`) and the gate's aggregate-only mode
for DP projects."""

from __future__ import annotations

import math

import pytest
import torch

from aggregator.filters import (
    FILTERS,
    HARMFUL,
    INSUFFICIENT_NOISE,
    FilterConfig,
    GateConfig,
    Submission,
    screen,
    select_coalition,
)
from market.protocol.codec import UpdateHeader, decode_update, encode_update
from market.protocol.privacy import DpPolicy, noise_floor, privatize_update
from market.storage import cid_of

POLICY = DpPolicy(noise_multiplier=1.0, clip_norm=0.5)
D = 20_000
HEADER = UpdateHeader(1, 0, cid_of(b"base"), "0x" + "3c" * 20, 10)


def signal(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(D // 2, generator=g) * 0.01, "b": torch.randn(D // 2, generator=g) * 0.003}


def noised(seed: int, policy: DpPolicy = POLICY) -> dict[str, torch.Tensor]:
    return privatize_update(signal(seed), policy, torch.Generator().manual_seed(100 + seed))[0]


def through(update: dict[str, torch.Tensor], encoding: str, keep: float = 1.0) -> torch.Tensor:
    """The flat update the aggregator decodes after the trainer encoded it."""
    header = UpdateHeader(1, 0, HEADER.base_model_cid, HEADER.trainer, 10, encoding=encoding)  # type: ignore[arg-type]
    _, tensors = decode_update(encode_update(update, header, keep_fraction=keep))
    return torch.cat([tensors[k].flatten() for k in update])


def subs(n: int) -> list[Submission]:
    return [Submission(f"t{i}", 10 + i, 0) for i in range(n)]


ENCODINGS = [("f32", 1.0), ("q8", 1.0), ("q4", 1.0), ("q2", 1.0), ("sparse-q8", 0.1), ("sparse-q8", 0.01),
             ("sparse-q4", 0.1), ("sparse-q2", 0.1), ("sparse-f32", 0.1)]


@pytest.mark.parametrize(("encoding", "keep"), ENCODINGS)
def test_an_honestly_noised_update_passes_in_every_encoding(encoding: str, keep: float) -> None:
    flat = through(noised(1), encoding, keep)
    floor = noise_floor(D, int((flat != 0).sum()), POLICY)
    assert float(flat.double().norm()) ** 2 >= floor


@pytest.mark.parametrize(("encoding", "keep"), ENCODINGS)
def test_skipped_or_halved_noise_falls_below_the_floor(encoding: str, keep: float) -> None:
    halved = DpPolicy(noise_multiplier=POLICY.noise_multiplier / 2, clip_norm=POLICY.clip_norm)
    # 2-bit codes round every kept entry up to the scale, which follows the noise actually added:
    # the floor there still catches skipped noise, not halved noise (docs/privacy.md)
    cases = [signal(2)] if encoding.endswith("q2") else [signal(2), noised(2, halved)]
    for update in cases:
        flat = through(update, encoding, keep)
        assert float(flat.double().norm()) ** 2 < noise_floor(D, int((flat != 0).sum()), POLICY)


def test_noise_floor_is_the_chi_square_bound_for_dense_updates() -> None:
    v = (POLICY.noise_multiplier * POLICY.clip_norm) ** 2
    assert noise_floor(D, D, POLICY, slack=1.0) == pytest.approx(v * (D - 6 * math.sqrt(2 * D)))
    assert noise_floor(D, D // 10, POLICY) < noise_floor(D, D, POLICY)
    assert noise_floor(D, 0, POLICY) == math.inf
    with pytest.raises(ValueError):
        noise_floor(D, D + 1, POLICY)


def test_the_filter_rejects_an_update_without_its_declared_noise() -> None:
    assert "dp_noise" in FILTERS
    rows = [through(noised(i), "f32") for i in range(5)]
    rows[3] = through(signal(3), "f32")  # this trainer skipped the noise
    rows[4] = through(noised(4, DpPolicy(noise_multiplier=0.3, clip_norm=0.5)), "f32")  # too little of it
    x = torch.stack(rows)
    report = screen(x, subs(5), dp=POLICY)
    reasons = report.reasons()
    assert [reasons[f"t{i}"] for i in range(5)] == ["ok", "ok", "ok", INSUFFICIENT_NOISE, INSUFFICIENT_NOISE]
    detail = report.verdicts[3].detail
    assert "below" in detail and "sigma 1 x clip 0.5" in detail
    assert report.stats["dp_noise_rejected"] == 2.0


def test_projects_without_dp_skip_the_filter() -> None:
    x = torch.stack([through(signal(i), "f32") for i in range(5)])
    report = screen(x, subs(5))
    assert all(v.accepted for v in report.verdicts)
    assert not any(k.startswith("dp_noise") for k in report.stats)


def test_the_gate_judges_a_dp_round_by_its_aggregate() -> None:
    asked: list[frozenset[int]] = []
    # the noise draws make some 4-subsets look better than all five: a DP round keeps all five
    values = {frozenset(): -2.30, frozenset(range(5)): -2.40}

    def utility(c: frozenset[int]) -> float:
        asked.append(c)
        return values.get(c, -2.35 if len(c) == 4 else -9.0)

    d = select_coalition(5, utility, GateConfig(), aggregate_only=True)
    assert d.kept == frozenset(range(5)) and d.method == "aggregate" and d.candidates == 1
    assert set(asked) == {frozenset(), frozenset(range(5))}
    assert select_coalition(5, utility, GateConfig()).kept != frozenset(range(5))  # without DP it picks subsets
    values[frozenset(range(5))] = -2.30 * 1.31  # worse than the base by more than gate_tolerance
    d = select_coalition(5, utility, GateConfig(), aggregate_only=True)
    assert d.kept == frozenset()


def test_a_dp_round_screens_noise_first_then_gates_the_aggregate() -> None:
    rows = [through(noised(i), "f32") for i in range(4)] + [through(signal(9), "f32")]
    x = torch.stack(rows)

    def utility(c: frozenset[int]) -> float:
        return -2.3 if not c else -2.3 - 0.01 * len(c)  # each noised update costs a little loss

    report = screen(x, subs(5), config=FilterConfig(), dp=POLICY, utility=utility)
    reasons = report.reasons()
    assert reasons["t4"] == INSUFFICIENT_NOISE
    assert [reasons[f"t{i}"] for i in range(4)] == ["ok"] * 4
    worse = screen(x, subs(5), config=FilterConfig(), dp=POLICY, utility=lambda c: -2.3 if not c else -50.0)
    assert [worse.reasons()[f"t{i}"] for i in range(4)] == [HARMFUL] * 4

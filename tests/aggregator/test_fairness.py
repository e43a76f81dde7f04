"""Fair pay: stretching gains nothing, equal data damps noise, splitting identities pays no more."""

from __future__ import annotations

import pytest
import torch

from aggregator.fairness import norm_factors, pay_weights, stretch_neutral
from aggregator.rewards import split_reward
from aggregator.round.stages import pay_noise

A, B, C, D = (f"0x{i:040x}" for i in (1, 2, 3, 4))


def test_a_stretched_update_is_paid_as_if_it_had_the_lower_median_norm() -> None:
    g = torch.Generator().manual_seed(0)
    honest = [torch.randn(50, generator=g) for _ in range(3)]
    stretched = honest[0] * 2
    deltas = [*honest, stretched]
    factors = norm_factors(deltas)
    assert factors[:3] == [1.0, 1.0, 1.0] or min(factors[:3]) > 0.5
    bound = sorted(float(d.double().norm()) for d in deltas)[1]
    assert factors[3] == pytest.approx(bound / float(stretched.double().norm()), rel=1e-8)
    scores, stretched_ones = stretch_neutral({A: 0.1, B: 0.1, C: 0.1, D: 0.2}, [A, B, C, D], deltas)
    assert D in stretched_ones and scores[D] == pytest.approx(0.2 * factors[3])
    # a negative score is never made less negative
    assert stretch_neutral({A: -0.3}, [A], [stretched])[0][A] == -0.3


def test_factors_are_exact_and_deterministic() -> None:
    x = [torch.tensor([3.0, 4.0]), torch.tensor([6.0, 8.0]), torch.tensor([30.0, 40.0])]
    f = norm_factors(x)
    assert f[:2] == [1.0, 1.0] and 0.2 - 2**-30 <= f[2] <= 0.2  # rounded down to a multiple of 2^-30
    assert norm_factors(x) == f
    assert norm_factors([torch.zeros(3), torch.zeros(3)]) == [1.0, 1.0]


def test_negative_contributors_earn_nothing_and_noise_is_not_negative() -> None:
    w = pay_weights({A: 0.3, B: 0.1, C: -0.5, D: -0.001}, {A: 100, B: 100, C: 100, D: 100}, 0.5, noise=0.01)
    assert w[C] == 0.0 and w[D] > 0
    alloc = split_reward(10**18, w, [A, B, C, D])
    assert alloc.amounts[C] == 0 and sum(alloc.amounts.values()) == 10**18
    # without the data share: the plain positive part, as before
    assert pay_weights({A: 0.3, C: -0.5}, {A: 1, C: 1}, 0.0) == {A: 0.3, C: 0.0}


def test_equal_data_damps_score_noise() -> None:
    scores = {A: 0.03, B: 0.01}
    w = pay_weights(scores, {A: 200, B: 200}, 0.5)
    assert w[A] / w[B] == pytest.approx((0.5 * 0.75 + 0.25) / (0.5 * 0.25 + 0.25))
    assert w[A] / w[B] < scores[A] / scores[B]


def test_splitting_data_over_identities_splits_the_data_part_too() -> None:
    one = pay_weights({A: 0.2, B: 0.2}, {A: 200, B: 200}, 0.5)
    # B's data over two identities B and C: same total claim, the scores of the halves add up
    two = pay_weights({A: 0.2, B: 0.1, C: 0.1}, {A: 200, B: 100, C: 100}, 0.5)
    assert two[B] + two[C] == pytest.approx(one[B])


def test_a_round_without_positive_scores_pays_by_data_within_the_noise() -> None:
    w = pay_weights({A: -0.0001, B: -0.0002}, {A: 300, B: 100}, 0.5, noise=0.001)
    assert w == {A: 0.75, B: 0.25}
    assert pay_weights({A: -0.1}, {A: 300}, 0.5, noise=0.001) == {A: 0.0}


def test_a_claim_above_the_median_does_not_raise_the_data_part() -> None:
    honest = pay_weights({A: 0.1, B: 0.1, C: 0.1}, {A: 200, B: 200, C: 200}, 0.75, claim_cap=True)
    liar = pay_weights({A: 0.1, B: 0.1, C: 0.1}, {A: 200, B: 200, C: 2_000}, 0.75, claim_cap=True)
    assert liar == honest
    # uncapped, the same lie buys most of the data part
    assert pay_weights({A: 0.1, B: 0.1, C: 0.1}, {A: 200, B: 200, C: 2_000}, 0.75)[C] > 0.6
    # claiming less still lowers it: the cap is an upper bound only
    small = pay_weights({A: 0.1, B: 0.1, C: 0.1}, {A: 200, B: 200, C: 50}, 0.75, claim_cap=True)
    assert small[C] < small[A] == small[B]
    # the median is the eligible trainers': an excluded (negative) trainer's claim does not move it
    w = pay_weights({A: 0.1, B: 0.1, C: -1.0, D: 0.1}, {A: 100, B: 100, C: 10**6, D: 10**6}, 0.75,
                    noise=0.01, claim_cap=True)
    assert w[C] == 0.0 and w[D] == pytest.approx(w[A])


def test_a_negative_score_within_its_own_paired_noise_is_no_negative_contribution() -> None:
    scores = {"a": 0.01, "b": 0.01, "c": -0.004}
    claimed = {"a": 100, "b": 100, "c": 100}
    assert pay_weights(scores, claimed, 0.75, noise=0.003)["c"] == 0.0
    w = pay_weights(scores, claimed, 0.75, noise={"a": 0.003, "b": 0.003, "c": 0.006})
    assert w["c"] == pytest.approx(0.25) and w["a"] == w["b"]


class _Pairs:
    def __init__(self, se: float):
        self.se, self.asked = se, []

    def __call__(self, c: frozenset[int]) -> float:
        return 0.0

    def paired_se(self, a: frozenset[int], b: frozenset[int]) -> float:
        self.asked.append((a, b))
        return self.se


def test_pay_noise_measures_an_honest_update_once_and_only_for_scores_below_the_floor() -> None:
    u = _Pairs(0.002)
    noise = pay_noise({"a": 0.01, "b": -0.001, "c": -0.004, "d": -0.005}, ["a", "b", "c", "d"], u, floor=0.003,
                      z=3.0)
    assert noise == {"a": 0.003, "b": 0.003, "c": pytest.approx(0.006), "d": pytest.approx(0.006)}
    # one measurement: the best scorer's update (an honest effect), not the low scorers' own
    assert u.asked == [(frozenset({0, 1, 2, 3}), frozenset({1, 2, 3}))]
    assert pay_noise({"c": -0.004}, ["c"], _Pairs(0.0001), floor=0.003, z=3.0) == {"c": 0.003}
    untouched = _Pairs(1.0)
    assert pay_noise({"a": 0.01, "b": -0.001}, ["a", "b"], untouched, floor=0.003, z=3.0) == {"a": 0.003, "b": 0.003}
    assert untouched.asked == []
    assert pay_noise({"c": -0.004}, ["c"], u, floor=0.003, z=0.0) == {"c": 0.003}
    assert pay_noise({"c": -0.004}, ["c"], None, floor=0.003, z=3.0) == {"c": 0.003}


def test_a_keyless_audit_pays_with_the_recorded_paired_error() -> None:
    from aggregator.keyless_audit import _RecordedPaired
    from market.protocol.evaluations import RecordedEvaluation

    recorded = _RecordedPaired([
        RecordedEvaluation(subject="paired", members=(0, 1, 2), baseline=(0, 2), metric="loss_se", value=0.01),
        RecordedEvaluation(subject="coalition", members=(0, 1, 2), metric="neg_loss", value=-0.3),
    ])
    scores = {"a": 0.1, "b": 0.3, "c": -0.02}
    noise = pay_noise(scores, ["a", "b", "c"], recorded, 0.001, 3.0)  # type: ignore[arg-type]
    assert noise == {"a": 0.001, "b": 0.001, "c": pytest.approx(0.03)}
    # without the recorded error the floor is all it can use, so the rewards it derives differ
    assert pay_noise(scores, ["a", "c", "b"], recorded, 0.001, 3.0)["c"] == 0.001  # type: ignore[arg-type]

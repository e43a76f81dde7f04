"""The validation gate: the largest coalition within tau of the best, from the scorer's own utilities."""

from __future__ import annotations

import pytest
import torch

from aggregator.filters import (
    HARMFUL,
    OK,
    FilterConfig,
    GateConfig,
    Submission,
    ValidationGate,
    screen,
    select_coalition,
)

CFG = GateConfig()


class Counting:
    """A utility over coalitions of positions that counts distinct evaluations."""

    def __init__(self, fn):  # type: ignore[no-untyped-def]
        self.fn = fn
        self.seen: set[frozenset[int]] = set()

    def __call__(self, c: frozenset[int]) -> float:
        self.seen.add(frozenset(c))
        return float(self.fn(c))


def additive(values: dict[int, float], base: float = -2.0):  # type: ignore[no-untyped-def]
    return Counting(lambda c: base + sum(values[i] for i in c))


def test_harmful_updates_are_left_out_and_helpful_ones_kept() -> None:
    u = additive({0: 0.3, 1: 0.25, 2: -1.0, 3: 0.3})
    d = select_coalition(4, u, CFG)
    assert d.kept == frozenset({0, 1, 3}) and d.method == "exact"
    assert len(u.seen) == 16  # every coalition, what exact Shapley evaluates anyway


def test_a_cost_within_tau_is_tolerated_and_beyond_it_is_not() -> None:
    # best gain 0.9; tau = 0.3 x 0.9 = 0.27
    assert select_coalition(4, additive({0: 0.3, 1: 0.3, 2: 0.3, 3: -0.2}), CFG).kept == frozenset(range(4))
    assert select_coalition(4, additive({0: 0.3, 1: 0.3, 2: 0.3, 3: -0.3}), CFG).kept == frozenset({0, 1, 2})


def test_an_update_harmful_alone_but_helpful_in_the_average_is_kept() -> None:
    # non-IID: trainer 2 alone makes the balanced validation set worse, in the average it helps
    def v(c: frozenset[int]) -> float:
        if c == frozenset({2}):
            return -2.5
        return -2.0 + 0.3 * len(c) + (0.1 if 2 in c and len(c) > 1 else 0.0)

    assert select_coalition(4, Counting(v), CFG).kept == frozenset(range(4))


def test_half_the_round_malicious_is_still_found() -> None:
    # two honest, two sign-flippers: the whole average is destroyed, removing one attacker barely helps
    def v(c: frozenset[int]) -> float:
        h, a = len(c & {0, 1}), len(c & {2, 3})
        return -2.0 + 0.4 * h - 1.5 * a

    assert select_coalition(4, Counting(v), CFG).kept == frozenset({0, 1})


def test_nothing_near_the_base_keeps_the_base() -> None:
    # every coalition worse than the base by more than 0.3 x its loss
    d = select_coalition(3, additive({0: -0.9, 1: -0.8, 2: -0.7}), CFG)
    assert d.kept == frozenset() and d.chosen == d.empty
    # slightly worse than the base (non-IID at initialisation): the best coalition still moves
    def v(c: frozenset[int]) -> float:
        return -3.0 if 2 in c else (-2.05 if len(c) == 2 else -2.1 if c else -2.0)

    assert select_coalition(3, Counting(v), CFG).kept == frozenset({0, 1})
    # a round that gains ~nothing (late rounds) keeps every update within the floor
    assert select_coalition(3, additive({0: 0.001, 1: -0.001, 2: 0.0}, base=-0.3), CFG).kept == frozenset(range(3))


def test_above_exact_max_the_greedy_path_drops_the_attackers() -> None:
    values = {i: 0.1 for i in range(12)} | {9: -0.8, 10: -0.8, 11: -0.8}
    u = additive(values)
    d = select_coalition(12, u, CFG)
    assert d.method == "path" and d.kept == frozenset(range(9))
    # n + (n - 1) + ... for floor((n - 1) / 2) drops: far below 2^12
    assert len(u.seen) <= 1 + 12 + sum(12 - k for k in range(5))


def _rows(n: int) -> tuple[torch.Tensor, list[Submission]]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 20, generator=g) + 1.0, [Submission(f"t{i}", i, 0) for i in range(n)]


def test_the_filter_screens_only_what_the_others_kept() -> None:
    x, subs = _rows(6)
    x[4] = 0.0  # a free rider: zero_update before the gate

    def v(c: frozenset[int]) -> float:
        assert 4 not in c  # the gate never weighs a row an earlier filter rejected
        return -2.0 + sum(-1.0 if i == 1 else 0.2 for i in c)

    rep = screen(x, subs, utility=v)
    reasons = rep.reasons()
    assert reasons["t1"] == HARMFUL and reasons["t4"].startswith("zero_update")
    assert all(reasons[f"t{i}"] == OK for i in (0, 2, 3, 5))
    assert "best" in next(v.detail for v in rep.verdicts if v.reason == HARMFUL)
    assert rep.stats["gate_exact"] == 1.0 and rep.stats["gate_candidates"] == 31


def test_without_utilities_or_switched_off_the_gate_skips() -> None:
    x, subs = _rows(4)
    assert all(v.accepted for v in screen(x, subs).verdicts)
    off = FilterConfig(validation_gate=False)
    assert all(v.accepted for v in screen(x, subs, config=off, utility=lambda c: -float(len(c))).verdicts)
    assert ValidationGate().check(x, subs)[0].reason == OK


def test_records_from_before_the_gate_replay_without_it() -> None:
    assert FilterConfig.from_record({"outlier_sigmas": 3.0}).validation_gate is False
    assert FilterConfig.from_record({"validation_gate": True}).validation_gate is True
    assert FilterConfig().validation_gate is True


class Paired(Counting):
    """A utility that also reports a paired standard error per pair, and which pairs it was asked."""

    def __init__(self, fn, se: float):  # type: ignore[no-untyped-def]
        super().__init__(fn)
        self.se = se
        self.pairs: list[tuple[frozenset[int], frozenset[int]]] = []

    def paired_se(self, a: frozenset[int], b: frozenset[int]) -> float:
        self.pairs.append((a, b))
        return self.se


# late round: base loss 0.15, every update moves it by a hair; the best subset beats all four by 0.004
LATE = {0: 0.001, 1: 0.001, 2: -0.004, 3: 0.001}


def test_a_gap_the_validation_sample_cannot_resolve_cuts_no_one() -> None:
    # floor 0.02 x 0.15 = 0.003 < 0.004: without the paired noise, trainer 2 is cut
    assert select_coalition(4, additive(LATE, base=-0.15), GateConfig(gate_noise_z=0)).kept == frozenset({0, 1, 3})
    noisy = Paired(additive(LATE, base=-0.15).fn, se=0.002)  # 3 x 0.002 = 0.006 > 0.004
    d = select_coalition(4, noisy, CFG)
    assert d.kept == frozenset(range(4)) and d.se == 0.002 and d.tau == pytest.approx(0.006)
    # one update of the best coalition: the best against itself without its last-committed row
    assert noisy.pairs == [(frozenset({0, 1, 3}), frozenset({0, 1}))]


def test_a_gap_beyond_the_paired_noise_is_still_cut() -> None:
    sharp = Paired(additive(LATE, base=-0.15).fn, se=0.0005)  # 3 x 0.0005 = 0.0015: the floor decides
    d = select_coalition(4, sharp, CFG)
    assert d.kept == frozenset({0, 1, 3}) and d.tau == 0.02 * 0.15
    # a gross attack is many standard errors out, whatever the noise of the late round
    gross = Paired(additive({0: 0.001, 1: 0.001, 2: -0.1, 3: 0.001}, base=-0.15).fn, se=0.002)
    assert select_coalition(4, gross, CFG).kept == frozenset({0, 1, 3})


def test_the_paired_noise_is_measured_only_when_it_can_change_the_verdict() -> None:
    kept_anyway = Paired(additive({0: 0.3, 1: 0.3, 2: 0.3, 3: -0.2}).fn, se=1.0)
    assert select_coalition(4, kept_anyway, CFG).kept == frozenset(range(4))
    assert kept_anyway.pairs == []
    # above exact max, the greedy path's best against all of them
    path = Paired(additive({i: (0.001 if i != 5 else -0.004) for i in range(10)}, base=-0.15).fn, se=0.002)
    d = select_coalition(10, path, CFG)
    assert d.method == "path" and d.kept == frozenset(range(10)) and len(path.pairs) == 1


def test_records_from_before_the_paired_noise_replay_without_it() -> None:
    assert FilterConfig.from_record({"validation_gate": True}).gate_noise_z == 0.0
    assert FilterConfig().gate_noise_z == GateConfig().gate_noise_z > 0

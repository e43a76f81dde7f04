"""Contribution scoring: exact Shapley axioms, GTG-Shapley accuracy, truncation and determinism,
leave-one-out, and the memoised coalition utility."""

from __future__ import annotations

import hashlib
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import (
    ExactShapley,
    GTGShapley,
    LeaveOneOut,
    RuleConfigError,
    ScoringError,
    TrimmedMean,
    make_scorer,
    make_utility,
)
from aggregator._rng import DeterministicRNG

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def players(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)]


def additive(weights: list[float], base: float = 0.0):  # type: ignore[no-untyped-def]
    return lambda s: base + sum(weights[i] for i in s)


def noise(s: frozenset[int], scale: float) -> float:
    """Deterministic pseudo-noise per coalition."""
    h = hashlib.sha256(repr(sorted(s)).encode()).digest()
    return (int.from_bytes(h[:8], "big") / 2**64 - 0.5) * 2 * scale


# --------------------------------------------------------------------------- exact Shapley


def test_exact_shapley_by_hand() -> None:
    table = {frozenset(): 0.0, frozenset({0}): 1.0, frozenset({1}): 2.0, frozenset({0, 1}): 4.0}
    res = ExactShapley().score(["a", "b"], table.__getitem__, 0)
    # a: (v(a) - v() + v(ab) - v(b)) / 2 = (1 + 2) / 2; b: (2 + 3) / 2
    assert res.scores == {"a": 1.5, "b": 2.5}
    assert res.evaluations == 4
    # the glove game: one left glove (0), two right gloves (1, 2); a pair is worth 1
    glove = lambda s: float(0 in s and (1 in s or 2 in s))
    res = ExactShapley().score(["L", "R1", "R2"], glove, 0)
    assert res.scores["L"] == pytest.approx(2 / 3)
    assert res.scores["R1"] == pytest.approx(1 / 6) and res.scores["R2"] == pytest.approx(1 / 6)


@st.composite
def games(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    """A random game whose players come in types; players of one type are interchangeable."""
    n = draw(st.integers(1, 7))
    types = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    table: dict[tuple[int, ...], float] = {}

    def v(s: frozenset[int]) -> float:
        key = tuple(sum(1 for i in s if types[i] == t) for t in range(3))
        if key not in table:
            table[key] = float(rng.normal())
        return table[key]

    # fix the table's values in a deterministic order
    for s in itertools.chain.from_iterable(itertools.combinations(range(n), k) for k in range(n + 1)):
        v(frozenset(s))
    return n, types, v


@SETTINGS
@given(games())
def test_exact_shapley_efficiency_and_symmetry(game) -> None:  # type: ignore[no-untyped-def]
    n, types, v = game
    res = ExactShapley().score(players(n), v, 0)
    total = math.fsum(res.scores.values())
    assert total == pytest.approx(v(frozenset(range(n))) - v(frozenset()), abs=1e-9)
    for i, j in itertools.combinations(range(n), 2):
        if types[i] == types[j]:
            assert res.scores[f"p{i}"] == pytest.approx(res.scores[f"p{j}"], abs=1e-9)
    assert res.evaluations == 2**n


@SETTINGS
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=8), st.floats(-3, 3))
def test_exact_shapley_on_additive_games_and_dummies(weights: list[float], base: float) -> None:
    ws = [*weights, 0.0]  # the last player is a dummy
    res = ExactShapley().score(players(len(ws)), additive(ws, base), 0)
    for i, w in enumerate(ws):
        assert res.scores[f"p{i}"] == pytest.approx(w, abs=1e-9)
    assert res.scores[f"p{len(ws) - 1}"] == pytest.approx(0.0, abs=1e-12)


def test_exact_shapley_refuses_too_many_players() -> None:
    with pytest.raises(ScoringError, match="gtg_shapley"):
        ExactShapley(max_players=10).score(players(11), lambda s: 0.0, 0)


# --------------------------------------------------------------------------- GTG-Shapley


@SETTINGS
@given(
    st.lists(st.floats(0.01, 1.0), min_size=2, max_size=12),
    st.integers(0, 2**63 - 1),
)
def test_gtg_recovers_additive_values(weights: list[float], seed: int) -> None:
    res = GTGShapley(eps=1e-4).score(players(len(weights)), additive(weights), seed)
    for i, w in enumerate(weights):
        assert res.scores[f"p{i}"] == pytest.approx(w, abs=1e-9)


def test_gtg_close_on_a_noisy_additive_game() -> None:
    rng = np.random.default_rng(0)
    w = rng.uniform(0.05, 1.0, size=10).tolist()
    v = lambda s: sum(w[i] for i in s) + noise(s, 0.01)
    exact = ExactShapley().score(players(10), v, 0)
    gtg = GTGShapley(eps=1e-4).score(players(10), v, 1234)
    err = max(abs(gtg.scores[p] - exact.scores[p]) for p in exact.scores)
    assert err < 0.02
    assert gtg.evaluations < exact.evaluations


def test_gtg_truncation_saves_evaluations_and_keeps_ranking() -> None:
    # a saturating game: quality q_i, v(S) = 1 - exp(-sum q); the last players add little
    q = [2.0, 1.5, 1.0, 0.8, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02]
    v = lambda s: 1 - math.exp(-sum(q[i] for i in s))
    exact = ExactShapley().score(players(10), v, 0)
    gtg = GTGShapley(eps=1e-3).score(players(10), v, 42)
    assert gtg.details["truncated_positions"] > 0
    assert gtg.evaluations <= 0.5 * exact.evaluations
    ranks = lambda r: np.argsort(np.argsort([-r.scores[p] for p in players(10)]))
    rho = np.corrcoef(ranks(exact), ranks(gtg))[0, 1]
    assert rho >= 0.9
    # efficiency up to the truncation residual (< eps per permutation)
    assert sum(gtg.scores.values()) == pytest.approx(v(frozenset(range(10))) - v(frozenset()), abs=1e-3)


def test_gtg_between_round_truncation() -> None:
    calls: list[frozenset[int]] = []

    def v(s: frozenset[int]) -> float:
        calls.append(s)
        return 0.5 + 1e-5 * len(s)

    res = GTGShapley(eps=1e-3).score(players(6), v, 7)
    assert res.scores == {p: 0.0 for p in players(6)}
    assert res.evaluations == 2 and len(calls) == 2 and res.details["truncated_round"]


def test_gtg_is_deterministic_per_seed_and_respects_the_budget() -> None:
    q = [0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 0.6, 0.4]
    v = lambda s: math.sqrt(sum(q[i] for i in s)) + noise(s, 0.02)
    scorer = GTGShapley(eps=1e-4, tolerance=0.0, max_sweeps=3)
    a = scorer.score(players(8), v, 99)
    b = scorer.score(players(8), v, 99)
    c = scorer.score(players(8), v, 100)
    assert a == b  # bit for bit
    assert a.scores != c.scores
    assert a.details["sweeps"] == 3 and a.details["permutations"] == 24
    capped = GTGShapley(eps=1e-4, tolerance=0.0, max_evaluations=40).score(players(8), v, 99)
    assert capped.details["budget_exhausted"]
    assert capped.evaluations <= 40 + 7  # stops after the permutation that crossed the budget


def test_gtg_guided_sweeps_put_every_player_first() -> None:
    firsts: list[int] = []
    seen: set[frozenset[int]] = set()

    def v(s: frozenset[int]) -> float:
        if len(s) == 1 and s not in seen:
            firsts.append(next(iter(s)))
        seen.add(s)
        return float(len(s)) + noise(s, 0.1)

    GTGShapley(eps=0.0, tolerance=0.0, min_sweeps=1, max_sweeps=1).score(players(7), v, 5)
    assert sorted(firsts) == list(range(7))


def test_rng_stream_is_specified() -> None:
    import hashlib as h

    r = DeterministicRNG(2**70 + 5)
    block = h.sha256((2**70 + 5).to_bytes(32, "big") + (0).to_bytes(8, "big")).digest()
    first = int.from_bytes(block[:8], "big")
    assert r.below(2**64 - 1) == first % (2**64 - 1) or first >= 2**64 - 1
    items = list(range(10))
    DeterministicRNG(1).shuffle(items)
    assert sorted(items) == list(range(10)) and items != list(range(10))
    again = list(range(10))
    DeterministicRNG(1).shuffle(again)
    assert items == again


# --------------------------------------------------------------------------- leave-one-out


def test_leave_one_out() -> None:
    w = [0.5, 0.25, 0.0]
    res = LeaveOneOut().score(players(3), additive(w, 1.0), 0)
    assert res.scores == {"p0": 0.5, "p1": 0.25, "p2": 0.0}
    assert res.evaluations == 4
    # two identical players: each is redundant given the other
    twin = lambda s: float(bool(s & {0, 1}))
    assert LeaveOneOut().score(players(2), twin, 0).scores == {"p0": 0.0, "p1": 0.0}


# --------------------------------------------------------------------------- utility helper


def test_make_utility_memoises_and_uses_the_global_model() -> None:
    updates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    glob = torch.tensor([10.0, 10.0])
    seen: list[torch.Tensor] = []

    def evaluate(model: torch.Tensor) -> float:
        seen.append(model.clone())
        return float(model.sum())

    u = make_utility(lambda x: x.mean(0), evaluate, updates, glob)
    assert u(frozenset()) == 20.0
    assert u(frozenset({0, 1})) == 21.0  # 20 + mean((1,0),(0,1)) summed
    assert u(frozenset({1, 0})) == 21.0
    assert u.evaluations == 2 and len(seen) == 2
    res = ExactShapley().score(players(3), u, 0)
    assert u.evaluations == 8 and res.evaluations == 8
    # weights are passed through to rules that take them
    w = torch.tensor([1.0, 3.0, 1.0])
    uw = make_utility(lambda x, ww: (x * (ww / ww.sum())[:, None]).sum(0), evaluate, updates, glob, w)
    assert uw(frozenset({0, 1})) == pytest.approx(21.0)
    # a robust rule as the aggregate
    ut = make_utility(TrimmedMean(f=1), evaluate, updates, glob)
    assert ut(frozenset({0, 1, 2})) == pytest.approx(22.0)  # middle values: (1, 1)


def test_utility_errors() -> None:
    with pytest.raises(ScoringError, match="finite"):
        ExactShapley().score(players(2), lambda s: float("nan"), 0)
    with pytest.raises(ScoringError, match="float"):
        LeaveOneOut().score(players(2), lambda s: "high", 0)  # type: ignore[arg-type,return-value]
    with pytest.raises(ScoringError, match="twice"):
        GTGShapley().score(["a", "a"], lambda s: 0.0, 0)
    with pytest.raises(ScoringError, match="same model layout"):
        make_utility(lambda x: x, float, torch.zeros(2, 3), torch.zeros(4))


def test_make_scorer() -> None:
    assert make_scorer("gtg:eps=0.01,max_evaluations=100") == GTGShapley(eps=0.01, max_evaluations=100)
    assert make_scorer("exact") == ExactShapley()
    assert isinstance(make_scorer("loo"), LeaveOneOut)
    with pytest.raises(RuleConfigError, match="unknown scorer"):
        make_scorer("banzhaf")
    with pytest.raises(RuleConfigError, match="no parameter"):
        make_scorer("exact:eps=1")
    with pytest.raises(RuleConfigError):
        GTGShapley(min_sweeps=3, max_sweeps=2)
    with pytest.raises(RuleConfigError, match="did you mean 'gtg_shapley'"):
        make_scorer("gtg_shapely")


def test_equal_scorer_evaluates_nothing() -> None:
    res = make_scorer("equal").score(["a", "b"], lambda s: 1 / 0, 0)
    assert res.scores == {"a": 1.0, "b": 1.0} and res.evaluations == 0


def test_empty_player_list() -> None:
    for scorer in (ExactShapley(), GTGShapley(), LeaveOneOut()):
        assert scorer.score([], lambda s: 1.0, 0).scores == {}

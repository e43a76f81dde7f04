"""Coordinate-wise rules: median, trimmed mean and FoundationFL (synthetic updates, then a
coordinate-wise rule). Every one sorts column chunks and averages the kept values exactly on a
per-coordinate fixed-point grid (`market.protocol.numerics`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from aggregator.errors import InvalidUpdates, RuleConfigError
from aggregator.rules import _linalg as la
from aggregator.rules.base import Aggregate, Real, Rule, _check_beta, _clamp_f, _finish, _Stack, _trim_count
from market.protocol import numerics as nx

__all__ = ["FoundationFL", "Median", "TrimmedMean", "coordinate_median"]


@dataclass(frozen=True)
class Median(Rule):
    """Coordinate-wise median (the mean of the two middle values when n is even)."""

    name: ClassVar[str] = "median"

    def _aggregate(self, st: _Stack, weights: torch.Tensor | None) -> Aggregate:
        return _finish(st.median(), self.name)


@dataclass(frozen=True)
class TrimmedMean(Rule):
    """Coordinate-wise mean after dropping the f largest and f smallest values of each
    coordinate; f = floor(beta * n) (beta defaults to 0.1) unless f is given."""

    name: ClassVar[str] = "trimmed_mean"
    beta: Real | None = None
    f: int | None = None

    def __post_init__(self) -> None:
        _check_beta(self.beta, self.f, self.name)

    def _aggregate(self, st: _Stack, weights: torch.Tensor | None) -> Aggregate:
        f = _trim_count(st.n, self.beta, self.f)
        return _finish(st.trimmed_mean(f), self.name, details={"trimmed_each_side": f})



@dataclass(frozen=True)
class FoundationFL(Rule):
    """FoundationFL (Fang et al., NDSS 2025): synthetic updates, then a foundational rule.

    Reading of the paper used here: the server takes the coordinate-wise maximum and minimum
    vectors of the received updates; each update's score is the smaller of its distances to
    those two extreme vectors; the update with the largest score (the one farthest from both
    extremes, i.e. the most central one) is replicated `m` times as synthetic updates (m defaults
    to n); the `inner` rule ("trimmed_mean" or "median") then aggregates the n real plus m
    synthetic updates. For the trimmed mean, f = floor(beta * n) values (the expected number of
    attackers among the real updates; beta defaults to 0.2) are dropped from each end of every
    coordinate's n + m values, unless f is given. Ties in the score go to the lowest index.

    Weak spot of this reading (pinned by a test): an attacker sitting at the maximum in some
    coordinates and at the minimum in the others (a scaled honest update, -sign(mean) x M) is far
    from both extreme vectors, outscores every honest update, and with m = n copies carries the
    result. Huge vectors of one sign sit on an extreme, score 0 and are never chosen; run the
    outlier filter first, or prefer median / trimmed mean / Krum / geomed, where that matters.
    """

    name: ClassVar[str] = "foundation_fl"
    m: int | None = None
    inner: str = "trimmed_mean"
    beta: Real | None = None
    f: int | None = None

    def __post_init__(self) -> None:
        if self.inner not in ("trimmed_mean", "median"):
            raise RuleConfigError(f"foundation_fl: inner must be trimmed_mean or median, got {self.inner!r}")
        _check_beta(self.beta, self.f, self.name)
        if self.m is not None and self.m < 0:
            raise RuleConfigError(f"foundation_fl: m must be >= 0, got {self.m}")

    def _aggregate(self, st: _Stack, weights: torch.Tensor | None) -> Aggregate:
        n = st.n
        sel, scores = _extreme_scores(st)
        m = n if self.m is None else self.m
        total = n + m
        if self.inner == "median":
            f = 0
            vec = st.median(replicate=sel, copies=m)
        else:
            if self.f is not None:
                f = self.f
            else:
                f = math.floor((0.2 if self.beta is None else self.beta) * n + 1e-9)
            f = _clamp_f(f, total)
            vec = st.trimmed_mean(f, replicate=sel, copies=m)
        return _finish(
            vec,
            self.name,
            details={"synthetic_from": sel, "m": m, "trimmed_each_side": f, "scores": scores},
        )


def _extreme_scores(st: _Stack) -> tuple[int, list[float]]:
    """FoundationFL's choice: per update, min(|x_i - max|, |x_i - min|) (exact squared distances to
    the coordinate-wise extremes of the effective rows, which are exact themselves); the first
    argmax and every score."""
    x = st.x.to(torch.float64)
    if st.scale is not None:
        x = x * torch.tensor(st.scale, dtype=torch.float64).reshape(-1, 1)
    to_max = st.sqdist_to(x.amax(dim=0))
    to_min = st.sqdist_to(x.amin(dim=0))
    score = [min(a, b) for a, b in zip(to_max, to_min)]
    best = max(range(st.n), key=lambda i: (score[i], -i))
    return best, [float(nx.sqrt_floor(v)) for v in score]


def coordinate_median(updates: torch.Tensor, rows: list[int] | None = None) -> torch.Tensor:
    """The coordinate-wise median `[d]` of `updates` (optionally of a subset of rows only)."""
    x = la.as_stack(updates)
    if rows is not None and len(rows) == 0:
        raise InvalidUpdates("the median of no updates is undefined; pass at least one row")
    return nx.coordinate_median(x, rows=rows)

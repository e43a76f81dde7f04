"""Distance-based rules: Krum, Multi-Krum, the geometric median and centered clipping. All of
them work from one exact `[n, n]` Gram matrix or exact distances to a `[d]` vector
(`market.protocol.numerics.Geometry`), so every choice they make (Krum's neighbours, a clip, a
convergence test) is an exact comparison and the result is the same on any machine."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import ClassVar

import torch

from aggregator.errors import RuleConfigError
from aggregator.rules import _linalg as la
from aggregator.rules.base import Aggregate, Real, Rule, _finish, _Stack
from market.protocol import numerics as nx

__all__ = ["CenteredClipping", "GeometricMedian", "Krum", "MultiKrum"]


def _krum_scores(d2: list[list[Fraction]], f: int | None) -> tuple[list[Fraction], int]:
    """Krum scores: each row's sum of squared distances to its n - f - 2 nearest other rows (exact)."""
    n = len(d2)
    if n == 1:
        return [Fraction(0)], 0
    ff = (n - 3) // 2 if f is None else int(f)
    ff = max(0, min(ff, n - 3)) if n >= 3 else 0
    k = max(1, n - ff - 2)
    scores = [sum(sorted(d2[i][j] for j in range(n) if j != i)[:k], Fraction(0)) for i in range(n)]
    return scores, ff


@dataclass(frozen=True)
class Krum(Rule):
    """Krum (Blanchard et al. 2017): the update whose n - f - 2 nearest neighbours are closest
    (sum of squared distances). f defaults to the most n tolerates, (n - 3) // 2."""

    name: ClassVar[str] = "krum"
    f: int | None = None

    def __post_init__(self) -> None:
        if self.f is not None and self.f < 0:
            raise RuleConfigError(f"krum: f must be >= 0, got {self.f}")

    def _aggregate(self, st: _Stack, weights: torch.Tensor | None) -> Aggregate:
        scores, f = _krum_scores(st.sqdist_matrix(), self.f)
        i = min(range(st.n), key=lambda j: (scores[j], j))  # first minimum: ties go to the lowest index
        return _finish(st.row(i), self.name, selected=(i,), details={"f": f, "scores": [float(v) for v in scores]})


@dataclass(frozen=True)
class MultiKrum(Rule):
    """Multi-Krum: the mean of the m updates with the lowest Krum scores (m defaults to n - f)."""

    name: ClassVar[str] = "multi_krum"
    m: int | None = None
    f: int | None = None

    def __post_init__(self) -> None:
        if self.f is not None and self.f < 0:
            raise RuleConfigError(f"multi_krum: f must be >= 0, got {self.f}")
        if self.m is not None and self.m < 1:
            raise RuleConfigError(f"multi_krum: m must be >= 1, got {self.m}")

    def _aggregate(self, st: _Stack, weights: torch.Tensor | None) -> Aggregate:
        scores, f = _krum_scores(st.sqdist_matrix(), self.f)
        m = min(st.n, self.m if self.m is not None else st.n - f)
        sel = tuple(sorted(sorted(range(st.n), key=lambda j: (scores[j], j))[:m]))
        return _finish(st.mean(rows=list(sel)), self.name, selected=sel, details={"f": f, "m": m})


def _medoid_start(st: _Stack) -> torch.Tensor:
    """The mean of the ceil(n/2) updates nearest the medoid (the update with the least total
    distance to the others). Not the medoid itself: a data point is a fixed point of Weiszfeld's
    smoothed map, so starting there would stop at once."""
    d2 = st.sqdist_matrix()
    dist = [[nx.sqrt_floor(v) for v in row] for row in d2]
    med = min(range(st.n), key=lambda i: (sum(dist[i], Fraction(0)), i))
    k = (st.n + 1) // 2
    near = sorted(sorted(range(st.n), key=lambda j: (d2[med][j], j))[:k])
    return st.mean(rows=near)


@dataclass(frozen=True)
class GeometricMedian(Rule):
    """Geometric median by the smoothed Weiszfeld algorithm (Pillutla et al., RFA).

    z <- sum_i x_i / max(nu, |x_i - z|) / sum_i 1 / max(nu, |x_i - z|), from `init` ("medoid":
    the mean of the half of the updates nearest the medoid, the update with the least total
    distance to the others; "mean"; "zero"),
    until the step is below eps * |z| or after max_iter steps. nu defaults to 1e-6 x the median
    update norm (a scale-free smoothing).
    """

    name: ClassVar[str] = "geomed"
    eps: Real = 1e-5
    max_iter: int = 64
    nu: Real | None = None
    init: str = "medoid"

    def __post_init__(self) -> None:
        if self.init not in ("medoid", "mean", "zero"):
            raise RuleConfigError(f"geomed: init must be medoid, mean or zero, got {self.init!r}")
        if self.max_iter < 0 or self.eps < 0:
            raise RuleConfigError("geomed: max_iter and eps must be >= 0")

    def _aggregate(self, st: _Stack, weights: torch.Tensor | None) -> Aggregate:
        nu = Fraction(float(self.nu)) if self.nu is not None else None
        if nu is None:
            nu = max(Fraction(1, 10**6) * nx.sqrt_floor(nx.median_fraction(st.sq)), Fraction(1, 10**30))
        if self.init == "medoid":
            z = _medoid_start(st)
        elif self.init == "mean":
            z = st.mean()
        else:
            z = torch.zeros(st.d, dtype=torch.float32)
        it = 0
        eps2 = Fraction(float(self.eps)) ** 2
        for it in range(1, self.max_iter + 1):
            dist = [nx.sqrt_floor(v) for v in st.sqdist_to(z)]
            beta = [1 / max(v, nu) for v in dist]
            z_new = st.mean(weights=nx.integer_weights(beta))
            step2 = nx.row_sqnorms(torch.sub(z, z_new).reshape(1, -1))[0]
            z = z_new
            if step2 <= eps2 * max(nx.row_sqnorms(z.reshape(1, -1))[0], Fraction(1, 10**60)):
                break
        return _finish(z, self.name, details={"iterations": it, "nu": float(nu)})


@dataclass(frozen=True)
class CenteredClipping(Rule):
    """Centered clipping (Karimireddy et al. 2021): from a reference v,
    v <- v + mean_i (x_i - v) min(1, tau / |x_i - v|), `iters` times.

    reference: "zero" (no change, the default), "median" (coordinate-wise median) or "mean";
    `with_reference(tensor)` returns a copy centred on a given vector (e.g. the previous round's
    aggregate, the momentum of the original paper). tau defaults to the median distance of the
    updates to the reference, so half of them are clipped in the first step.
    """

    name: ClassVar[str] = "centered_clipping"
    tau: Real | None = None
    iters: int = 3
    reference: str = "zero"
    _ref_vector: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.reference not in ("zero", "median", "mean", "given"):
            raise RuleConfigError(f"centered_clipping: reference must be zero, median or mean, got {self.reference!r}")
        if self.tau is not None and not self.tau > 0:
            raise RuleConfigError(f"centered_clipping: tau must be positive, got {self.tau}")
        if self.iters < 0:
            raise RuleConfigError("centered_clipping: iters must be >= 0")

    def with_reference(self, reference: torch.Tensor) -> CenteredClipping:
        ref = la.as_stack(reference.reshape(1, -1))[0]
        return dataclasses.replace(self, reference="given", _ref_vector=ref)

    def _aggregate(self, st: _Stack, weights: torch.Tensor | None) -> Aggregate:
        if self.reference == "zero":
            v = torch.zeros(st.d, dtype=torch.float32)
        elif self.reference == "median":
            v = st.median()
        elif self.reference == "mean":
            v = st.mean()
        else:
            if self._ref_vector is None or self._ref_vector.numel() != st.d:
                raise RuleConfigError(
                    "centered_clipping: the given reference must have d entries; use with_reference(tensor [d])"
                )
            v = self._ref_vector.clone()
        tau = None if self.tau is None else Fraction(float(self.tau))
        x_eff = st.x.to(torch.float64)
        if st.scale is not None:
            x_eff = x_eff * torch.tensor(st.scale, dtype=torch.float64).reshape(-1, 1)
        for _ in range(self.iters):
            d2 = st.sqdist_to(v)
            if tau is None:
                tau = nx.median_fraction([nx.sqrt_floor(t) for t in d2])
            if not tau > 0:
                break
            c = [nx.clip_factor(t, tau) for t in d2]
            # v + mean_i c_i (s_i x_i - v): one float64 subtraction per entry, then the exact mean
            step = nx.mean(torch.sub(x_eff, v.to(torch.float64)), scale=c)
            v = nx.apply_step(v, step, 1.0)
        return _finish(v, self.name, details={"tau": None if tau is None else float(tau)})

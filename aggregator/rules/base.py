"""The rule interface and what every rule shares: `Rule`, its result `Aggregate`, the validated
`_Stack` every kernel runs on, weight capping, norm-clip factors and the `Clipped` wrapper (norm
clipping as a pre-step of any rule, the one cross-cutting wrapper).

Every kernel runs in `market.protocol.numerics`' fixed-point format: means, medians and trimmed
means are exact integer reductions on a per-coordinate grid, norms and distances are exact
rationals, so an aggregate is the same bit for bit on any CPU, thread count or PyTorch build."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import torch

from aggregator.errors import InvalidUpdates, RuleConfigError
from aggregator.rules import _linalg as la
from market.protocol import numerics as nx

__all__ = ["Aggregate", "Clipped", "Real", "Rule", "capped_weights", "clip_scales", "integer_capped_weights"]

#: The type of a rule's real-valued parameter. A spec value written as an integer stays an int
#: (`fedavg:cap=1000` renders back as `cap=1000`, not `cap=1000.0`): records store `rule.spec`,
#: and a replay must render the same spec from the same text.
Real = int | float

@dataclass(frozen=True)
class Aggregate:
    """A rule's result: the aggregate `[d]` (float32), the rows it selected where meaningful
    (Krum, Multi-Krum; None for coordinate-wise rules), and figures worth recording."""

    vector: torch.Tensor
    selected: tuple[int, ...] | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Stack:
    """Validated updates plus what every rule needs: per-row scale factors (norm clipping; None:
    all 1) and, built on first use, the exact row geometry (`market.protocol.numerics.Geometry`)."""

    x: torch.Tensor
    scale: tuple[float, ...] | None = None
    _geo: nx.Geometry | None = None
    _sq: list[Fraction] | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def d(self) -> int:
        return int(self.x.shape[1])

    def geometry(self) -> nx.Geometry:
        """Exact dot products of the effective rows `s_i x_i`."""
        if self._geo is None or self._geo.gram is None:
            self._geo = nx.Geometry.of(self.x, scale=self.scale)
        return self._geo

    @property
    def sq(self) -> list[Fraction]:
        """Exact squared norms of the effective rows."""
        if self._sq is None:
            geo = self._geo or nx.Geometry.of(self.x, scale=self.scale, full=False)
            self._geo = geo
            self._sq = geo.sqnorms()
        return self._sq

    def with_scale(self, scale: list[float]) -> _Stack:
        geo = None if self._geo is None else self._geo.scaled(scale)
        return _Stack(self.x, tuple(scale), geo)

    def sqdist_matrix(self) -> list[list[Fraction]]:
        return self.geometry().sqdist_matrix()

    def sqdist_to(self, z: torch.Tensor) -> list[Fraction]:
        if self._geo is None:
            self._geo = nx.Geometry.of(self.x, scale=self.scale, full=False)
        return self._geo.sqdist_to(z)

    def mean(self, rows: list[int] | None = None, weights: list[int] | None = None) -> torch.Tensor:
        """The (integer-weighted) mean of the effective rows (of `rows`), exact to the grid."""
        idx = list(range(self.n)) if rows is None else rows
        w = weights if weights is not None else [1] * len(idx)
        sc = None if self.scale is None else [self.scale[i] for i in idx]
        x = self.x if rows is None else self.x[idx]
        return nx.weighted_mean(x, w, scale=sc)

    def row(self, i: int) -> torch.Tensor:
        r = self.x[i]
        return r.clone() if self.scale is None else (r.to(torch.float64) * self.scale[i]).to(torch.float32)

    def trimmed_mean(self, f: int, **kw: Any) -> torch.Tensor:
        return nx.trimmed_mean(self.x, f, scale=self.scale, **kw)

    def median(self, **kw: Any) -> torch.Tensor:
        return nx.coordinate_median(self.x, scale=self.scale, **kw)


def _stack(updates: torch.Tensor) -> _Stack:
    x = la.as_stack(updates)
    if not bool(torch.isfinite(x).all()):
        bad = int(torch.nonzero(~torch.isfinite(x).all(dim=1))[0].item())
        raise InvalidUpdates(
            f"update {bad} has NaN or infinite entries; reject it (filters flag it as non_finite) before aggregating"
        )
    return _Stack(x=x)


def _finish(vec: torch.Tensor, rule: str, **kw: Any) -> Aggregate:
    if not bool(torch.isfinite(vec).all()):
        raise InvalidUpdates(
            f"the {rule} aggregate is not finite (float32 overflow from huge updates); "
            "use a robust rule or clip the updates (clip=median)"
        )
    return Aggregate(vector=vec.to(torch.float32).contiguous(), **kw)


class Rule:
    """Common interface: `rule(updates [n, d], weights [n] | None) -> Tensor [d]`."""

    name: ClassVar[str] = "rule"
    #: whether the rule uses the weights it is given (only FedAvg-style means do)
    uses_weights: ClassVar[bool] = False

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.aggregate(updates, weights).vector

    def aggregate(self, updates: torch.Tensor, weights: torch.Tensor | None = None) -> Aggregate:
        with la.single_threaded_blas():
            st = _stack(updates)
            return self._aggregate(st, la.as_weights(weights, st.n))

    def _aggregate(self, st: _Stack, weights: torch.Tensor | None) -> Aggregate:
        raise NotImplementedError

    @property
    def spec(self) -> str:
        """The canonical spec string (`make_rule(rule.spec) == rule`)."""
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name.startswith("_"):
                continue
            v = getattr(self, f.name)
            if v != f.default:
                parts.append(f"{f.name}={_render(v)}")
        return self.name + (":" + ",".join(parts) if parts else "")


def _render(v: Any) -> str:
    if isinstance(v, Rule):
        raise RuleConfigError("nested rules have no spec; use clip= on the inner rule's spec")
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------------------------
# weights and clipping helpers


def _capped(weights: torch.Tensor | None, n: int, cap: float | None, cap_factor: float | None) -> list[Fraction]:
    if weights is None:
        return [Fraction(1)] * n
    wt = la.as_weights(weights, n)
    assert wt is not None
    w = [Fraction(float(v)) for v in wt.tolist()]
    bound: Fraction | None = None if cap is None else Fraction(float(cap))
    if cap_factor is not None:
        med = nx.median_fraction(w)
        if med > 0:
            b = Fraction(float(cap_factor)) * med
            bound = b if bound is None else min(bound, b)
    if bound is not None:
        w = [min(v, bound) for v in w]
    if not sum(w) > 0:
        raise InvalidUpdates("all weights are zero after capping; send positive sample counts")
    return w


def capped_weights(weights: torch.Tensor | None, n: int, cap: float | None, cap_factor: float | None) -> np.ndarray:
    """Sample counts capped and renormalised to sum to 1 (float64 `[n]`); uniform when None.

    The cap is the smaller of `cap` and `cap_factor` times the median count (each if given), so
    one trainer claiming a billion samples weighs at most a few typical trainers. (FedAvg itself
    uses `integer_capped_weights`, the same weights as exact integers.)
    """
    w = _capped(weights, n, cap, cap_factor)
    total = sum(w)
    return np.array([float(v / total) for v in w])


def integer_capped_weights(weights: torch.Tensor | None, n: int, cap: float | None, cap_factor: float | None
                           ) -> list[int]:
    """The capped weights as the integers `numerics.weighted_mean` takes (exact ratios when the
    capped counts are integers, else an apportionment of 2^29)."""
    return nx.integer_weights(_capped(weights, n, cap, cap_factor))


def clip_scales(sq: list[Fraction], bound: float | str) -> tuple[list[float], float]:
    """Per-row factors `min(1, B / |x_i|)` from exact squared norms (dyadic, rounded down:
    `numerics.clip_factor`) and the bound B (`"median"`: the median row norm)."""
    if isinstance(bound, str):
        if bound != "median":
            raise RuleConfigError(f"clip bound must be a number or 'median', got {bound!r}")
        b = nx.median_fraction([nx.sqrt_floor(v) for v in sq])
    else:
        b = Fraction(float(bound))
        if not b > 0:
            raise RuleConfigError(f"clip bound must be positive, got {bound!r}")
    if b == 0:
        return [1.0] * len(sq), 0.0
    return [nx.clip_factor(v, b) for v in sq], float(b)


def _clamp_f(f: int, n: int, need: int = 1) -> int:
    """Largest f' <= f with n - 2 f' >= need (f is clamped so small coalitions still aggregate)."""
    return max(0, min(int(f), (n - need) // 2))


def _trim_count(n: int, beta: float | None, f: int | None) -> int:
    if f is not None:
        return _clamp_f(f, n)
    b = 0.1 if beta is None else beta
    return _clamp_f(math.floor(b * n + 1e-9), n)


def _check_beta(beta: float | None, f: int | None, name: str) -> None:
    if beta is not None and f is not None:
        raise RuleConfigError(f"{name}: give beta or f, not both")
    if beta is not None and not (0.0 <= beta < 0.5):
        raise RuleConfigError(f"{name}: beta must be in [0, 0.5), got {beta}")
    if f is not None and f < 0:
        raise RuleConfigError(f"{name}: f must be >= 0, got {f}")



# --------------------------------------------------------------------------------------------
# the wrapper


def _median() -> Rule:
    from aggregator.rules.coordinate import Median  # coordinate.py builds on this module

    return Median()


@dataclass(frozen=True)
class Clipped(Rule):
    """Norm clipping as a pre-step: `inner` runs on the updates clipped to norm `bound`.

    The clipped rows are never materialised: every rule takes per-row scale factors.
    """

    name: ClassVar[str] = "clipped"
    inner: Rule = field(default_factory=lambda: _median())
    bound: Real | str = "median"

    @property
    def uses_weights(self) -> bool:  # type: ignore[override]
        return self.inner.uses_weights

    @property
    def spec(self) -> str:
        inner = self.inner.spec
        sep = "," if ":" in inner else ":"
        return f"{inner}{sep}clip={_render(self.bound)}"

    def _aggregate(self, st: _Stack, weights: torch.Tensor | None) -> Aggregate:
        s, b = clip_scales(st.sq, self.bound)
        res = self.inner._aggregate(st.with_scale(s), weights)
        details = dict(res.details)
        details["clip_bound"] = b
        details["clipped"] = tuple(i for i, v in enumerate(s) if v < 1.0)
        return Aggregate(vector=res.vector, selected=res.selected, details=details)



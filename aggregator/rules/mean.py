"""Means: FedAvg (the only rule that trusts sample counts, capped) and norm clipping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from aggregator.rules.base import Aggregate, Real, Rule, _finish, _Stack, clip_scales, integer_capped_weights

__all__ = ["FedAvg", "NormClipping"]


@dataclass(frozen=True)
class FedAvg(Rule):
    """Weighted mean with sample counts capped at `cap` (absolute) and at `cap_factor` x the
    median count, then renormalised; the plain mean when no weights are given. Not robust."""

    name: ClassVar[str] = "fedavg"
    uses_weights: ClassVar[bool] = True
    cap: Real | None = None
    cap_factor: Real | None = 3.0

    def _aggregate(self, st: _Stack, weights: torch.Tensor | None) -> Aggregate:
        w = integer_capped_weights(weights, st.n, self.cap, self.cap_factor)
        total = sum(w)
        return _finish(st.mean(weights=w), self.name, details={"weights": [v / total for v in w]})



@dataclass(frozen=True)
class NormClipping(Rule):
    """Clip each update to norm `bound` ("median": the median update norm), then average
    (every update one vote). As a pre-step for any other rule use `Clipped` / `clip=` in a spec."""

    name: ClassVar[str] = "norm_clip"
    bound: Real | str = "median"

    def _aggregate(self, st: _Stack, weights: torch.Tensor | None) -> Aggregate:
        s, b = clip_scales(st.sq, self.bound)
        clipped = tuple(i for i, v in enumerate(s) if v < 1.0)
        return _finish(st.with_scale(s).mean(), self.name, details={"bound": b, "clipped": clipped})



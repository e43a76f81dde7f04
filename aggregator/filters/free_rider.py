"""Free riders: `zero_update` (nothing learned, or the global model sent back unchanged) and
`stale_update` (a resend of its own previous update, or a replay of the last global step)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import ClassVar

import numpy as np
import torch

from aggregator.errors import RuleConfigError
from aggregator.filters.base import STALE_UPDATE, ZERO_UPDATE, Batch, FilterBase, ScreenReport, Verdict
from aggregator.rules import _linalg as la
from market.protocol import numerics as nx

__all__ = ["FreeRiderConfig", "FreeRiderFilter", "cosine_compare"]


@dataclass(frozen=True)
class FreeRiderConfig:
    #: norm at or below this is a zero update whatever the others send
    zero_abs_norm: float = 1e-12
    #: norm below this fraction of the median norm is a zero update
    zero_rel_norm: float = 1e-2
    #: cosine to the trainer's previous update at or above this ...
    stale_cosine: float = 0.9999
    #: ... and |norm / previous norm - 1| at or below this is a stale resend
    stale_norm_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        if not (0 <= self.zero_rel_norm < 1) or self.zero_abs_norm < 0:
            raise RuleConfigError("zero_rel_norm must be in [0, 1) and zero_abs_norm >= 0")
        if not -1 <= self.stale_cosine <= 1:
            raise RuleConfigError("cosine thresholds must be in [-1, 1]")


@dataclass(frozen=True)
class FreeRiderFilter(FilterBase):
    """`zero_update` by norm (absolute, and relative to the median norm of the finite rows);
    `stale_update` by cosine and norm ratio to the trainer's own previous-round update, or by
    cosine to the last global step (the previous round's model minus the one before: a free-rider
    replaying the global model's own progress, at any scale)."""

    name: ClassVar[str] = "free_rider"
    config: FreeRiderConfig = field(default_factory=FreeRiderConfig)

    def __call__(self, batch: Batch) -> ScreenReport:
        cfg, b = self.config, batch
        out = b.finite_verdicts()
        live = b.live(out)
        finite = [i for i in range(b.n) if np.isfinite(b.norms[i])]
        # exact squared norms of the finite rows: every threshold below is an exact comparison
        sq = dict(zip(finite, nx.row_sqnorms(b.x[finite]) if finite else [], strict=True))
        med = nx.median_fraction([nx.sqrt_floor(sq[i]) for i in finite]) if finite else Fraction(0)
        prev = {k.lower(): v for k, v in b.previous.items()}
        step = None
        if b.global_step is not None:
            sv = la.as_stack(b.global_step.reshape(1, -1))[0]
            if sv.shape[0] == b.x.shape[1] and bool(torch.isfinite(sv).all()) and bool((sv != 0).any()):
                step = sv
        steps = None
        if step is not None and finite:
            dots, step_sq = nx.Geometry.of(b.x[finite], full=False).dots_to(step)
            steps = (dict(zip(finite, dots, strict=True)), step_sq)
        zero_abs2 = Fraction(cfg.zero_abs_norm) ** 2
        rel = Fraction(cfg.zero_rel_norm)
        lo, hi = (1 - Fraction(cfg.stale_norm_tolerance)) ** 2, (1 + Fraction(cfg.stale_norm_tolerance)) ** 2
        for i, v in enumerate(out):
            if not live[i]:
                continue
            if sq[i] <= zero_abs2 or sq[i] < rel * rel * med * med:
                out[i] = Verdict(i, v.trainer, ZERO_UPDATE,
                                 f"norm {float(b.norms[i]):.3e} against median norm {float(med):.3e}")
                continue
            if steps is not None:
                dot, ssq = steps[0][i], steps[1]
                if cosine_compare(dot, sq[i], ssq, cfg.stale_cosine) >= 0:
                    cos_g = float(dot) / math.sqrt(float(sq[i]) * float(ssq))
                    out[i] = Verdict(i, v.trainer, STALE_UPDATE, f"cosine {cos_g:.6f} to the last global step: a replay")
                    continue
            p = prev.get(v.trainer.lower())
            if p is None:
                continue
            pv = la.as_stack(p.reshape(1, -1))[0]
            if pv.shape[0] != b.x.shape[1] or not bool(torch.isfinite(pv).all()):
                continue
            pair = nx.Geometry.of(torch.stack([b.x[i], pv]))
            na2, nb2, dot = pair.sqnorm(0), pair.sqnorm(1), pair.dot(0, 1)
            if nb2 == 0:
                continue
            if cosine_compare(dot, na2, nb2, cfg.stale_cosine) >= 0 and lo * nb2 <= na2 <= hi * nb2:
                cos = float(dot) / math.sqrt(float(na2) * float(nb2))
                ratio = math.sqrt(float(na2) / float(nb2))
                out[i] = Verdict(
                    i,
                    v.trainer,
                    STALE_UPDATE,
                    f"cosine {cos:.6f} and norm ratio {ratio:.6f} to its previous update",
                )
        return ScreenReport(tuple(out))


def cosine_compare(dot: Fraction, sq_a: Fraction, sq_b: Fraction, threshold: float) -> int:
    """The sign of `cos(a, b) - threshold`, exactly, from `a . b`, `|a|^2` and `|b|^2` (0 when a
    norm is 0: no direction to compare)."""
    if sq_a == 0 or sq_b == 0:
        return -1 if threshold > 0 else 0
    t = Fraction(threshold)
    # compare dot with t |a||b| without square roots: signs first, then squares
    lhs_sign = (dot > 0) - (dot < 0)
    rhs_sign = (t > 0) - (t < 0)
    if lhs_sign != rhs_sign:
        return 1 if lhs_sign > rhs_sign else -1
    a, b = dot * dot, t * t * sq_a * sq_b
    mag = (a > b) - (a < b)
    return mag if lhs_sign >= 0 else -mag

"""Free riders: `zero_update` (nothing learned, or the global model sent back unchanged) and
`stale_update` (a resend of its own previous update, or a replay of the last global step)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from aggregator.errors import RuleConfigError
from aggregator.filters.base import STALE_UPDATE, ZERO_UPDATE, Batch, FilterBase, ScreenReport, Verdict, cos_and_rel
from aggregator.rules import _linalg as la

__all__ = ["FreeRiderConfig", "FreeRiderFilter"]


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
        finite = np.isfinite(b.norms)
        med = float(np.median(b.norms[finite])) if finite.any() else 0.0
        prev = {k.lower(): v for k, v in b.previous.items()}
        step = None
        if b.global_step is not None:
            sv = la.as_stack(b.global_step.reshape(1, -1))[0].numpy()
            if sv.shape[0] == b.xn.shape[1] and np.isfinite(sv).all() and float(np.linalg.norm(sv)) > 0:
                step = sv
        for i, v in enumerate(out):
            if not live[i]:
                continue
            norm = float(b.norms[i])
            if norm <= cfg.zero_abs_norm or norm < cfg.zero_rel_norm * med:
                out[i] = Verdict(i, v.trainer, ZERO_UPDATE, f"norm {norm:.3e} against median norm {med:.3e}")
                continue
            if step is not None:
                cos_g = cos_and_rel(b.xn[i], step)[0]
                if cos_g >= cfg.stale_cosine:
                    out[i] = Verdict(i, v.trainer, STALE_UPDATE, f"cosine {cos_g:.6f} to the last global step: a replay")
                    continue
            p = prev.get(v.trainer.lower())
            if p is None:
                continue
            pv = la.as_stack(p.reshape(1, -1))[0].numpy()
            if pv.shape[0] != b.xn.shape[1] or not np.isfinite(pv).all():
                continue
            cos, _, na, nb = cos_and_rel(b.xn[i], pv)
            if nb == 0:
                continue
            ratio = na / nb
            if cos >= cfg.stale_cosine and abs(ratio - 1.0) <= cfg.stale_norm_tolerance:
                out[i] = Verdict(
                    i,
                    v.trainer,
                    STALE_UPDATE,
                    f"cosine {cos:.6f} and norm ratio {ratio:.6f} to its previous update",
                )
        return ScreenReport(tuple(out))

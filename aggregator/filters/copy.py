"""Copies: `copy_of:<trainer>` for an update near-identical to one committed earlier."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import ClassVar

import numpy as np

from aggregator.errors import RuleConfigError
from aggregator.filters.base import COPY_OF, Batch, FilterBase, ScreenReport, Verdict
from aggregator.filters.free_rider import cosine_compare
from market.protocol import numerics as nx

__all__ = ["CopyConfig", "CopyFilter"]


@dataclass(frozen=True)
class CopyConfig:
    #: cosine above this ...
    copy_cosine: float = 0.999
    #: ... and |a - b| / max(|a|, |b|) below this is a copy
    copy_rel_distance: float = 1e-3

    def __post_init__(self) -> None:
        if not -1 <= self.copy_cosine <= 1:
            raise RuleConfigError("cosine thresholds must be in [-1, 1]")


@dataclass(frozen=True)
class CopyFilter(FilterBase):
    """`copy_of:<trainer>` for every update near-identical to one committed earlier, among every
    finite non-zero row (copying a rejected update is a copy too, so `batch.accepted` is ignored).

    Both tests run on the exact Gram matrix of the rows (`market.protocol.numerics.Geometry`), so
    they decide the same on any machine. An update is a copy of the earliest-committed update it
    matches; that one stays `ok` (if nothing else rejects it).
    """

    name: ClassVar[str] = "copy"
    config: CopyConfig = field(default_factory=CopyConfig)

    def __call__(self, batch: Batch) -> ScreenReport:
        cfg, b = self.config, batch
        out = b.finite_verdicts()
        cand = np.array([out[i].accepted and b.norms[i] > 0 for i in range(b.n)])
        idx = np.nonzero(cand)[0]
        if len(idx) < 2:
            return ScreenReport(tuple(out))
        geo = nx.Geometry.of(b.x[idx])  # exact dot products: every comparison below is exact
        r2 = Fraction(cfg.copy_rel_distance) ** 2
        subs = b.submissions
        order = sorted(range(len(idx)), key=lambda k: (subs[idx[k]].order, int(idx[k])))
        rank = {k: r for r, k in enumerate(order)}
        for k in order:  # in commit order: match k against every earlier-committed update
            i = int(idx[k])
            for j_k in order[: rank[k]]:
                dot, sa, sb = geo.dot(k, j_k), geo.sqnorm(k), geo.sqnorm(j_k)
                if not (cosine_compare(dot, sa, sb, cfg.copy_cosine) > 0 and geo.sqdist(k, j_k) < r2 * max(sa, sb)):
                    continue
                j = int(idx[j_k])
                c = float(dot) / math.sqrt(float(sa) * float(sb))
                rel = math.sqrt(float(geo.sqdist(k, j_k)) / float(max(sa, sb)))
                out[i] = Verdict(
                    i,
                    out[i].trainer,
                    f"{COPY_OF}:{subs[j].trainer}",
                    f"cosine {c:.7f}, relative distance {rel:.2e} to the update committed at {subs[j].order}",
                )
                break
        return ScreenReport(tuple(out))

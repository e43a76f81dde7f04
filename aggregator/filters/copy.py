"""Copies: `copy_of:<trainer>` for an update near-identical to one committed earlier."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from aggregator.errors import RuleConfigError
from aggregator.filters.base import COPY_OF, Batch, FilterBase, ScreenReport, Verdict, cos_and_rel
from aggregator.rules import _linalg as la

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

    Candidate pairs come from one float32 Gram matrix (cosine above the threshold minus a margin
    for rounding); each candidate is then checked exactly in float64. An update is a copy of the
    earliest-committed update it matches; that one stays `ok` (if nothing else rejects it).
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
        full = la.gram(b.xn)  # [n, n]; indexing it avoids copying a subset of the rows
        g = full[np.ix_(idx, idx)]
        nrm = np.sqrt(np.maximum(np.diag(g), 1e-300))
        cos = g / nrm[:, None] / nrm[None, :]
        margin = 1e-4
        subs = b.submissions
        order = sorted(range(len(idx)), key=lambda k: (subs[idx[k]].order, int(idx[k])))
        rank = {k: r for r, k in enumerate(order)}
        for k in order:  # in commit order: match k against every earlier-committed update
            i = int(idx[k])
            for j_k in order[: rank[k]]:
                if cos[k, j_k] <= cfg.copy_cosine - margin:
                    continue
                j = int(idx[j_k])
                c, rel, _, _ = cos_and_rel(b.xn[i], b.xn[j])
                if c > cfg.copy_cosine and rel < cfg.copy_rel_distance:
                    out[i] = Verdict(
                        i,
                        out[i].trainer,
                        f"{COPY_OF}:{subs[j].trainer}",
                        f"cosine {c:.7f}, relative distance {rel:.2e} to the update committed at {subs[j].order}",
                    )
                    break
        return ScreenReport(tuple(out))

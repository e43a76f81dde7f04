"""Outliers: `outlier` for an update far from the coordinate-wise median of the accepted ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from aggregator.errors import RuleConfigError
from aggregator.filters.base import OUTLIER, Batch, FilterBase, ScreenReport, Verdict
from aggregator.rules import _linalg as la

__all__ = ["MAD_TO_SIGMA", "OutlierConfig", "OutlierFilter"]

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class OutlierConfig:
    #: flag distances above median + outlier_sigmas * sigma
    outlier_sigmas: float = 3.0
    #: with fewer accepted updates than this, no outlier verdicts (a median/MAD of 3 is noise)
    outlier_min_updates: int = 5
    #: sigma is at least this fraction of the median distance: in high dimensions honest
    #: distances concentrate so tightly that a bare MAD would flag ordinary heterogeneity
    outlier_sigma_floor: float = 0.05

    def __post_init__(self) -> None:
        if self.outlier_sigmas <= 0 or self.outlier_min_updates < 1:
            raise RuleConfigError("outlier_sigmas must be > 0 and outlier_min_updates >= 1")


@dataclass(frozen=True)
class OutlierFilter(FilterBase):
    """`outlier`: distance to the coordinate-wise median of the accepted rows above median + k
    sigma of their distances, sigma = max(MAD x 1.4826, sigma_floor x median distance). Only the
    accepted rows count, so zero updates and copies do not pull the centre."""

    name: ClassVar[str] = "outlier"
    config: OutlierConfig = field(default_factory=OutlierConfig)

    def __call__(self, batch: Batch) -> ScreenReport:
        cfg, b = self.config, batch
        out = b.finite_verdicts()
        rows = np.nonzero(b.live(out))[0]
        if len(rows) < cfg.outlier_min_updates:
            return ScreenReport(tuple(out))
        centre = la.sorted_reduce(b.xn, la.median_reducer(len(rows)), rows=rows)
        fin = np.isfinite(b.norms)
        if fin.all():
            dist = np.sqrt(la.sqdist_to(b.xn, b.norms**2, centre, None))[rows]
        else:  # rows with NaN/inf would spoil the fast path for all: go row by row
            c64 = centre.astype(np.float64)
            dist = np.array([np.linalg.norm(b.xn[i].astype(np.float64) - c64) for i in rows])
        med = float(np.median(dist))
        mad = float(np.median(np.abs(dist - med)))
        sigma = max(MAD_TO_SIGMA * mad, cfg.outlier_sigma_floor * med)
        limit = med + cfg.outlier_sigmas * sigma
        for k, i in enumerate(rows.tolist()):
            if dist[k] > limit and sigma > 0:
                out[i] = Verdict(
                    i,
                    out[i].trainer,
                    OUTLIER,
                    f"distance {dist[k]:.4e} to the median > {limit:.4e} "
                    f"(median {med:.4e} + {cfg.outlier_sigmas:g} x sigma {sigma:.4e})",
                )
        return ScreenReport(tuple(out), {"median_distance": med, "sigma": sigma, "limit": limit})

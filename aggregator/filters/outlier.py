"""Outliers: `outlier` for an update far from the coordinate-wise median of the accepted ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import ClassVar

import numpy as np

from aggregator.errors import RuleConfigError
from aggregator.filters.base import OUTLIER, Batch, FilterBase, ScreenReport, Verdict
from market.protocol import numerics as nx

__all__ = ["MAD_TO_SIGMA", "OutlierConfig", "OutlierFilter"]

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class OutlierConfig:
    #: flag distances above median + outlier_sigmas * sigma
    outlier_sigmas: float = 3.0
    #: with fewer accepted updates than this, no outlier verdicts (a median/MAD of 3 is noise)
    outlier_min_updates: int = 5
    #: sigma is at least this fraction of the median distance: in high dimensions honest
    #: distances concentrate so tightly that a bare MAD would flag ordinary heterogeneity. 0.05
    #: (the limit at 1.15 x the median) rejected 3 of 40 honest updates in the demo and up to 7 %
    #: at 10 IID trainers; 0.15 (1.45 x) rejects the gross attacks as before (benchmarks/
    #: robust_rounds.py), and the validation gate behind this filter judges what it lets through
    outlier_sigma_floor: float = 0.15

    def __post_init__(self) -> None:
        if self.outlier_sigmas <= 0 or self.outlier_min_updates < 1:
            raise RuleConfigError("outlier_sigmas must be > 0 and outlier_min_updates >= 1")


@dataclass(frozen=True)
class OutlierFilter(FilterBase):
    """`outlier`: distance to the coordinate-wise median of the accepted rows above median + k
    sigma of their distances, sigma = max(MAD x 1.4826, sigma_floor x median distance). Only the
    accepted rows count, so zero updates and copies do not pull the centre. The centre, the
    distances and the statistics are exact (`market.protocol.numerics`), so the decisions are the
    same on any machine."""

    name: ClassVar[str] = "outlier"
    config: OutlierConfig = field(default_factory=OutlierConfig)

    def __call__(self, batch: Batch) -> ScreenReport:
        cfg, b = self.config, batch
        out = b.finite_verdicts()
        rows = np.nonzero(b.live(out))[0]
        if len(rows) < cfg.outlier_min_updates:
            return ScreenReport(tuple(out))
        centre = nx.coordinate_median(b.x, rows=rows.tolist())
        live = b.x[rows]
        dist = [nx.sqrt_floor(v) for v in nx.Geometry.of(live, full=False).sqdist_to(centre)]
        med = nx.median_fraction(dist)
        mad = nx.median_fraction([abs(v - med) for v in dist])
        sigma = max(Fraction(MAD_TO_SIGMA) * mad, Fraction(cfg.outlier_sigma_floor) * med)
        limit = med + Fraction(cfg.outlier_sigmas) * sigma
        for k, i in enumerate(rows.tolist()):
            if dist[k] > limit and sigma > 0:
                out[i] = Verdict(
                    i,
                    out[i].trainer,
                    OUTLIER,
                    f"distance {float(dist[k]):.4e} to the median > {float(limit):.4e} "
                    f"(median {float(med):.4e} + {cfg.outlier_sigmas:g} x sigma {float(sigma):.4e})",
                )
        stats = {"median_distance": float(med), "sigma": float(sigma), "limit": float(limit)}
        return ScreenReport(tuple(out), stats)

"""`insufficient_noise`: in a project whose spec declares client-level DP, an update whose energy
cannot hold the declared noise.

Every trainer of a DP project clips its update to C and adds N(0, (sigma*C)^2) to every
coordinate before encrypting it (`market.protocol.privacy.privatize_update`). The aggregator
never sees that happen. What it can test is whether the update it decoded could carry that
noise: the squared L2 norm of d noised coordinates is about d (sigma*C)^2, and a pruned update
keeps the energy of its largest entries. `market.protocol.privacy.noise_floor` gives the least
energy an honest update can have at its density (nonzero coordinates over d) at 6 standard
deviations, halved for what the codec does afterwards. An update below it skipped the noise or
scaled it down, and so claims a privacy it does not give: it is rejected before any other
filter looks at it, so it is never aggregated, scored or paid.

What this cannot show (docs/privacy.md, "What the aggregator can and cannot verify"): that the
noise was fresh, secret, Gaussian or independent of the data; that the signal under it was
clipped (for large d an unclipped signal hides in the noise's spread); or anything about a
trainer's own DP in a project that declares none. Projects without `privacy` skip the filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from aggregator.filters.base import INSUFFICIENT_NOISE, Batch, FilterBase, ScreenReport, Verdict
from market.protocol.privacy import noise_floor

__all__ = ["DpNoiseConfig", "DpNoiseFilter"]


@dataclass(frozen=True)
class DpNoiseConfig:
    """No thresholds of its own: the declared policy in the project spec sets the floor, and a
    record states the spec it ran under, so every auditor derives the same floor."""


@dataclass(frozen=True)
class DpNoiseFilter(FilterBase):
    """`insufficient_noise`: squared norm below `noise_floor` for the spec's declared DP policy."""

    name: ClassVar[str] = "dp_noise"
    config: DpNoiseConfig = field(default_factory=DpNoiseConfig)

    def __call__(self, batch: Batch) -> ScreenReport:
        out = batch.finite_verdicts()
        policy = batch.dp
        if policy is None:
            return ScreenReport(tuple(out))
        d = int(batch.x.shape[1])
        rejected = 0
        for i in np.nonzero(batch.live(out))[0]:
            energy = float(batch.norms[i]) ** 2
            nonzero = int(np.count_nonzero(batch.xn[i]))
            floor = noise_floor(d, nonzero, policy)
            if energy < floor:
                rejected += 1
                out[i] = Verdict(
                    int(i), out[i].trainer, INSUFFICIENT_NOISE,
                    f"squared norm {energy:.6g} over {nonzero} of {d} non-zero coordinates is below {floor:.6g}, the"
                    f" least the declared noise (sigma {policy.noise_multiplier:g} x clip {policy.clip_norm:g}) leaves:"
                    " the update skipped or scaled down its DP noise",
                )
        return ScreenReport(tuple(out), {"dp_noise_rejected": float(rejected)})

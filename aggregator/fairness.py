"""Pay for data, not for step length: contribution scores made neutral to stretching.

A Shapley value over FedAvg coalitions credits a longer step along a good direction: an update
multiplied by 2 scores about twice as much, although it carries the same data (measured by the
`stretch` attack in benchmarks/robust_rounds.py). So before the reward split, every positive score
is multiplied by `min(1, B / |delta_i|)`, with B the lower median of the accepted updates' norms
(the norm at or below which at least half of them lie: an honest norm while the stretchers are at
most half the round). Honest updates at or below B keep their score; a stretched one is paid as if
it had the norm B. The model is not changed (the aggregate still uses every accepted update as
sent): only the pay.

Norms and the factor are exact (`market.protocol.numerics`: squared norms as rationals on the row
grid, the factor rounded down to a multiple of 2^-30), and a score times a factor is one float
multiplication: an auditor on any machine derives the same values from the same updates and
recorded scores.

Limit: an honest trainer whose update is longer than B because it holds more data than half of
the others is paid as if its step had the length B; with statistically equal data (IID shares)
this moves nothing beyond the noise of the norms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from market.protocol.numerics import clip_factor, row_sqnorms, sqrt_floor

__all__ = ["norm_factors", "pay_weights", "stretch_neutral"]


def norm_factors(deltas: Sequence[torch.Tensor]) -> list[float]:
    """`min(1, B / |delta_i|)` per update, B the lower median norm (exact, see the module doc)."""
    if not deltas:
        return []
    sq = row_sqnorms(torch.stack(list(deltas)))
    lower_median = sorted(sq)[(len(sq) - 1) // 2]
    if lower_median <= 0:
        return [1.0] * len(sq)
    bound = sqrt_floor(lower_median)
    return [clip_factor(s, bound) for s in sq]


def stretch_neutral(scores: Mapping[str, float], trainers: Sequence[str], deltas: Sequence[torch.Tensor]
                    ) -> tuple[dict[str, float], dict[str, float]]:
    """(scores with every positive one times its norm factor, the factors below 1 by trainer)."""
    factors = dict(zip(trainers, norm_factors(deltas), strict=True))
    out = {t: (s * factors[t] if s > 0 else s) for t, s in scores.items()}
    return out, {t: f for t, f in factors.items() if f < 1.0}


def pay_weights(scores: Mapping[str, float], claimed: Mapping[str, int], data_share: float,
                noise: float | Mapping[str, float] = 0.0, claim_cap: bool = False) -> dict[str, float]:
    """What the round's allocation is split by. Eligible: the scored (accepted) trainers whose
    score is above `-noise` (a score within the noise of 0 is no negative contribution; `noise`
    is the round's noise, one figure or one per trainer: `aggregator.round.stages.pay_noise`,
    a fraction of the base model's validation loss or the paired standard error). Each eligible
    trainer gets `(1 - data_share) x max(score_i, 0) / sum(max(scores, 0)) + data_share x
    claimed_i / sum(claimed)` (the data part alone when no score is positive); every other
    trainer 0. The data part damps the noise of one round's
    Shapley values between trainers with statistically equal data and is additive over
    identities (splitting data over k identities splits the claim too), so it pays no Sybil.
    `claimed` are the capped sample counts the aggregate weighs with; with `claim_cap` each is
    also capped at the lower median claim of the eligible trainers: nobody can verify a claim, so
    claiming more than a typical trainer must not raise the data part (a trainer with more data
    than most is paid for it by its score). `data_share` 0 gives the plain positive-part split."""
    if data_share <= 0:
        return {t: max(s, 0.0) for t, s in scores.items()}
    limit = noise if isinstance(noise, Mapping) else dict.fromkeys(scores, noise)
    eligible = {t: s for t, s in scores.items() if s > -limit.get(t, 0.0)}
    out = {t: 0.0 for t in scores}
    total = math.fsum(max(s, 0.0) for s in eligible.values())
    samples = {t: max(int(claimed.get(t, 0)), 0) for t in eligible}
    if claim_cap and samples:
        bound = sorted(samples.values())[(len(samples) - 1) // 2]
        samples = {t: min(v, bound) for t, v in samples.items()}
    n_total = sum(samples.values())
    # without a positive score the data part is everything, without claims the score part
    score_part = 0.0 if total <= 0 else (1.0 - data_share if n_total else 1.0)
    data_part = 0.0 if n_total <= 0 else (data_share if total > 0 else 1.0)
    for t, s in eligible.items():
        out[t] = (score_part * (max(s, 0.0) / total) if score_part else 0.0) + \
            (data_part * (samples[t] / n_total) if data_part else 0.0)
    return out

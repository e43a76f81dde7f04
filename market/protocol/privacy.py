"""Client-level differential privacy for one update, and the privacy accountant.

The mechanism (DP-FedAvg, McMahan et al. 2018, with the noise added by the trainer itself): clip the
update's L2 norm over all its tensors to C, then add independent Gaussian noise N(0, (sigma*C)^2)
to every coordinate. With sensitivity C (the client-level add/remove convention: one trainer's
whole dataset in or out changes its clipped contribution by at most C) each round is a Gaussian
mechanism of noise multiplier sigma; a trainer that takes part in a round with probability q (1
for a trainer that submits every round) makes it a sampled Gaussian mechanism. Under
replace-one-dataset adjacency the sensitivity is 2C: `adjacency="replace"` accounts with sigma/2.

The accountant is Opacus's RDP analysis (`opacus.accountants.analysis.rdp`, the same code as
`RDPAccountant`, over its default orders): `epsilon_spent(policy, rounds)` is the epsilon at the
policy's delta after `rounds` rounds. Because the trainer adds the noise before encryption, the
guarantee holds against everyone who later reads the update, aggregator and auditors included;
docs/privacy.md says what the aggregator can and cannot check about noise it did not see added.

Torch and Opacus are imported on first use: `DpPolicy` is part of the project spec, which the CLIs
read without loading either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

__all__ = [
    "DpApplied",
    "DpPolicy",
    "clip_update",
    "epsilon_spent",
    "noise_consistent",
    "noise_floor",
    "noise_for_budget",
    "privatize_update",
    "rounds_within_budget",
]

#: Largest round count the budget search looks at.
_MAX_ROUNDS = 1 << 20


class DpPolicy(BaseModel):
    """A project's differential-privacy policy: every update clipped to `clip_norm` and noised
    with `noise_multiplier * clip_norm`; a trainer stops once another round would take its
    epsilon (at `delta`) over `max_epsilon`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_epsilon: float = Field(default=8.0, gt=0)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    noise_multiplier: float = Field(default=3.0, gt=0)
    clip_norm: float = Field(default=1.0, gt=0)
    #: Probability that a trainer takes part in a round (1: every round).
    sample_rate: float = Field(default=1.0, gt=0, le=1)
    adjacency: Literal["add_remove", "replace"] = "add_remove"

    @property
    def accounted_multiplier(self) -> float:
        """The noise multiplier relative to the sensitivity the accountant assumes."""
        return self.noise_multiplier / (2.0 if self.adjacency == "replace" else 1.0)


@dataclass(frozen=True)
class DpApplied:
    """What `privatize_update` did: the norm before clipping, the clip factor, the noise std."""

    norm: float
    factor: float
    noise_std: float

    @property
    def clipped(self) -> bool:
        return self.factor < 1.0


def _norm(update: Mapping[str, torch.Tensor]) -> float:
    import torch

    return math.sqrt(math.fsum(float(torch.linalg.vector_norm(t, dtype=torch.float64)) ** 2 for t in update.values()))


def clip_update(update: Mapping[str, torch.Tensor], clip_norm: float) -> tuple[dict[str, torch.Tensor], float, float]:
    """`(clipped, norm, factor)`: the update scaled by factor = min(1, C / ||update||_2), the L2
    norm taken over all tensors together."""
    if not clip_norm > 0 or not math.isfinite(clip_norm):
        raise ValueError("clip_norm must be a positive finite number")
    norm = _norm(update)
    if not math.isfinite(norm):
        raise ValueError("cannot clip an update holding NaN or Inf")
    factor = 1.0 if norm <= clip_norm else clip_norm / norm
    return {name: (t * factor if factor < 1.0 else t.clone()) for name, t in update.items()}, norm, factor


def privatize_update(
    update: Mapping[str, torch.Tensor], policy: DpPolicy, generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], DpApplied]:
    """Clip `update` (float32 deltas) to `policy.clip_norm` and add N(0, (sigma*C)^2) noise to
    every coordinate, drawn from `generator` tensor by tensor in the update's order (a seeded
    generator reproduces the same noise)."""
    import torch

    clipped, norm, factor = clip_update(update, policy.clip_norm)
    std = policy.noise_multiplier * policy.clip_norm
    out = {}
    for name, t in clipped.items():
        noise = torch.randn(t.shape, generator=generator, dtype=torch.float32)
        out[name] = (t + noise * std).to(t.dtype)
    return out, DpApplied(norm, factor, std)


def _rdp_epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as analysis

    if rounds <= 0:
        return 0.0
    orders = RDPAccountant.DEFAULT_ALPHAS
    curve = analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=rounds, orders=orders)
    epsilon, _ = analysis.get_privacy_spent(orders=orders, rdp=curve, delta=delta)
    return float(epsilon)


def epsilon_spent(policy: DpPolicy, rounds: int) -> float:
    """A trainer's epsilon (at `policy.delta`) after taking part in `rounds` rounds under the
    policy (0 for none): Opacus's RDP accountant, one step per round at `policy.sample_rate`."""
    if not isinstance(rounds, int) or rounds < 0:
        raise ValueError("rounds must be a non-negative integer")
    return _rdp_epsilon(policy.accounted_multiplier, policy.sample_rate, rounds, policy.delta)


def rounds_within_budget(policy: DpPolicy) -> int:
    """The most rounds a trainer can take part in before its epsilon would exceed
    `policy.max_epsilon` (0 if even one round does)."""
    if epsilon_spent(policy, 1) > policy.max_epsilon:
        return 0
    low, high = 1, 2
    while high < _MAX_ROUNDS and epsilon_spent(policy, high) <= policy.max_epsilon:
        low, high = high, high * 2
    if high >= _MAX_ROUNDS and epsilon_spent(policy, _MAX_ROUNDS) <= policy.max_epsilon:
        return _MAX_ROUNDS
    while high - low > 1:
        mid = (low + high) // 2
        if epsilon_spent(policy, mid) <= policy.max_epsilon:
            low = mid
        else:
            high = mid
    return low


def noise_for_budget(
    max_epsilon: float,
    delta: float,
    rounds: int,
    *,
    sample_rate: float = 1.0,
    adjacency: Literal["add_remove", "replace"] = "add_remove",
) -> float:
    """The noise multiplier that keeps `rounds` rounds within `max_epsilon` at `delta` (Opacus's
    `get_noise_multiplier`, to its default 0.01 epsilon tolerance)."""
    from opacus.accountants.utils import get_noise_multiplier

    if not isinstance(rounds, int) or rounds <= 0:
        raise ValueError("rounds must be a positive integer")
    sigma = float(
        get_noise_multiplier(
            target_epsilon=max_epsilon, target_delta=delta, sample_rate=sample_rate, steps=rounds, accountant="rdp"
        )
    )
    return sigma * (2.0 if adjacency == "replace" else 1.0)


def noise_consistent(update: Mapping[str, torch.Tensor], policy: DpPolicy, *, z: float = 6.0) -> tuple[bool, str]:
    """Whether an update's energy fits "clipped to C, then N(0, (sigma*C)^2) noise per coordinate"
    at `z` standard deviations: `(ok, detail)`. With d coordinates, S = ||update||^2 is
    ||s||^2 + 2<s, n> + ||n||^2 for the clipped signal s (||s|| <= C) and the noise n, and ||n||^2
    / (sigma*C)^2 is chi-square with d degrees of freedom (mean d, std sqrt(2d)). Too little energy
    means the noise was skipped or scaled down; too much means the signal was not clipped. This is
    all a receiver can test (docs/privacy.md): it does not show the noise was fresh or secret."""
    d = sum(t.numel() for t in update.values())
    if d == 0:
        return False, "an empty update carries no noise"
    energy = _norm(update) ** 2
    var = (policy.noise_multiplier * policy.clip_norm) ** 2
    c = policy.clip_norm
    low = var * (d - z * math.sqrt(2 * d))
    high = c * c + 2 * z * c * math.sqrt(var) + var * (d + z * math.sqrt(2 * d))
    if not math.isfinite(energy) or energy < low:
        return False, f"squared norm {energy:.6g} is below the noise floor {low:.6g}: noise skipped or scaled down"
    if energy > high:
        return False, f"squared norm {energy:.6g} is above {high:.6g}: the update was not clipped to {c:g}"
    return True, f"squared norm {energy:.6g} within [{low:.6g}, {high:.6g}] for {d} coordinates"


#: Fraction of the expected noise energy an update must keep (`noise_floor`): covers what the
#: codec does to a noised update after the trainer added the noise (mean-based clipping, rounding
#: to few levels zeroing small entries), while noise skipped or scaled down by more than
#: 1/sqrt(2) in standard deviation still falls below it.
NOISE_FLOOR_SLACK = 0.5


def noise_floor(
    d: int, nonzero: int, policy: DpPolicy, *, z: float = 6.0, slack: float = NOISE_FLOOR_SLACK
) -> float:
    """The least squared L2 norm an update of `d` coordinates, `nonzero` of them non-zero, can
    have if it carries the policy's noise N(0, (sigma*C)^2) per coordinate: `slack` x (mean - z
    std) of the noise energy. A pruned update (nonzero < d) keeps the largest entries, so the
    energy is that of the top fraction p = nonzero / d of Gaussians: with t the two-sided
    (1 - p) quantile, each coordinate contributes E[x^2; |x| > t] = 2 (t phi(t) + Q(t)) v on
    average and E[x^4; |x| > t] = 2 ((t^3 + 3t) phi(t) + 3 Q(t)) v^2 to the second moment
    (v = (sigma*C)^2; p = 1 gives the chi-square mean d v and variance 2 d v^2). The signal only
    adds energy in expectation, so this bound holds whatever the clipped signal was."""
    if d <= 0 or not 0 <= nonzero <= d:
        raise ValueError("need d > 0 and 0 <= nonzero <= d")
    if nonzero == 0:
        return math.inf
    v = (policy.noise_multiplier * policy.clip_norm) ** 2
    unit = NormalDist()
    p = nonzero / d
    t = 0.0 if p >= 1 else unit.inv_cdf(1 - p / 2)
    phi, tail = unit.pdf(t), 1 - unit.cdf(t)
    second = 2 * (t * phi + tail)
    fourth = 2 * ((t**3 + 3 * t) * phi + 3 * tail)
    mean = d * second * v
    std = math.sqrt(max(d * (fourth - second**2), 0.0)) * v
    return slack * max(mean - z * std, 0.0)

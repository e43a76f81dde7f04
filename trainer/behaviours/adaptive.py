"""Attacks that know the honest updates and the defence, and stay inside its thresholds.

All three read the colluding group's honest deltas (`colluders`: in the in-memory federation the
group's own honest training results, the "partial knowledge" setting of the papers; a lone CLI
trainer falls back on its own delta) and submit an update that is not a copy of any other:

- `min_max` / `min_sum` (Shejwalkar & Houmansadr, "Manipulating the Byzantine", NDSS 2021): the
  group mean plus gamma times a perturbation direction (`-std`, `-unit` mean or `-sign` of the
  mean), gamma the largest (by bisection) for which the malicious update is no farther from any
  honest delta than two honest deltas are from each other (`min_max`), or its summed squared
  distance to them no larger than any honest delta's (`min_sum`): inside every distance-based
  threshold the honest updates themselves satisfy.
- `gate_evader`: against the validation gate, which keeps the largest coalition within tau of the
  best one: -epsilon times the group mean, epsilon small enough that the damage per attacker stays
  near the gate's tolerance, plus each colluder's own noise so no two send the same bytes (the
  copy filter cannot pair them).

The group is passed as `context.honest_deltas`; the perturbation is computed from it alone, so the
same spec gives the same update on every machine for the same inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from market.models import stack_updates, unflatten
from trainer.behaviours.base import COLLUDERS, HONEST_UPDATE, Behaviour, BehaviourContext, Update, noise_like
from trainer.errors import BehaviourError
from trainer.training import TrainResult

__all__ = ["GateEvader", "MinMax", "MinSum", "perturbation"]


def perturbation(stack: torch.Tensor, kind: str) -> torch.Tensor:
    """The direction the attack pushes along, from the group's deltas `[k, d]` (float64)."""
    mean = stack.mean(dim=0)
    if kind == "std" and stack.shape[0] > 1:
        std = stack.std(dim=0, correction=0)
        if float(std.norm()) > 0:
            return -std
    if kind == "sign":
        return -torch.sign(mean)
    norm = float(mean.norm())
    return -mean / norm if norm > 0 else torch.zeros_like(mean)


class _Group(Behaviour):
    @property
    def needs(self) -> frozenset[str]:
        return frozenset({HONEST_UPDATE, COLLUDERS})

    def _stack(self, honest: TrainResult | None, context: BehaviourContext) -> torch.Tensor:
        group: list[Mapping[str, torch.Tensor]] = list(context.honest_deltas)
        if not group and honest is not None:
            group = [honest.delta]
        if not group:
            raise BehaviourError(f"behaviour {self.name!r} needs the group's honest deltas or its own training result")
        return stack_updates(group, list(context.global_state)).double()


def _bisect(ok: Callable[[float], bool], hi: float, steps: int) -> float:
    """Largest gamma in [0, hi] with ok(gamma), assuming ok is monotone (true at 0)."""
    lo = 0.0
    if ok(hi):
        return hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class MinMax(_Group):
    """mean + gamma x p with max_i |m - g_i| <= max_ij |g_i - g_j| (the group's own spread; a group
    of one uses its delta's norm as the spread)."""

    direction: Literal["std", "unit", "sign"] = "std"
    gamma_max: float = 50.0
    steps: int = 40
    name: ClassVar[str] = "min_max"

    def _bound(self, stack: torch.Tensor) -> tuple[torch.Tensor, float]:
        d = torch.cdist(stack, stack)
        return d, float(d.max()) if stack.shape[0] > 1 else float(stack[0].norm())

    def _fits(self, cand: torch.Tensor, stack: torch.Tensor, bound: float) -> bool:
        return float((stack - cand).norm(dim=1).max()) <= bound

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        stack = self._stack(honest, context)
        mean, p = stack.mean(dim=0), perturbation(stack, self.direction)
        _, bound = self._bound(stack)
        gamma = _bisect(lambda g: self._fits(mean + g * p, stack, bound), self.gamma_max, self.steps)
        return unflatten((mean + gamma * p).float(), context.global_state), self._claim(honest, context)


@dataclass
class MinSum(MinMax):
    """mean + gamma x p with sum_i |m - g_i|^2 <= max_i sum_j |g_i - g_j|^2."""

    name: ClassVar[str] = "min_sum"

    def _bound(self, stack: torch.Tensor) -> tuple[torch.Tensor, float]:
        d = torch.cdist(stack, stack)
        if stack.shape[0] == 1:
            return d, float(stack[0].norm()) ** 2
        return d, float((d**2).sum(dim=1).max())

    def _fits(self, cand: torch.Tensor, stack: torch.Tensor, bound: float) -> bool:
        return float(((stack - cand).norm(dim=1) ** 2).sum()) <= bound


@dataclass
class GateEvader(_Group):
    """-epsilon x the group mean + this colluder's own N(0, (noise x |mean| / sqrt(d))^2) noise."""

    epsilon: float = 0.3
    noise: float = 0.05
    name: ClassVar[str] = "gate_evader"

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        stack = self._stack(honest, context)
        mean = stack.mean(dim=0)
        vec = -self.epsilon * mean
        if self.noise > 0:
            sigma = self.noise * float(mean.norm()) / math.sqrt(max(mean.numel(), 1))
            jitter = noise_like(context.global_state, sigma, context.seed, context.round)
            vec = vec + stack_updates([jitter], list(context.global_state))[0].double()
        return unflatten(vec.float(), context.global_state), self._claim(honest, context)

"""Colluding attacks computed from the group's honest deltas: ALIE and IPM.

Both declare `colluders`: an in-memory federation gives them the group's honest deltas and the
round's head counts; a lone CLI trainer has no group, so they fall back on its own honest delta.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar

import torch

from market.models import stack_updates, unflatten
from trainer.behaviours.base import COLLUDERS, HONEST_UPDATE, Behaviour, BehaviourContext, Update
from trainer.errors import BehaviourError
from trainer.training import TrainResult

__all__ = ["ALIE", "IPM", "alie_z"]


def alie_z(n: int, m: int) -> float:
    """ALIE's z_max for n workers of which m are malicious (Baruch et al., 2019, Alg. 3).

    s = floor(n/2 + 1) - m supporters are needed; z = Phi^-1((n - s) / n).
    """
    if not (n >= 2 and 1 <= m < n):
        raise BehaviourError(f"alie needs 2 <= n and 1 <= m < n trainers, got n={n}, m={m}")
    s = math.floor(n / 2 + 1) - m
    if s <= 0:
        raise BehaviourError(f"with m={m} of n={n} malicious the attackers are a majority and z is unbounded; pass z= explicitly")
    return NormalDist().inv_cdf((n - s) / n)


class _Colluding(Behaviour):
    @property
    def needs(self) -> frozenset[str]:
        return frozenset({HONEST_UPDATE, COLLUDERS})

    def _group(self, honest: TrainResult | None, context: BehaviourContext) -> list[Mapping[str, torch.Tensor]]:
        group = list(context.honest_deltas) or ([honest.delta] if honest is not None else [])
        if not group:
            raise BehaviourError(
                f"behaviour {self.name!r} needs the colluding group's honest deltas (context.honest_deltas) or its own training result"
            )
        return group


@dataclass
class ALIE(_Colluding):
    """"A little is enough": per coordinate mean - z * std of the colluding group's honest deltas.

    z defaults to `alie_z(n, m)` from the paper, with n and m from the parameters or else from
    the context. The std is the population one (`ddof=0`), so a group of one gives its mean.
    """

    z: float | None = None
    n: int | None = None
    m: int | None = None
    ddof: int = 0
    name: ClassVar[str] = "alie"

    def z_value(self, context: BehaviourContext) -> float:
        if self.z is not None:
            return self.z
        n = self.n if self.n is not None else context.num_trainers
        m = self.m if self.m is not None else context.num_malicious
        if n is None or m is None:
            raise BehaviourError("alie needs n (trainers) and m (malicious): pass them as parameters, set them in the context, or give z")
        return alie_z(n, m)

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        keys = list(context.global_state)
        stack = stack_updates(self._group(honest, context), keys)
        if self.ddof >= stack.shape[0]:
            raise BehaviourError(f"alie with ddof={self.ddof} needs more than {self.ddof} honest deltas, got {stack.shape[0]}")
        mean = stack.mean(dim=0)
        std = stack.std(dim=0, correction=self.ddof)
        vec = mean - self.z_value(context) * std
        return unflatten(vec, context.global_state), self._claim(honest, context)


@dataclass
class IPM(_Colluding):
    """Inner-product manipulation: -epsilon times the mean of the group's honest deltas."""

    epsilon: float = 0.1
    name: ClassVar[str] = "ipm"

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        stack = stack_updates(self._group(honest, context), list(context.global_state))
        vec = stack.mean(dim=0) * -self.epsilon
        return unflatten(vec, context.global_state), self._claim(honest, context)

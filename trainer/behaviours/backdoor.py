"""A backdoor (trigger) attack (Bagdasaryan et al., "How to backdoor federated learning", 2020).

The attacker trains on its own data plus copies of a fraction of it stamped with a trigger (a
bright patch in the bottom-right corner) and relabelled `target`, and may boost its delta
(model replacement). Clean accuracy barely moves, so validation-based defences see little; the
metric is `backdoor_success`: the fraction of triggered test samples of other classes that the
model classifies as `target`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from trainer.behaviours.base import Behaviour, BehaviourContext, Update
from trainer.data import Dataset
from trainer.errors import BehaviourError
from trainer.training import TrainResult

__all__ = ["Backdoor", "apply_trigger", "backdoor_success"]


def _grid(x: torch.Tensor) -> tuple[int, int] | None:
    """(height, width) of a flat square sample (64 -> 8 x 8), else None."""
    side = math.isqrt(x.shape[-1])
    return (side, side) if x.dim() == 2 and side * side == x.shape[-1] else None


def apply_trigger(x: torch.Tensor, value: float = 1.0) -> torch.Tensor:
    """Copies of samples `[N, ...]` with the trigger: the bottom-right patch (a quarter of the side,
    at least 2 pixels) set to `value`. Works on `[N, C, H, W]`, `[N, H, W]` and flat square rows."""
    out = x.clone()
    grid = _grid(x)
    if grid is not None:
        h, w = grid
        img = out.view(x.shape[0], h, w)
    elif x.dim() >= 3:
        h, w = x.shape[-2], x.shape[-1]
        img = out
    else:
        raise BehaviourError(f"no trigger for samples of shape {tuple(x.shape[1:])}; use images or square rows")
    s = max(2, min(h, w) // 4)
    img[..., h - s:, w - s:] = value
    return out


def backdoor_success(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, target: int) -> float:
    """Fraction of triggered samples of classes other than `target` classified as `target`."""
    keep = y != target
    if not bool(keep.any()):
        return 0.0
    model.eval()
    with torch.no_grad():
        pred = model(apply_trigger(x[keep])).argmax(dim=1)
    return float((pred == target).double().mean())


@dataclass
class Backdoor(Behaviour):
    """Trains on its data plus `poison` x its size of triggered copies labelled `target`, then
    multiplies the delta by `boost`."""

    target: int = 0
    poison: float = 0.5
    boost: float = 1.0
    name: ClassVar[str] = "backdoor"

    def __post_init__(self) -> None:
        if not 0 < self.poison <= 1 or self.boost <= 0:
            raise BehaviourError(f"backdoor needs 0 < poison <= 1 and boost > 0, got {self.poison}, {self.boost}")

    def transform_dataset(self, ds: Dataset) -> Dataset:
        if not 0 <= self.target < ds.num_classes:
            raise BehaviourError(f"backdoor target {self.target} is not a class of {ds.name!r} (0..{ds.num_classes - 1})")
        count = max(1, int(len(ds) * self.poison))
        stamped = apply_trigger(ds.x[:count])
        labels = torch.full((count,), self.target, dtype=torch.int64)
        return Dataset(torch.cat([ds.x, stamped]), torch.cat([ds.y, labels]), ds.num_classes, f"{ds.name}:backdoor")

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        # claim the samples it holds, not its poisoned copies (a claim above the truth is a lie)
        claim = context.num_samples if context.num_samples is not None else h.num_samples
        return {key: h.delta[key] * self.boost for key in context.global_state}, claim

"""Attacks on the rewards rather than the model: a stretched step, and one trainer's data split
over several identities (Sybil)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from trainer.behaviours.base import Behaviour, BehaviourContext, Update, ordered
from trainer.data import Dataset
from trainer.errors import BehaviourError
from trainer.training import TrainResult

__all__ = ["Stretch", "Sybil"]


@dataclass
class Stretch(Behaviour):
    """Its honest delta stretched by `factor` along its own direction: a longer step the scorer
    would credit more if the utility kept rising along it (it does not past the step's optimum)."""

    factor: float = 2.0
    name: ClassVar[str] = "stretch"

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        return {key: h.delta[key] * self.factor for key in context.global_state}, h.num_samples


@dataclass
class Sybil(Behaviour):
    """Identity `index` of `k` one trainer runs: it holds the owner's whole data and trains
    honestly on its slice (every k-th sample from `index`), so the k identities together hold
    exactly the owner's data once. The benchmark compares their total pay with the owner's
    pay as one identity."""

    k: int = 2
    index: int = 0
    name: ClassVar[str] = "sybil"

    def __post_init__(self) -> None:
        if self.k < 1 or not 0 <= self.index < self.k:
            raise BehaviourError(f"sybil needs k >= 1 and 0 <= index < k, got k={self.k}, index={self.index}")

    def transform_dataset(self, ds: Dataset) -> Dataset:
        return ds.subset(np.arange(self.index, len(ds), self.k), name=f"{ds.name}:sybil{self.index}of{self.k}")

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        return ordered(h.delta, context.global_state), h.num_samples

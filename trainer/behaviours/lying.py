"""Lying about one's data: an honest update with an inflated sample count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trainer.behaviours.base import Behaviour, BehaviourContext, Update, ordered
from trainer.training import TrainResult

__all__ = ["SampleLiar"]


@dataclass
class SampleLiar(Behaviour):
    """Submits its honest delta but claims `factor` times its samples (to weigh more in FedAvg)."""

    factor: float = 10.0
    name: ClassVar[str] = "sample_liar"

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        return ordered(h.delta, context.global_state), round(self.factor * h.num_samples)

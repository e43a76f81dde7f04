"""The honest trainer: submits what it trained, claims its true sample count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trainer.behaviours.base import Behaviour, BehaviourContext, Update, ordered
from trainer.training import TrainResult

__all__ = ["Honest"]


@dataclass
class Honest(Behaviour):
    """Submits what it trained, claims its true sample count."""

    name: ClassVar[str] = "honest"

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        return ordered(h.delta, context.global_state), h.num_samples

"""Poisoning on one's own: bad labels, a flipped or boosted delta, or noise instead of training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trainer.behaviours.base import Behaviour, BehaviourContext, Update, noise_like, ordered
from trainer.data import Dataset
from trainer.training import TrainResult

__all__ = ["GaussianNoise", "LabelFlip", "Scaling", "SignFlip", "flip_labels"]


def flip_labels(ds: Dataset) -> Dataset:
    """The label-flipping poison: y -> C-1-y."""
    return ds.with_labels(ds.num_classes - 1 - ds.y, name=f"{ds.name}:flipped")


@dataclass
class LabelFlip(Behaviour):
    """Trains honestly on poisoned labels y -> C-1-y (a data transform before training)."""

    name: ClassVar[str] = "label_flip"

    def transform_dataset(self, ds: Dataset) -> Dataset:
        return flip_labels(ds)

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        return ordered(h.delta, context.global_state), h.num_samples


@dataclass
class SignFlip(Behaviour):
    """Submits -k times its honest delta."""

    k: float = 1.0
    name: ClassVar[str] = "sign_flip"

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        return {key: h.delta[key] * -self.k for key in context.global_state}, h.num_samples


@dataclass
class Scaling(Behaviour):
    """Boosts its honest delta by `factor` (model-replacement style)."""

    factor: float = 10.0
    name: ClassVar[str] = "scaling"

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        return {key: h.delta[key] * self.factor for key in context.global_state}, h.num_samples


@dataclass
class GaussianNoise(Behaviour):
    """Submits N(0, sigma^2) noise instead of training (deterministic in seed and round)."""

    sigma: float = 1.0
    name: ClassVar[str] = "gaussian_noise"

    @property
    def needs(self) -> frozenset[str]:
        return frozenset()

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        noise = noise_like(context.global_state, self.sigma, context.seed, context.round)
        return noise, self._claim(honest, context)

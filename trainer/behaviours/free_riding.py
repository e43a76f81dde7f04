"""Free-riding: a reward without (further) training, by sending nothing, old work or others' work."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from market.models import state_delta
from trainer.behaviours.base import (
    HONEST_UPDATE,
    PREVIOUS_DELTA,
    PREVIOUS_GLOBAL,
    REVEALED_UPDATES,
    Behaviour,
    BehaviourContext,
    Update,
    noise_like,
    ordered,
    zeros_like,
)
from trainer.errors import BehaviourError
from trainer.training import TrainResult

__all__ = ["Copycat", "FreeRider"]


@dataclass
class FreeRider(Behaviour):
    """Claims a reward without (further) training.

    - `zero`: an all-zero delta.
    - `global`: sends the global weights back, i.e. a zero delta; with `noise` > 0 it adds
      N(0, noise^2) to dodge exact-zero checks (noise applies to every mode).
    - `stale`: resends its previous submission (`context.previous_delta`, else the last one this
      object produced, before noise); until this object has produced once it also trains, and
      submits the honest result when there is no previous submission (it trains once, then rides),
      otherwise zero.
    - `delta`: resends the last global step, global - previous global (Fraboni et al., 2021),
      zero in the first round.
    """

    mode: Literal["zero", "stale", "global", "delta"] = "zero"
    noise: float = 0.0
    name: ClassVar[str] = "free_rider"
    _last: Update | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in ("zero", "stale", "global", "delta"):
            raise BehaviourError(f"free_rider mode {self.mode!r} is unknown; use zero, stale, global or delta")
        if not self.noise >= 0:
            raise BehaviourError(f"free_rider noise must be >= 0, got {self.noise}")

    @property
    def needs(self) -> frozenset[str]:
        if self.mode == "stale":
            return frozenset({PREVIOUS_DELTA} | ({HONEST_UPDATE} if self._last is None else set()))
        if self.mode == "delta":
            return frozenset({PREVIOUS_GLOBAL})
        return frozenset()

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        like = context.global_state
        if self.mode == "stale":
            previous = context.previous_delta if context.previous_delta is not None else self._last
            if previous is not None:
                delta = {k: previous[k].detach().clone() for k in like}
            elif honest is not None:
                delta = ordered(honest.delta, like)
            else:
                delta = zeros_like(like)
        elif self.mode == "delta" and context.previous_global_state is not None:
            delta = state_delta(like, context.previous_global_state)
        else:
            delta = zeros_like(like)
        self._last = {k: v.detach().clone() for k, v in delta.items()}
        if self.noise > 0:
            noise = noise_like(like, self.noise, context.seed, context.round)
            delta = {k: delta[k] + noise[k] for k in like}
        return delta, self._claim(honest, context)


@dataclass
class Copycat(Behaviour):
    """Submits another trainer's revealed update: the first of `context.revealed_updates`, or what
    `source(context)` returns when a simulation sets one in code.

    Commit-reveal defeats it: a trainer must commit to the hash of its update before the commit
    deadline, and updates are only revealed after that deadline. When the copycat has to
    commit there is nothing to copy, so it falls back (`fallback="zero"` submits a zero delta,
    `"raise"` raises `BehaviourError`); a copy taken after the reveals cannot match a commitment
    made before them, and a late commit is refused.
    """

    source: Callable[[BehaviourContext], Mapping[str, torch.Tensor] | None] | None = field(
        default=None, metadata={"parse": False})
    noise: float = 0.0
    fallback: Literal["zero", "raise"] = "zero"
    name: ClassVar[str] = "copycat"

    @property
    def needs(self) -> frozenset[str]:
        return frozenset({REVEALED_UPDATES})

    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        like = context.global_state
        if self.source is not None:
            copied = self.source(context)
        else:
            copied = context.revealed_updates[0] if context.revealed_updates else None
        if copied is None:
            if self.fallback == "raise":
                raise BehaviourError("copycat has no revealed update to copy yet (reveals come after the commit deadline);"
                                     " nothing to submit")
            delta = zeros_like(like)
        else:
            delta = {k: copied[k].detach().clone().to(torch.float32) for k in like}
        if self.noise > 0:
            noise = noise_like(like, self.noise, context.seed, context.round)
            delta = {k: delta[k] + noise[k] for k in like}
        return delta, self._claim(honest, context)

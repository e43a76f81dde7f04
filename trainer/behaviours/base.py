"""The `Behaviour` interface: what a scripted trainer submits, and what it needs to decide it.

A simulated (or scripted CLI) trainer runs, each round:

    data = behaviour.transform_dataset(own_data)             # label_flip poisons its data here
    honest = train_local(...) if "honest_update" in behaviour.needs else None
    context = trainer.context.fill_context(behaviour, ...)   # fills exactly `behaviour.needs`
    delta, claimed_samples = behaviour.produce(honest, context)

`needs` is the contract between a behaviour and whoever runs it (the CLI's round on the real
chain, the in-memory federation): it names the inputs beyond the global state that `produce`
reads, and the runner computes or fetches those and nothing else. The names are in `NEEDS`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from trainer.data import Dataset
from trainer.errors import BehaviourError
from trainer.training import TrainResult

__all__ = [
    "COLLUDERS",
    "HONEST_UPDATE",
    "NEEDS",
    "PREVIOUS_DELTA",
    "PREVIOUS_GLOBAL",
    "REVEALED_UPDATES",
    "Behaviour",
    "BehaviourContext",
    "Update",
]

Update = dict[str, torch.Tensor]

#: `produce` uses the honest training result: the runner trains (else it passes None).
HONEST_UPDATE = "honest_update"
#: `context.previous_global_state`: the global weights of the round before.
PREVIOUS_GLOBAL = "previous_global"
#: `context.previous_delta`: what this trainer submitted the round before.
PREVIOUS_DELTA = "previous_delta"
#: `context.revealed_updates`: other trainers' updates revealed this round (none before the commit
#: deadline: that is what commit-reveal is for).
REVEALED_UPDATES = "revealed_updates"
#: `context.honest_deltas`, `num_trainers`, `num_malicious`: the colluding group's honest deltas and
#: the round's head counts. A runner that cannot see other trainers (the CLI) leaves them empty, and
#: the behaviour falls back on its own honest update.
COLLUDERS = "colluders"
NEEDS = frozenset({HONEST_UPDATE, PREVIOUS_GLOBAL, PREVIOUS_DELTA, REVEALED_UPDATES, COLLUDERS})


@dataclass(frozen=True)
class BehaviourContext:
    """What a behaviour may look at when it produces its submission.

    The first fields are always set; the rest only when the behaviour declares the matching need.
    """

    global_state: Mapping[str, torch.Tensor]
    round: int = 0
    #: Seed for this trainer's randomness this round (the simulation derives one per trainer).
    seed: int = 0
    #: This trainer's true number of samples (what it claims unless it lies).
    num_samples: int | None = None
    trainer_id: str | None = None
    #: previous_global
    previous_global_state: Mapping[str, torch.Tensor] | None = None
    #: colluders: honest deltas of the colluding group (this trainer's own included, if it trained);
    #: n trainers submitting this round, m malicious among them (ALIE's z depends on both).
    honest_deltas: Sequence[Mapping[str, torch.Tensor]] = ()
    num_trainers: int | None = None
    num_malicious: int | None = None
    #: previous_delta
    previous_delta: Mapping[str, torch.Tensor] | None = None
    #: revealed_updates: other trainers' revealed updates of this round, in reveal order.
    revealed_updates: Sequence[Mapping[str, torch.Tensor]] = ()


def noise_like(like: Mapping[str, torch.Tensor], sigma: float, seed: int, rnd: int) -> Update:
    """N(0, sigma^2) tensors shaped as `like`, deterministic in (seed, round)."""
    state = np.random.SeedSequence([seed & (2**64 - 1), rnd & (2**64 - 1)]).generate_state(2)
    g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return {k: torch.randn(v.shape, generator=g, dtype=torch.float32) * sigma for k, v in like.items()}


def zeros_like(like: Mapping[str, torch.Tensor]) -> Update:
    return {k: torch.zeros(v.shape, dtype=torch.float32) for k, v in like.items()}


def ordered(delta: Mapping[str, torch.Tensor], like: Mapping[str, torch.Tensor]) -> Update:
    return {k: delta[k] for k in like}


class Behaviour(ABC):
    """One scripted behaviour. Subclasses are dataclasses whose fields are their parameters, with a
    registry `name`; `needs` (a subset of `NEEDS`) names the inputs they read.

    Contract of `produce(honest, context)`:
    - `honest` is the trainer's honest training result when `HONEST_UPDATE` is in `needs`, else None
      (a behaviour that did not ask must not require it);
    - `context` carries the global state, round, seed, true sample count and trainer id, plus what
      `needs` asked for (fields it did not ask for keep their empty defaults);
    - it returns the update to submit (float32 tensors keyed and ordered as `context.global_state`)
      and the sample count to claim; it raises `BehaviourError` when it cannot act.
    """

    name: ClassVar[str]

    @property
    def needs(self) -> frozenset[str]:
        """The inputs `produce` reads beyond the always-set context fields (default: it trains)."""
        return frozenset({HONEST_UPDATE})

    @property
    def needs_training(self) -> bool:
        """Whether `produce` uses an honest training result (else pass None and save the work)."""
        return HONEST_UPDATE in self.needs

    def transform_dataset(self, ds: Dataset) -> Dataset:
        """Change the local data before training (identity unless the behaviour poisons data)."""
        return ds

    @abstractmethod
    def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
        """The update to submit and the number of samples to claim."""

    def _honest(self, honest: TrainResult | None) -> TrainResult:
        if honest is None:
            raise BehaviourError(f"behaviour {self.name!r} needs the honest training result; train before calling produce")
        return honest

    def _claim(self, honest: TrainResult | None, context: BehaviourContext) -> int:
        if honest is not None:
            return honest.num_samples
        if context.num_samples is None:
            raise BehaviourError(
                f"behaviour {self.name!r} did not train, so it needs context.num_samples to claim a sample count"
            )
        return context.num_samples

    def describe(self) -> str:
        """The string `parse_behaviour` turns back into this behaviour."""
        params = [f"{f.name}={getattr(self, f.name)}" for f in _fields(self) if f.init and f.metadata.get("parse", True)]
        return self.name + (":" + ",".join(params) if params else "")


def _fields(obj: Any) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(obj)

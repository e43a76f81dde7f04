"""Filling a behaviour's context with exactly what it declares in `Behaviour.needs`.

Whoever runs a behaviour (the CLI's round on the real chain, an in-memory federation) supplies a
`ContextSources`: one optional callable per need, each called only when the behaviour asks for
that need, so nothing is downloaded or computed for a behaviour that does not read it. A source
left None means "not available here"; the field keeps its empty default and the behaviour uses
its documented fallback. No runner ever needs to know which behaviour class it runs.

    sources = ContextSources(previous_global=lambda: prev_state)
    context = fill_context(behaviour, global_state=state, round=r, seed=seed, num_samples=len(ds),
                           sources=sources)
    delta, claimed = behaviour.produce(honest if behaviour.needs_training else None, context)

This module does no I/O: the chain-backed sources of the CLI live in `trainer.runner`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from trainer.behaviours.base import (
    COLLUDERS,
    NEEDS,
    PREVIOUS_DELTA,
    PREVIOUS_GLOBAL,
    REVEALED_UPDATES,
    Behaviour,
    BehaviourContext,
)
from trainer.errors import BehaviourError

__all__ = ["Colluders", "ContextSources", "fill_context"]

State = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Colluders:
    """The colluding group this round: its members' honest deltas, and the round's head counts."""

    honest_deltas: Sequence[State]
    num_trainers: int
    num_malicious: int


@dataclass(frozen=True)
class ContextSources:
    """Where each need comes from; every callable is optional and called at most once."""

    previous_global: Callable[[], State | None] | None = None
    previous_delta: Callable[[], State | None] | None = None
    revealed_updates: Callable[[], Sequence[State]] | None = None
    colluders: Callable[[], Colluders | None] | None = None


def fill_context(
    behaviour: Behaviour, *, global_state: State, round: int, seed: int, num_samples: int | None = None,
    trainer_id: str | None = None, sources: ContextSources | None = None,
) -> BehaviourContext:
    """The context `behaviour.produce` gets: the always-set fields, plus each declared need that
    `sources` can supply."""
    needs = behaviour.needs
    unknown = sorted(needs - NEEDS)
    if unknown:
        raise BehaviourError(
            f"behaviour {behaviour.name!r} declares unknown needs {unknown}; needs are {', '.join(sorted(NEEDS))}"
        )
    src = sources or ContextSources()
    previous_global = src.previous_global() if PREVIOUS_GLOBAL in needs and src.previous_global else None
    previous_delta = src.previous_delta() if PREVIOUS_DELTA in needs and src.previous_delta else None
    revealed = tuple(src.revealed_updates()) if REVEALED_UPDATES in needs and src.revealed_updates else ()
    group = src.colluders() if COLLUDERS in needs and src.colluders else None
    return BehaviourContext(
        global_state=global_state, round=round, seed=seed, num_samples=num_samples, trainer_id=trainer_id,
        previous_global_state=previous_global, previous_delta=previous_delta, revealed_updates=revealed,
        honest_deltas=tuple(group.honest_deltas) if group else (),
        num_trainers=group.num_trainers if group else None, num_malicious=group.num_malicious if group else None,
    )

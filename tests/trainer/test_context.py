"""trainer.context: a behaviour's context holds exactly what it declares in `needs`, and each
source is consulted only for a declared need (so nothing is fetched for a behaviour that does not
read it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from trainer.behaviours import NEEDS, REGISTRY, Behaviour, BehaviourContext, make_behaviour, parse_behaviour
from trainer.behaviours.base import Update
from trainer.context import Colluders, ContextSources, fill_context
from trainer.errors import BehaviourError
from trainer.training import TrainResult

GLOBAL = {"w": torch.ones(2, 2), "b": torch.zeros(2)}


def _delta(v: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 2), v), "b": torch.full((2,), v)}


def _recording_sources(calls: list[str]) -> ContextSources:
    def rec(name: str, value: object):  # type: ignore[no-untyped-def]
        def fn():  # type: ignore[no-untyped-def]
            calls.append(name)
            return value
        return fn

    return ContextSources(
        previous_global=rec("previous_global", _delta(0.5)),
        previous_delta=rec("previous_delta", _delta(2.0)),
        revealed_updates=rec("revealed_updates", [_delta(3.0)]),
        colluders=rec("colluders", Colluders([_delta(1.0), _delta(3.0)], num_trainers=10, num_malicious=2)),
    )


EXPECTED_NEEDS = {
    "honest": {"honest_update"},
    "label_flip": {"honest_update"},
    "sign_flip": {"honest_update"},
    "scaling": {"honest_update"},
    "sample_liar": {"honest_update"},
    "gaussian_noise": set(),
    "alie": {"honest_update", "colluders"},
    "ipm": {"honest_update", "colluders"},
    "copycat": {"revealed_updates"},
    "free_rider": set(),
    "free_rider:mode=global": set(),
    "free_rider:mode=delta": {"previous_global"},
    "free_rider:mode=stale": {"previous_delta", "honest_update"},
    # the attacks against the validation gate and the scorer (issue 11): the colluding ones see
    # only the colluders' own honest updates
    "min_max": {"honest_update", "colluders"},
    "min_sum": {"honest_update", "colluders"},
    "gate_evader": {"honest_update", "colluders"},
    "stretch": {"honest_update"},
    "backdoor": {"honest_update"},
    "sybil": {"honest_update"},
}


@pytest.mark.parametrize(("spec", "needs"), sorted(EXPECTED_NEEDS.items()))
def test_each_behaviour_declares_its_needs_and_gets_only_those(spec: str, needs: set[str]) -> None:
    b = parse_behaviour(spec)
    assert b.needs == needs and b.needs <= NEEDS
    assert b.needs_training == ("honest_update" in needs)
    calls: list[str] = []
    ctx = fill_context(b, global_state=GLOBAL, round=2, seed=5, num_samples=10, trainer_id="t", sources=_recording_sources(calls))
    assert set(calls) == needs - {"honest_update"} and len(calls) == len(set(calls))
    assert (ctx.previous_global_state is not None) == ("previous_global" in needs)
    assert (ctx.previous_delta is not None) == ("previous_delta" in needs)
    assert bool(ctx.revealed_updates) == ("revealed_updates" in needs)
    assert bool(ctx.honest_deltas) == (ctx.num_trainers is not None) == ("colluders" in needs)
    assert (ctx.round, ctx.seed, ctx.num_samples, ctx.trainer_id) == (2, 5, 10, "t")


def test_every_registered_behaviour_is_covered() -> None:
    assert {s.split(":")[0] for s in EXPECTED_NEEDS} == set(REGISTRY)


def test_filled_needs_drive_the_behaviours() -> None:
    honest = TrainResult(delta=_delta(1.0), num_samples=10, loss=0.1, steps=1)
    calls: list[str] = []
    sources = _recording_sources(calls)

    def run(spec: str) -> dict[str, torch.Tensor]:
        b = parse_behaviour(spec)
        ctx = fill_context(b, global_state=GLOBAL, round=1, seed=0, num_samples=10, sources=sources)
        return b.produce(honest if b.needs_training else None, ctx)[0]

    assert torch.equal(run("copycat")["w"], _delta(3.0)["w"])  # the revealed update
    assert torch.equal(run("free_rider:mode=stale")["w"], _delta(2.0)["w"])  # its previous delta
    assert torch.equal(run("free_rider:mode=delta")["w"], torch.full((2, 2), 0.5))  # global - previous global
    assert torch.equal(run("ipm:epsilon=1")["w"], -_delta(2.0)["w"])  # minus the group's mean


def test_missing_sources_leave_fallbacks() -> None:
    """Without sources (a lone CLI trainer): copycat has nothing to copy, ALIE uses its own delta."""
    honest = TrainResult(delta=_delta(1.0), num_samples=10, loss=0.1, steps=1)
    copy = make_behaviour("copycat")
    zero, _ = copy.produce(None, fill_context(copy, global_state=GLOBAL, round=0, seed=0, num_samples=3))
    assert float(zero["w"].abs().sum()) == 0.0
    alie = parse_behaviour("alie:z=1")
    own, _ = alie.produce(honest, fill_context(alie, global_state=GLOBAL, round=0, seed=0, sources=ContextSources()))
    assert torch.equal(own["w"], _delta(1.0)["w"])


def test_a_new_behaviour_is_one_class_and_its_needs() -> None:
    @dataclass
    class Echo(Behaviour):
        """Resends the last global step, scaled."""

        factor: float = 1.0
        name: ClassVar[str] = "echo"

        @property
        def needs(self) -> frozenset[str]:
            return frozenset({"previous_global"})

        def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
            assert context.previous_global_state is not None
            return {k: (context.global_state[k] - context.previous_global_state[k]) * self.factor
                    for k in context.global_state}, self._claim(honest, context)

    ctx = fill_context(Echo(2.0), global_state=GLOBAL, round=1, seed=0, num_samples=4,
                       sources=ContextSources(previous_global=lambda: _delta(0.0)))
    delta, claim = Echo(2.0).produce(None, ctx)
    assert torch.equal(delta["w"], torch.full((2, 2), 2.0)) and claim == 4


def test_unknown_needs_are_refused() -> None:
    @dataclass
    class Odd(Behaviour):
        name: ClassVar[str] = "odd"

        @property
        def needs(self) -> frozenset[str]:
            return frozenset({"the_future"})

        def produce(self, honest: TrainResult | None, context: BehaviourContext) -> tuple[Update, int]:
            raise AssertionError

    with pytest.raises(BehaviourError, match="unknown needs"):
        fill_context(Odd(), global_state=GLOBAL, round=0, seed=0)

"""The stronger attacks: each submits what it says, inside the thresholds it claims to respect."""

from __future__ import annotations

import pytest
import torch

from market.models import flatten
from trainer.behaviours import (
    Backdoor,
    BehaviourContext,
    GateEvader,
    MinMax,
    MinSum,
    Stretch,
    Sybil,
    apply_trigger,
    backdoor_success,
    parse_behaviour,
)
from trainer.behaviours.base import COLLUDERS, HONEST_UPDATE
from trainer.data import Dataset, load_builtin
from trainer.errors import BehaviourError
from trainer.training import TrainResult

KEYS = ("w", "b")


def _delta(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g) + 1.0, "b": torch.randn(3, generator=g)}


GLOB = {"w": torch.ones(4, 3), "b": torch.zeros(3)}
GROUP = [_delta(s) for s in range(4)]
HONEST = TrainResult(delta=GROUP[0], num_samples=50, loss=0.5, steps=2)


def _ctx(**kw: object) -> BehaviourContext:
    return BehaviourContext(global_state=GLOB, round=1, seed=3, num_samples=50, honest_deltas=GROUP, **kw)  # type: ignore[arg-type]


def _stack() -> torch.Tensor:
    return torch.stack([flatten(d, KEYS) for d in GROUP]).double()


def test_min_max_stays_inside_the_honest_spread_and_uses_all_of_it() -> None:
    delta, claim = MinMax().produce(HONEST, _ctx())
    v = flatten(delta, KEYS).double()
    stack = _stack()
    spread = float(torch.cdist(stack, stack).max())
    far = float((stack - v).norm(dim=1).max())
    assert far <= spread * (1 + 1e-5) and far >= 0.99 * spread
    assert float((v - stack.mean(0)).norm()) > 0.1  # it did move off the mean
    assert claim == 50


def test_min_sum_stays_inside_the_largest_summed_distance() -> None:
    delta, _ = MinSum().produce(HONEST, _ctx())
    v = flatten(delta, KEYS).double()
    stack = _stack()
    d = torch.cdist(stack, stack)
    bound = float((d**2).sum(dim=1).max())
    total = float(((stack - v).norm(dim=1) ** 2).sum())
    assert total <= bound * (1 + 1e-5) and total >= 0.99 * bound


@pytest.mark.parametrize("direction", ["std", "unit", "sign"])
def test_min_max_directions_point_against_the_mean(direction: str) -> None:
    delta, _ = MinMax(direction=direction).produce(HONEST, _ctx())
    mean = _stack().mean(0)
    shift = flatten(delta, KEYS).double() - mean
    assert float(shift @ mean) < 0


def test_gate_evader_colluders_do_not_send_the_same_bytes() -> None:
    a, _ = GateEvader().produce(HONEST, _ctx())
    b, _ = GateEvader().produce(HONEST, BehaviourContext(global_state=GLOB, round=1, seed=4, num_samples=50,
                                                         honest_deltas=GROUP))
    va, vb = flatten(a, KEYS), flatten(b, KEYS)
    assert not torch.equal(va, vb)
    mean = _stack().mean(0).float()
    assert float(torch.nn.functional.cosine_similarity(va, -mean, dim=0)) > 0.95
    assert float(va.norm()) == pytest.approx(0.3 * float(mean.norm()), rel=0.1)


def test_stretch_is_a_longer_honest_step() -> None:
    delta, claim = Stretch().produce(HONEST, _ctx())
    assert torch.equal(flatten(delta, KEYS), 2 * flatten(HONEST.delta, KEYS)) and claim == 50


def test_sybil_identities_split_the_data_exactly_once() -> None:
    ds = load_builtin("digits")
    parts = [Sybil(k=3, index=i).transform_dataset(ds) for i in range(3)]
    assert sum(len(p) for p in parts) == len(ds)
    rows = torch.cat([p.x for p in parts])
    assert torch.equal(torch.sort(rows.sum(1)).values, torch.sort(ds.x.sum(1)).values)
    with pytest.raises(BehaviourError, match="0 <= index < k"):
        Sybil(k=2, index=2)


def test_trigger_is_a_corner_patch() -> None:
    flat = torch.zeros(2, 64)
    stamped = apply_trigger(flat).view(2, 8, 8)
    assert stamped[:, 6:, 6:].eq(1).all() and stamped.sum() == 2 * 4
    img = torch.zeros(1, 1, 28, 28)
    assert apply_trigger(img)[0, 0, 21:, 21:].eq(1).all() and apply_trigger(img).sum() == 49
    with pytest.raises(BehaviourError, match="no trigger"):
        apply_trigger(torch.zeros(2, 10))


def test_backdoor_poisons_copies_and_claims_its_true_count() -> None:
    ds = Dataset(torch.rand(40, 64), torch.arange(40) % 10, 10, "d")
    b = Backdoor(target=7, poison=0.25)
    poisoned = b.transform_dataset(ds)
    assert len(poisoned) == 50 and poisoned.y[40:].eq(7).all()
    assert poisoned.x[40:].view(10, 8, 8)[:, 6:, 6:].eq(1).all()
    result = TrainResult(delta=GROUP[1], num_samples=len(poisoned), loss=0.1, steps=1)
    delta, claim = Backdoor(boost=3).produce(result, _ctx())
    assert claim == 50 == _ctx().num_samples
    assert torch.equal(flatten(delta, KEYS), 3 * flatten(GROUP[1], KEYS))
    with pytest.raises(BehaviourError, match="target 12"):
        Backdoor(target=12).transform_dataset(ds)


def test_backdoor_success_counts_triggered_non_targets() -> None:
    class Always(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 10)
            out[:, 7] = 1
            return out

    y = torch.arange(20) % 10
    assert backdoor_success(Always(), torch.rand(20, 64), y, target=7) == 1.0
    assert backdoor_success(Always(), torch.rand(20, 64), y, target=3) == 0.0


def test_needs_and_specs() -> None:
    for b in (MinMax(), MinSum(), GateEvader()):
        assert b.needs == frozenset({HONEST_UPDATE, COLLUDERS})
    for b in (Stretch(), Backdoor(), Sybil()):
        assert b.needs == frozenset({HONEST_UPDATE})
    assert parse_behaviour("min_max:direction=sign") == MinMax(direction="sign")
    assert parse_behaviour("sybil:k=4,index=1") == Sybil(k=4, index=1)
    assert parse_behaviour("backdoor:target=3,boost=5") == Backdoor(target=3, boost=5.0)

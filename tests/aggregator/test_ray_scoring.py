"""`[aggregator] compute = "ray"`: coalition utilities measured on Ray workers give the record a
local round gives, byte for byte; the scorers ask for the same coalitions in the same order."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from aggregator.errors import SettingsError
from aggregator.ray_scoring import RayExecutor, executor_for
from aggregator.round import compute_from_inputs
from aggregator.scoring import ExactShapley, GTGShapley, LeaveOneOut, make_utility, restrict
from aggregator.service import config_from_settings
from aggregator.settings import load_aggregator_settings
from lab.inprocess import service_config
from lab.rounds import synthetic_round


def _evaluate(vector: torch.Tensor) -> float:
    return -float(((vector - 1.0) ** 2).sum())


def _utility(executor: RayExecutor | None, order: list[frozenset[int]]) -> Any:
    gen = torch.Generator().manual_seed(3)
    updates = torch.randn(7, 16, generator=gen)
    updates[5] = -3 * updates[0]  # one harmful player, so marginals differ in sign

    def ledger(c: frozenset[int], measure: Any) -> float:
        order.append(c)
        return float(measure())

    return make_utility(lambda sub: sub.mean(0), _evaluate, updates, torch.zeros(16), ledger=ledger, executor=executor)


def test_settings_name_the_compute_backend() -> None:
    config = config_from_settings(load_aggregator_settings({"compute": "ray", "ray_address": "ray://head:10001"}))
    assert (config.compute, config.ray_address) == ("ray", "ray://head:10001")
    assert config_from_settings(load_aggregator_settings(None)).compute == "local"
    with pytest.raises(SettingsError, match="compute"):
        load_aggregator_settings({"compute": "gpu"})


def test_bad_ray_address_is_a_one_line_settings_error() -> None:
    with pytest.raises(SettingsError, match="no Ray cluster answers at '127.0.0.1:1'") as info:
        executor_for("ray", "127.0.0.1:1", 1)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("scorer", [ExactShapley(), LeaveOneOut(), GTGShapley(eps=1e-3, tolerance=0.01)],
                         ids=lambda s: s.name)
def test_scorers_on_ray_use_the_same_values_in_the_same_order(ray_runtime: Any, scorer: Any) -> None:
    local_order: list[frozenset[int]] = []
    ray_order: list[frozenset[int]] = []
    players = [f"p{i}" for i in range(7)]
    local = scorer.score(players, _utility(None, local_order), 11)
    executor = RayExecutor(threads=1)
    remote = _utility(executor, ray_order)
    assert remote.parallel and executor.workers == 2
    on_ray = scorer.score(players, remote, 11)
    assert on_ray == local
    assert ray_order == local_order
    assert not remote.measured  # nothing measured ahead was left unused (no wasted evaluations)


def test_restricted_sub_game_prefetches_through_to_the_full_game(ray_runtime: Any) -> None:
    order: list[frozenset[int]] = []
    full = _utility(RayExecutor(threads=1), order)
    sub = restrict(full, [2, 4, 6])
    assert sub.prefetch([frozenset({0, 2}), frozenset({1})]) == [full(frozenset({2, 6})), full(frozenset({4}))]  # type: ignore[attr-defined]


def test_a_round_scored_on_ray_has_the_local_record_bytes(ray_runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = synthetic_round(12)  # > 8 updates: the gate's removal path and GTG Shapley
    local = compute_from_inputs(inputs, service_config())
    executor = executor_for("ray", None, 1)
    assert executor is not None
    asked: list[int] = []
    real = executor.evaluate
    monkeypatch.setattr(executor, "evaluate", lambda u, cs: (asked.append(len(cs)), real(u, cs))[1])
    on_ray = compute_from_inputs(inputs, dataclasses.replace(service_config(), compute="ray"))
    assert sum(asked) > 0  # the utilities were measured on the workers
    assert local.fields["scorer"] == "gtg_shapley"
    assert on_ray.model_bytes == local.model_bytes
    assert on_ray.record("QmModel").to_bytes() == local.record("QmModel").to_bytes()

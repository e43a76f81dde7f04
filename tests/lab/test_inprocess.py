"""The in-memory federation (`lab.inprocess`) computes exactly what the service computes: the
same round records and model bytes, byte for byte, from the same updates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aggregator.round import compute_round, publish_round
from aggregator.valset import ValidationSet
from lab.inprocess import LocalProject, RunSpec, service_config, simulate, trainer_address
from market.storage import EmbeddedStore

#: 5 trainers on digits, the last one replaying the last global step (round 1 has one).
SPEC = RunSpec(rule="trimmed_mean:beta=0.1", attack="free_rider:mode=delta", fraction=0.2, partition="iid",
               dataset="digits", n=5, rounds=2, epochs=1, lr=0.05, batch_size=32, score=True)


@pytest.fixture(scope="module")
def federation() -> tuple[dict, LocalProject]:
    projects: list[LocalProject] = []
    result = simulate(SPEC, on_round=lambda p: projects.append(p))
    return result, projects[-1]


def test_service_compute_round_gives_the_same_bytes(federation: tuple[dict, LocalProject], tmp_path: Path) -> None:
    _, project = federation
    store = EmbeddedStore(tmp_path / "store")
    for data in project.blobs.values():
        assert project.blobs[store.add(data)] == data  # the same CIDs as the in-memory store
    config = dataclasses.replace(service_config(score=SPEC.score), rule=SPEC.rule)
    for r, ctx in enumerate(project.contexts):
        record = project.records[r]
        valset = ValidationSet.from_npz(store.cat(record.validation_cid), ctx.spec.model, record.validation_cid)
        computed = compute_round(ctx, store, config, valset, record.validation_cid)
        assert computed.model_bytes == project.models[r]
        published = publish_round(store, computed)
        assert published.record_bytes == record.to_bytes()
        assert published.record_cid in project.blobs


def test_the_federation_feeds_the_filters_what_the_service_does(federation: tuple[dict, LocalProject]) -> None:
    result, project = federation
    replayer = trainer_address(4)
    reasons = [{v.trainer: v.reason for v in rec.verdicts}[replayer] for rec in project.records]
    # round 0 has no global step to replay (a zero update); round 1's replay is caught only
    # because the last global step reaches the free-rider filter, as on the service
    assert reasons == ["zero_update", "stale_update"]
    assert result["cumulative_rewards"]["4"] == 0
    assert sum(result["cumulative_rewards"].values()) == sum(rec.allocation for rec in project.records)
    assert project.records[1].base_model_cid == project.records[0].model_cid

"""The gate's and the pay's paired noise term on the in-memory federation (the service's own round
computation): it keeps honest updates a constant slack would cut, it is recorded, and a replay
from the record checks it like every other evaluation."""

from __future__ import annotations

import dataclasses

from aggregator.round import compute_from_inputs, config_from_record
from aggregator.valset import ValidationSet
from lab.inprocess import LocalProject, RunSpec, service_config, simulate
from market.protocol.evaluations import tolerance_for


def _run(gate_noise_z: float) -> tuple[dict, LocalProject]:  # type: ignore[type-arg]
    config = service_config(score=True)
    # no constant slack at all: only the paired term stands between an honest update and `harmful`
    filters = dataclasses.replace(config.filters, gate_tolerance=0.0, gate_floor=0.0, gate_noise_z=gate_noise_z)
    config = dataclasses.replace(config, filters=filters)
    spec = RunSpec(rule=config.rule, attack="none", fraction=0.0, partition="iid", dataset="digits", n=4, rounds=3,
                   epochs=2, lr=0.05, batch_size=32, score=True)
    kept: list[LocalProject] = []
    out = simulate(spec, config=config, on_round=lambda p: kept.append(p) if not kept else None)
    return out, kept[0]


def _rejected(out: dict) -> int:  # type: ignore[type-arg]
    return sum(not v["accepted"] for r in out["rounds"] for v in r["verdicts"])


def test_the_paired_term_keeps_equal_updates_a_zero_slack_would_cut_and_replays_from_the_record() -> None:
    plain, _ = _run(0.0)
    paired, project = _run(3.0)
    # with zero slack the best of 16 coalitions wins by chance and the gate cuts honest updates
    assert _rejected(plain) >= 2
    assert _rejected(paired) < _rejected(plain)
    evaluations = [e for rec in project.records for e in rec.evaluations if e.subject == "paired"]
    assert evaluations and all(e.metric == "loss_se" and e.value > 0 and e.baseline is not None for e in evaluations)

    r = next(i for i, rec in enumerate(project.records) if any(e.subject == "paired" for e in rec.evaluations))
    record = project.records[r]
    valset = ValidationSet.from_npz(project.blobs[record.validation_cid], project.spec.model)
    inputs = project.inputs(project.contexts[r], valset, record.validation_cid)
    replay = compute_from_inputs(inputs, config_from_record(record), recorded=record.evaluations)
    assert replay.record(record.model_cid).to_bytes() == record.to_bytes()
    assert replay.ledger.checks and not replay.ledger.failures() and not replay.ledger.missing

    k = next(i for i, e in enumerate(record.evaluations) if e.subject == "paired")
    e = record.evaluations[k]
    lie = e.model_copy(update={"value": e.value + 10 * tolerance_for("loss_se").allowed(e.value)})
    altered = [*record.evaluations[:k], lie, *record.evaluations[k + 1:]]
    (bad,) = compute_from_inputs(inputs, config_from_record(record), recorded=altered).ledger.failures()
    assert bad.evaluation.subject == "paired" and bad.evaluation.baseline == e.baseline

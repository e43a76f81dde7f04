"""Recorded evaluations: the tolerance check, the lying bound, and old records staying loadable
(and telling the audit their format predates cross-machine audits)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from market.protocol.documents import RoundRecord
from market.protocol.evaluations import (
    CROSS_MACHINE_VERSION,
    TOLERANCES,
    RecordedEvaluation,
    Tolerance,
    check_evaluation,
    shapley_reward_bound,
    tolerance_for,
)

_RECORD = {
    "project_id": 1, "round": 0, "chain_id": 31337, "contract": "0x" + "ab" * 20, "code_version": "x",
    "seed": 1, "base_model_cid": "b", "model_cid": "m", "model_digest": "0x00", "validation_cid": "v",
    "rule": "median", "filters": {}, "scorer": "exact_shapley", "hyperparams": {}, "inputs": [], "verdicts": [],
    "scores": {}, "cumulative_scores": {}, "rewards": {}, "cumulative_rewards": {}, "allocation": 0,
    "rewards_root": "0x00", "proofs": {}, "metrics": {},
}


def test_check_evaluation_is_relative_plus_absolute() -> None:
    tol = Tolerance(rel=1e-5, abs=1e-6)
    assert check_evaluation(-0.5, -0.5, tol).ok
    edge = check_evaluation(-0.5 - 5.9e-6, -0.5, tol)
    assert edge.ok and edge.allowed == pytest.approx(6e-6)
    out = check_evaluation(-0.5 - 1e-5, -0.5, tol)
    assert not out.ok and out.difference == pytest.approx(1e-5) and out.relative == pytest.approx(2e-5)
    assert check_evaluation(0.0, 0.0, tol).relative == 0.0
    assert set(TOLERANCES) == {"neg_loss", "loss", "accuracy", "loss_se"}
    with pytest.raises(KeyError, match="known: accuracy"):
        tolerance_for("f1")


def test_reward_bound() -> None:
    # R 2 n delta / Phi + 2 per member, capped at R
    # (0.2 and 1e-5 are binary fractions: the ceiling may add a wei)
    assert 0 <= shapley_reward_bound(10**18, 4, 0.2, 1e-5) - (4 * 10**14 + 2) <= 1
    assert shapley_reward_bound(10**18, 4, 0.2, 1e-5, members=3) - shapley_reward_bound(10**18, 4, 0.2, 1e-5) == 4
    assert shapley_reward_bound(10**18, 4, 0.0, 1e-5) == 10**18
    assert shapley_reward_bound(100, 4, 1e-9, 1.0) == 100


def test_records_keep_their_bytes_and_old_ones_say_they_predate() -> None:
    old = RoundRecord.model_validate({**_RECORD, "version": 1})
    assert old.evaluations == [] and old.predates_cross_machine_audits
    assert "evaluations" not in json.loads(old.to_bytes())  # an old record keeps its bytes and CID
    ev = RecordedEvaluation(subject="coalition", members=(0, 2), metric="neg_loss", value=-0.25)
    new = RoundRecord.model_validate({**_RECORD, "version": CROSS_MACHINE_VERSION, "evaluations": [ev]})
    assert not new.predates_cross_machine_audits
    again = RoundRecord.from_bytes(new.to_bytes())
    assert again == new and again.evaluations[0].members == (0, 2)
    with pytest.raises(ValidationError):
        RecordedEvaluation(subject="model", metric="loss", value=float("nan"))

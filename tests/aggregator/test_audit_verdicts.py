"""What the audit says about a round it cannot rebuild here, and how a finding reads."""

from __future__ import annotations

from aggregator.audit import CANNOT_VERIFY, FAIL, PASS, RoundAudit, _unverifiable
from market.models import ModelSpec
from market.protocol.documents import ProjectSpec, RoundRecord
from market.protocol.evaluations import CROSS_MACHINE_VERSION

_RECORD = {
    "project_id": 1, "round": 0, "chain_id": 31337, "contract": "0x" + "ab" * 20, "code_version": "x",
    "seed": 1, "base_model_cid": "b", "model_cid": "m", "model_digest": "0x00", "validation_cid": "v",
    "rule": "median", "filters": {}, "scorer": "exact_shapley", "hyperparams": {}, "inputs": [], "verdicts": [],
    "scores": {}, "cumulative_scores": {}, "rewards": {}, "cumulative_rewards": {}, "allocation": 0,
    "rewards_root": "0x00", "proofs": {}, "metrics": {},
}
BUILTIN = ProjectSpec(model=ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10))
USER = ProjectSpec(model=ModelSpec(architecture="mypkg.nets:build", input_shape=(64,), num_classes=10))


def test_old_records_and_user_models_cannot_be_verified_with_a_reason() -> None:
    new = RoundRecord.model_validate({**_RECORD, "version": CROSS_MACHINE_VERSION})
    old = RoundRecord.model_validate({**_RECORD, "version": 1})
    assert _unverifiable(new, BUILTIN, False) is None
    assert "predates cross-machine audits" in str(_unverifiable(old, BUILTIN, False))
    reason = str(_unverifiable(new, USER, False))
    assert "mypkg.nets:build" in reason and "--allow-user-models" in reason
    assert _unverifiable(new, USER, True) is None


def test_verdicts_and_findings() -> None:
    r = RoundAudit(0, "finalized", 10, "cid")
    assert r.verdict == PASS
    r.cannot_verify = "record format 1 predates cross-machine audits"
    assert r.verdict == CANNOT_VERIFY and r.ok
    r.fail("evaluations", "neg_loss of coalition {0xA}: off", recorded=-1.0, rebuilt=-0.9, difference=0.1, allowed=1e-5)
    doc = r.to_json()
    assert r.verdict == FAIL and doc["verdict"] == "fail" and doc["checks"]["evaluations"] is False
    assert doc["findings"] == [{"check": "evaluations", "message": "neg_loss of coalition {0xA}: off",
                                "recorded": -1.0, "rebuilt": -0.9, "difference": 0.1, "allowed": 1e-5}]
    assert doc["problems"] == ["round 0: neg_loss of coalition {0xA}: off"]

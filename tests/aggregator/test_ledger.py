"""The evaluation ledger: records what a round measured; replaying uses the recorded values and
checks each against this machine's measurement."""

from __future__ import annotations

from aggregator.round.ledger import EvaluationLedger
from market.protocol.evaluations import RecordedEvaluation


def test_recording_keeps_first_use_order_and_measures_once() -> None:
    book = EvaluationLedger()
    calls = []

    def measure(v: float) -> float:
        calls.append(v)
        return v

    assert book.value("coalition", [2, 0], "neg_loss", lambda: measure(-1.0)) == -1.0
    assert book.value("coalition", [0, 2], "neg_loss", lambda: measure(-9.0)) == -1.0  # same coalition
    assert book.values("model", (), ("accuracy", "loss"), lambda: (0.5, 1.25)) == [0.5, 1.25]
    assert calls == [-1.0]
    assert [(e.subject, e.members, e.metric, e.value) for e in book.records()] == [
        ("coalition", (0, 2), "neg_loss", -1.0), ("model", (), "accuracy", 0.5), ("model", (), "loss", 1.25)]
    assert not book.checks and not book.replaying


def test_replay_uses_recorded_values_and_reports_what_is_off_missing_or_unused() -> None:
    recorded = [
        RecordedEvaluation(subject="coalition", members=(0,), metric="neg_loss", value=-1.0000001),
        RecordedEvaluation(subject="coalition", members=(1,), metric="neg_loss", value=-2.5),
        RecordedEvaluation(subject="base", members=(), metric="loss", value=3.0),
    ]
    book = EvaluationLedger(recorded)
    assert book.value("coalition", [0], "neg_loss", lambda: -1.0) == -1.0000001  # inside: recorded value
    assert book.value("coalition", [1], "neg_loss", lambda: -2.0) == -2.5  # outside: still the recorded one
    assert book.value("coalition", [0, 1], "neg_loss", lambda: -0.5) == -0.5  # not recorded: measured
    assert [c.check.ok for c in book.checks] == [True, False]
    (bad,) = book.failures()
    assert bad.evaluation.members == (1,) and bad.check.difference == 0.5
    assert [e.members for e in book.missing] == [(0, 1)]
    assert [e.subject for e in book.unused()] == ["base"]


def test_a_paired_evaluation_is_keyed_by_both_coalitions_and_replays_with_its_own_tolerance() -> None:
    book = EvaluationLedger()
    assert book.value("paired", [2, 0, 1], "loss_se", lambda: 0.002, baseline=[1, 0]) == 0.002
    assert book.value("paired", [0, 1, 2], "loss_se", lambda: 0.009, baseline=[0, 2]) == 0.009  # another pair
    (first, second) = book.records()
    assert (first.members, first.baseline, second.baseline) == ((0, 1, 2), (0, 1), (0, 2))
    replay = EvaluationLedger(book.records())
    assert replay.value("paired", [0, 1, 2], "loss_se", lambda: 0.002 * (1 + 5e-4), baseline=[0, 1]) == 0.002
    assert replay.value("paired", [0, 1, 2], "loss_se", lambda: 0.0095, baseline=[0, 2]) == 0.009
    assert [c.check.ok for c in replay.checks] == [True, False]  # 1e-3 relative
    assert not replay.missing and not replay.unused()


def test_records_without_paired_evaluations_keep_their_bytes() -> None:
    from market.protocol.documents import RoundRecord

    plain = RecordedEvaluation(subject="coalition", members=(0,), metric="neg_loss", value=-1.0)
    paired = RecordedEvaluation(subject="paired", members=(0, 1), metric="loss_se", value=0.01, baseline=(0,))
    data = {"project_id": 1, "round": 0, "chain_id": 1, "contract": "0x", "code_version": "x", "seed": 0,
            "base_model_cid": "a", "model_cid": "b", "model_digest": "0x", "validation_cid": "c", "rule": "fedavg",
            "filters": {}, "scorer": "exact", "hyperparams": {}, "inputs": [], "verdicts": [], "scores": {},
            "cumulative_scores": {}, "rewards": {}, "cumulative_rewards": {}, "allocation": 0, "rewards_root": "0x",
            "proofs": {}, "metrics": {}}
    old = RoundRecord(**data, evaluations=[plain]).to_bytes()
    assert b"baseline" not in old and RoundRecord.from_bytes(old).to_bytes() == old
    new = RoundRecord(**data, evaluations=[plain, paired]).to_bytes()
    assert new.count(b'"baseline"') == 1 and RoundRecord.from_bytes(new).evaluations[1].baseline == (0,)

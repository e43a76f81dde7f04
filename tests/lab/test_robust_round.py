"""The issue-11 case on the in-memory federation (the service's own round computation): four
digits trainers, one sign-flipping x4. The default defence keeps the accuracy of the round without
the attacker and pays the attacker nothing."""

from __future__ import annotations

from lab.inprocess import RunSpec, service_config, simulate


def _run(attack: str) -> dict:  # type: ignore[type-arg]
    config = service_config(score=True)
    spec = RunSpec(rule=config.rule, attack=attack, fraction=0.25, partition="iid", dataset="digits", n=4, rounds=3,
                   epochs=2, lr=0.05, batch_size=32, score=True)
    return simulate(spec, config=config)


def test_one_sign_flipper_among_four_is_gated_and_paid_nothing() -> None:
    clean, attacked = _run("none"), _run("sign_flip:k=4")
    assert clean["final_test_accuracy"] > 0.85
    assert attacked["final_test_accuracy"] >= clean["final_test_accuracy"] - 0.03
    (attacker,) = attacked["malicious"]
    for r in attacked["rounds"]:
        verdicts = {v["trainer"]: v for v in r["verdicts"]}
        assert verdicts[attacker]["reason"] == "harmful"
        assert all(v["accepted"] for t, v in verdicts.items() if t != attacker)
    assert attacked["cumulative_rewards"][str(attacker)] == 0
    assert sum(attacked["cumulative_rewards"].values()) == 3 * 10**18
    assert all(v["accepted"] for r in clean["rounds"] for v in r["verdicts"])

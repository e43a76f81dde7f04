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


def _pay(config_changes: dict[str, object]) -> dict:  # type: ignore[type-arg]
    import dataclasses

    config = service_config(score=True)
    config = dataclasses.replace(config, filters=dataclasses.replace(config.filters, **config_changes))
    spec = RunSpec(rule=config.rule, attack="sample_liar", fraction=0.2, partition="iid", dataset="digits", n=5,
                   rounds=3, epochs=2, lr=0.05, batch_size=32, score=True)
    return simulate(spec, config=config)


def test_equal_data_earns_equal_pay_and_a_claim_lie_earns_nothing_more() -> None:
    """Five IID trainers (statistically equal data), one claiming 10x its samples: the honest
    four earn within 1.25x of each other; the liar, whose claim the data part caps at the median,
    earns within 5 % of the best-paid honest one (its update is honest; what is left is FedAvg's
    3x-median weight cap, which makes its step count more in the coalitions its score is made
    of). Without the claim cap the same lie buys more than half of every round."""
    out = _pay({})
    (liar,) = out["malicious"]
    rewards = {int(k): v for k, v in out["cumulative_rewards"].items()}
    honest = [v for t, v in rewards.items() if t != liar]
    assert len(honest) == 4 and min(honest) > 0
    assert max(honest) / min(honest) <= 1.25
    assert rewards[liar] <= 1.05 * max(honest)
    uncapped = {int(k): v for k, v in _pay({"pay_claim_cap": False})["cumulative_rewards"].items()}
    assert uncapped[liar] > sum(uncapped.values()) / 2

"""Plateau adaptation of the server learning rate and the trainers' local epochs, round to round."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from market.protocol.policy import AdaptSchedule

if TYPE_CHECKING:
    from aggregator.round.config import RoundConfig

__all__ = ["AdaptSchedule", "adapt_hyperparams", "initial_state"]


def initial_state(config: RoundConfig, base_hyperparams: Mapping[str, Any]) -> dict[str, Any]:
    """The adaptation state round 0 starts from (later rounds carry theirs in the record)."""
    return {
        "server_lr": float(config.server_lr),
        "best_accuracy": None,
        "stale_rounds": 0,
        "epochs": int(base_hyperparams.get("epochs", config.adapt.base_epochs)),
    }


def adapt_hyperparams(
    state_in: Mapping[str, Any], accuracy: float, policy: AdaptSchedule, base_hyperparams: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Plateau rule: track the best validation accuracy; after `patience` rounds without an
    improvement of `min_delta`, lower the server learning rate and ask for more local epochs.
    Returns (state for the next round, hyper-parameters for the next round's trainers)."""
    state = dict(state_in)
    best = state.get("best_accuracy")
    if best is None or accuracy > float(best) + policy.min_delta:
        state["best_accuracy"] = float(accuracy)
        state["stale_rounds"] = 0
    else:
        state["stale_rounds"] = int(state.get("stale_rounds", 0)) + 1
    if policy.enabled and state["stale_rounds"] >= policy.patience:
        state["server_lr"] = max(policy.min_server_lr, float(state["server_lr"]) * policy.lr_factor)
        state["epochs"] = min(policy.max_epochs, int(state["epochs"]) + policy.epochs_step)
        state["stale_rounds"] = 0
    hyper = dict(base_hyperparams)
    if int(state["epochs"]) != int(base_hyperparams.get("epochs", policy.base_epochs)) or "epochs" in hyper:
        hyper["epochs"] = int(state["epochs"])
    return state, hyper

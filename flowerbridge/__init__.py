"""flowerbridge: a Flower app (flwr 1.42, Message API) as a paid, audited market project.

Two lines turn an existing app into one (docs/flower.md):

    app = ClientApp(mods=[market_mod])                                   # client_app.py
    strategy = MarketStrategy.from_run_config(FedAvg(...), context.run_config)   # server_app.py

`MarketStrategy` runs each Flower round as one market round with the aggregator service (validation,
filters, robust rule, scoring, rewards, publish, finalize on chain) and gives Flower the model the
market published; `market_mod` makes each client a trainer (join, update against the round's base
model, seal, upload, commit, reveal, claim). The keys of the run and node config are in
`flowerbridge.config`; errors are a branch of `market.errors` (`flowerbridge.errors`).
"""

from __future__ import annotations

from flowerbridge.client import CLAIM_KEY, PROJECT_KEY, ROUND_KEY, MarketTrainer, market_mod, update_from_weights
from flowerbridge.config import KEYS, NODE_KEYS, Account, BridgeConfig, parse_account
from flowerbridge.errors import BridgeConfigError, BridgeError, RoundOutOfStep
from flowerbridge.server import MarketRounds, RoundOutcome, require_project
from flowerbridge.strategy import MarketStrategy

__all__ = [
    "CLAIM_KEY",
    "KEYS",
    "NODE_KEYS",
    "PROJECT_KEY",
    "ROUND_KEY",
    "Account",
    "BridgeConfig",
    "BridgeConfigError",
    "BridgeError",
    "MarketRounds",
    "MarketStrategy",
    "MarketTrainer",
    "RoundOutOfStep",
    "RoundOutcome",
    "market_mod",
    "parse_account",
    "require_project",
    "update_from_weights",
]

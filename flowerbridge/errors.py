"""The bridge's errors: a branch of the one tree (`market.errors`), with its exit codes.

    MarketError
    └── BridgeError                          1   the Flower run and the market disagree
        ├── BridgeConfigError                2   a run-config or node-config key is missing or wrong
        └── RoundOutOfStep                  10   the Flower round is not the project's open round

Errors the bridge passes through keep their own branch and code: an unknown project is
`trainer.errors.UnknownProject` (18), an account that is not the project's aggregator is an
`aggregator.errors.AggregatorError` (20), a missed deadline `trainer.errors.DeadlinePassed` (17).
"""

from __future__ import annotations

from market.errors import ConfigError, ExitCode, MarketError

__all__ = ["BridgeConfigError", "BridgeError", "RoundOutOfStep"]


class BridgeError(MarketError):
    """The Flower run and the market project do not fit together."""


class BridgeConfigError(BridgeError, ConfigError):
    """A run-config or node-config key of the bridge is missing, mistyped or out of range."""

    exit_code = ExitCode.CONFIG


class RoundOutOfStep(BridgeError):
    """The Flower round does not map onto the project's open round (the chain moved on without us)."""

    exit_code = ExitCode.PROTOCOL

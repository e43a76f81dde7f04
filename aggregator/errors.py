"""The one exception tree of the `aggregator` package.

A branch of the market's one tree (`market.errors`, where the whole tree and the exit-code table
are drawn): `AggregatorError` is a `MarketError`. Every message says what is wrong, then what to
do, on one line; CLIs print `str(error)` and exit with `error.exit_code`.
"""

from __future__ import annotations

from market.errors import ExitCode, MarketError


class AggregatorError(MarketError):
    """Root of every error raised by `aggregator`."""

    exit_code: int = ExitCode.AGGREGATOR


class RuleConfigError(AggregatorError):
    """An aggregation rule, filter or scorer spec names an unknown rule or a bad parameter."""

    exit_code = ExitCode.RULE_CONFIG


class InvalidUpdates(AggregatorError):
    """The stacked updates (or their weights) have the wrong shape, dtype or non-finite values."""

    exit_code = ExitCode.INVALID_UPDATES


class ScoringError(AggregatorError):
    """Contribution scoring cannot run: too many players for exact Shapley, bad utility values."""

    exit_code = ExitCode.SCORING


class RewardError(AggregatorError):
    """A reward split cannot be computed: bad amount, bad address, non-finite score."""

    exit_code = ExitCode.REWARD


class JournalError(AggregatorError):
    """The journal directory cannot be written or holds a malformed entry."""

    exit_code = ExitCode.JOURNAL


class ValidationSetError(AggregatorError):
    """The validation set is misconfigured, missing or malformed."""

    exit_code = ExitCode.VALIDATION_SET


class SettingsError(AggregatorError):
    """The `[aggregator]` configuration is malformed (a configuration error: exit code 2)."""

    exit_code = ExitCode.CONFIG

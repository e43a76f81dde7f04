"""The one exception tree of the `aggregator` package.

Every message says what is wrong, then what to do, on one line. CLIs print `str(error)` and exit
with `error.exit_code` (the aggregator's codes start at 20 so they never collide with `market`'s).
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Root of every error raised by `aggregator`."""

    exit_code: int = 20


class RuleConfigError(AggregatorError):
    """An aggregation rule, filter or scorer spec names an unknown rule or a bad parameter."""

    exit_code = 21


class InvalidUpdates(AggregatorError):
    """The stacked updates (or their weights) have the wrong shape, dtype or non-finite values."""

    exit_code = 22


class ScoringError(AggregatorError):
    """Contribution scoring cannot run: too many players for exact Shapley, bad utility values."""

    exit_code = 23


class RewardError(AggregatorError):
    """A reward split cannot be computed: bad amount, bad address, non-finite score."""

    exit_code = 24

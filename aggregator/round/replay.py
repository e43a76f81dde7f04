"""The settings a published round was computed with, for replays (the audit)."""

from __future__ import annotations

from typing import Any

from aggregator.filters import FilterConfig
from aggregator.round.adapt import AdaptSchedule
from aggregator.round.config import RoundConfig
from market.errors import MarketError
from market.protocol.documents import RoundRecord

__all__ = ["config_from_record"]


def config_from_record(record: RoundRecord, **io: Any) -> RoundConfig:
    """The RoundConfig a record says its round was computed with; `io` sets the fields that do not
    change the result (fetch workers and timeouts, allow_user_models)."""
    agg = record.aggregation
    try:
        return RoundConfig(
            rule=record.rule,
            filters=FilterConfig.from_record(record.filters),
            scorer=record.scorer,
            server_lr=float((agg.get("state_in") or {}).get("server_lr", agg.get("server_lr", 1.0))),
            adapt=AdaptSchedule(**agg.get("adapt", {})),
            threads=int(agg.get("threads", 1)),
            **io,
        )
    except (TypeError, ValueError) as exc:
        raise MarketError(f"round {record.round}'s record holds settings this code cannot replay ({exc})") from None

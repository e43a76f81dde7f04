"""`RoundConfig`: every choice of the aggregator that a round's result depends on."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from aggregator.filters import FilterConfig
from aggregator.round.adapt import AdaptSchedule
from aggregator.rules import Rule, make_rule

__all__ = ["AUTO_EXACT_MAX", "CODE_VERSION", "UTILITY", "RoundConfig"]

#: A coalition's utility: minus the validation cross-entropy of its model. Loss rather than
#: accuracy because accuracy moves in steps of 1/|validation set| and saturates after a few
#: rounds, which leaves most marginal contributions at exactly 0 or noise, and a round's reward
#: to whichever trainer happened to score positive; loss keeps rewarding real improvements.
UTILITY = "neg_loss"
#: Scorer used for `scorer = "auto"`: exact Shapley up to this many accepted updates, GTG above.
#: 2^8 = 256 coalition evaluations of a small model take seconds, and exact values carry no Monte
#: Carlo noise: the demo's 8 honest trainers are paid by exact Shapley.
AUTO_EXACT_MAX = 8


def _code_version() -> str:
    try:
        return f"audited-learning-market {version('audited-learning-market')}"
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "audited-learning-market (unknown version)"


CODE_VERSION = _code_version()


@dataclass(frozen=True)
class RoundConfig:
    """Everything about the aggregator's choices that a round's result depends on. The service
    builds it from its settings; an auditor rebuilds it from the round record (`replay`). The
    `fetch_*` fields only steer `gather_inputs` (how hard to try), never the result."""

    rule: str = "fedavg"
    filters: FilterConfig = field(default_factory=FilterConfig)
    scorer: str = "auto"
    #: Server learning rate of round 0 (later rounds carry theirs in the record's adapt state).
    server_lr: float = 1.0
    adapt: AdaptSchedule = field(default_factory=AdaptSchedule)
    threads: int = 1
    #: threads to run with instead of `threads` (an auditor's choice: results do not depend on it)
    run_threads: int | None = None
    #: where coalition utilities are measured: "local" or "ray" (`aggregator.ray_scoring`, at
    #: `ray_address`, None: a private local instance); results do not depend on it
    compute: str = "local"
    ray_address: str | None = None
    allow_user_models: bool = False
    fetch_workers: int = 4
    fetch_timeout: float = 30.0
    fetch_attempts: int = 3

    def make_rule(self) -> Rule:
        return make_rule(self.rule)

    def scorer_for(self, n: int) -> str:
        if self.scorer.strip().lower() == "auto":
            return "exact_shapley" if n <= AUTO_EXACT_MAX else "gtg_shapley"
        return self.scorer

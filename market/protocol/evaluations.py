"""Recorded evaluations: the floating-point values a round's result depends on, and how an
auditor on another machine accepts them.

A forward pass is float32 arithmetic whose reductions (matrix products, convolutions, the sums of
a softmax) are ordered by the SIMD width, the thread count and the PyTorch build: the same model
on the same validation set gives a loss that differs in the 7th-8th significant digit between
`ATEN_CPU_CAPABILITY=default` and `avx2` (measured by `benchmarks/audit_portability.py`). No
numeric format removes that without re-implementing the forward pass in integers. So every
validation evaluation that feeds a filter, a gate or a score is published in the round record
with the value the aggregator used (`RecordedEvaluation`), and the audit:

1. re-evaluates each one and accepts it if `check_evaluation(recorded, rebuilt, tolerance)` holds,
   i.e. `|recorded - rebuilt| <= abs + rel * |rebuilt|` for its metric (`TOLERANCES`);
2. derives verdicts, scores, rewards and the root **exactly** from the recorded values (the
   arithmetic from utilities to wei is deterministic: see `aggregator.scoring` and
   `aggregator.rewards`), so those match bit for bit on any machine.

What an aggregator can gain by lying inside the tolerance is bounded in docs/audit.md
("Lying inside the tolerance") and by `shapley_reward_bound`.

Subjects (`RecordedEvaluation.subject`):
    "coalition"  base + server_lr * FedAvg(updates of `members`) (a utility of the scorer);
                 members are positions in the round's accepted trainers, in verdict order
    "base"       the round's base model (the previous global model)
    "model"      the round's new global model
    "paired"     the standard error of the mean per-sample validation loss difference between
                 the coalition `members` and the coalition `baseline` (both as for "coalition"):
                 how far apart two coalitions' losses must be to tell them apart on this
                 validation sample (`aggregator.scoring.CoalitionUtility.paired_se`)
    other names  later gates and filters (e.g. "candidate"), with `members` naming their inputs
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CROSS_MACHINE_VERSION",
    "TOLERANCES",
    "EvaluationCheck",
    "RecordedEvaluation",
    "Tolerance",
    "check_evaluation",
    "shapley_reward_bound",
    "tolerance_for",
]

#: The first round-record version whose model is bit-exact (market.protocol.numerics) and whose
#: evaluations are recorded: records below it "predate cross-machine audits".
CROSS_MACHINE_VERSION = 2


class RecordedEvaluation(BaseModel):
    """One validation evaluation, with the value the aggregator used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str
    #: positions in the round's accepted trainers (verdict order), sorted; empty for base/model
    members: tuple[int, ...] = ()
    metric: str  # neg_loss | loss | accuracy | loss_se
    value: float = Field(allow_inf_nan=False)
    #: the second coalition of a "paired" evaluation; None for every other subject (and then left
    #: out of the record's bytes, so records without paired evaluations keep their bytes)
    baseline: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Tolerance:
    """`|recorded - rebuilt| <= abs + rel * |rebuilt|`."""

    rel: float
    abs: float

    def allowed(self, rebuilt: float) -> float:
        return self.abs + self.rel * abs(rebuilt)


#: Per metric. Losses: 1e-5 relative + 1e-6 absolute, ~50x the largest spread measured between
#: kernel variants, thread counts and PyTorch 2.13/2.14 on the digits MLP and the MNIST CNN (see
#: docs/audit.md for the figures). Accuracy: 2 validation samples in 300 could flip on a near
#: tie of two logits; it is a count over n, so the absolute part is what matters.
TOLERANCES: dict[str, Tolerance] = {
    "neg_loss": Tolerance(rel=1e-5, abs=1e-6),
    "loss": Tolerance(rel=1e-5, abs=1e-6),
    "accuracy": Tolerance(rel=0.0, abs=0.007),
    # a standard error over per-sample loss differences: the float32 error of each loss (~1e-7
    # relative) hardly moves it, but a late round's differences are small, so 1e-3 relative. It
    # scales a gate's slack and a pay threshold: a lie inside it moves them by 0.1 %.
    "loss_se": Tolerance(rel=1e-3, abs=1e-7),
}


def tolerance_for(metric: str) -> Tolerance:
    try:
        return TOLERANCES[metric]
    except KeyError:
        raise KeyError(f"no tolerance for metric {metric!r}; known: {', '.join(sorted(TOLERANCES))}") from None


@dataclass(frozen=True)
class EvaluationCheck:
    """The outcome of checking one recorded evaluation against its re-evaluation."""

    recorded: float
    rebuilt: float
    allowed: float

    @property
    def difference(self) -> float:
        return abs(self.recorded - self.rebuilt)

    @property
    def ok(self) -> bool:
        return math.isfinite(self.recorded) and self.difference <= self.allowed

    @property
    def relative(self) -> float:
        return self.difference / abs(self.rebuilt) if self.rebuilt else math.inf if self.difference else 0.0


def check_evaluation(recorded: float, rebuilt: float, tolerance: Tolerance) -> EvaluationCheck:
    """Whether `recorded` (what the aggregator published) is within `tolerance` of `rebuilt`
    (what this machine measures for the same model and validation set)."""
    return EvaluationCheck(float(recorded), float(rebuilt), tolerance.allowed(float(rebuilt)))


def shapley_reward_bound(reward: int, players: int, scores_positive_sum: float, utility_slack: float,
                         members: int = 1) -> int:
    """Wei that any `members` trainers together can gain in one round when every coalition
    utility may be off by at most `utility_slack`, under exact Shapley scoring (docs/audit.md):

        gain <= reward * 2 n delta / Phi + 2 members

    with n players and Phi the sum of the positive scores (the recorded or the honest ones:
    the bound holds with either). Capped at `reward`; `reward` itself when Phi is 0."""
    phi = Fraction(scores_positive_sum)
    if phi <= 0:
        return int(reward)
    bound = Fraction(reward) * 2 * players * Fraction(utility_slack) / phi
    return min(int(reward), math.ceil(bound) + 2 * members)

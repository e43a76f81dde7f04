"""The validation gate: `harmful` for updates that make the round's model worse on validation data.

It runs after the statistical filters and before the rule, on the contribution scorer's own
coalition utilities (`Batch.utility`: v(S) = minus the validation loss of base + server_lr x
FedAvg(rows S), sample counts capped), so it evaluates nothing the scorer would not: the round
stage shares one memo between the gate and the scorer, and every value is a recorded evaluation.

The rule (docs/robustness.md has the measurements behind it): with v_best the best utility of
the candidate coalitions of the live rows and v(empty) the base model's,

    tau = max(gate_tolerance x |v_best - v(empty)|, gate_floor x |v(empty)|, gate_noise_z x se)

the gate keeps the **largest candidate coalition whose utility is >= v_best - tau** (ties: the
higher utility, then the one listing earlier rows); every live row outside it is `harmful`. Only
if even the best coalition is worse than the base model by more than gate_tolerance x |v(empty)|
is every live row `harmful` (the round keeps its base model). A best coalition slightly worse
than the base is still taken: at random initialisation, honest updates trained on two classes
each raise a balanced validation loss (overconfident predictions) while they do learn, and
keeping the base would stall the project until the server learning rate adapts.

`se` is the round's own noise: the standard error of the mean per-sample validation loss
difference that one update of the best coalition makes (the best coalition against itself without
its last-committed row; `Batch.utility.paired_se`, two recorded forward passes, measured only when
the coalition of all live rows is outside the other slacks). It is measured inside the best
coalition, not against the rows outside it: an attacker's own update would make the difference it
is judged by noisier (measured: all live rows against the best let sign flippers through at
random initialisation, where their per-sample effect varies in sign). The best of 2^n
coalitions beats the whole round by chance whenever the updates are equally good: late in a
project every honest update moves the loss by less than the validation sample can resolve, and a
fixed fraction of the base loss (the floor) cut honest updates at random (measured on mnist5k:
docs/robustness.md). With `gate_noise_z` standard errors, a row is cut only when the validation
sample can tell that the round is better without it; a gross attack is many standard errors out.

- Up to `gate_exact_max` live rows every coalition is a candidate (2^n utilities: exactly what
  exact Shapley scoring evaluates, so with the default scorer the gate costs nothing extra).
- Above, the candidates are a greedy removal path: from all live rows, repeatedly drop the row
  whose removal gives the highest utility (ties: the later row), at most floor((n - 1) / 2)
  times; n + (n - 1) + ... evaluations.

In a project whose spec declares client-level DP (`Batch.dp`), the gate judges the noised
aggregate only (method `aggregate`): every live row is kept unless the coalition of all of them
is worse than the base model by more than gate_tolerance x |v(empty)|, and then every one is
`harmful` (the round keeps its base model). Each noised update is mostly noise (its norm is about
sigma*C*sqrt(d) against a signal of at most C), so singletons and subsets differ in their noise
draws, not in their data: choosing among them would reject honest trainers who followed the
project's policy (and pay the others) on a coin flip, while the mean over all of them carries the
least noise. Which updates carry the declared noise is the `dp_noise` filter's test, before.

Why the largest coalition near the best rather than a per-update test: alone, an honest update
trained on two classes makes a balanced validation set worse (singleton screening and Shapley
values reject it), while inside the average it helps; and when half the round is malicious,
removing any one update from the destroyed average hardly changes it (leave-one-out sees
nothing). Every decision is a comparison of recorded utilities, so an auditor re-derives the
verdicts exactly from the record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from aggregator.errors import RuleConfigError
from aggregator.filters.base import HARMFUL, Batch, FilterBase, ScreenReport, Verdict
from aggregator.scoring import paired_noise, prefetch, restrict

__all__ = ["GateConfig", "GateDecision", "ValidationGate", "select_coalition"]

Utility = Callable[[frozenset[int]], float]


@dataclass(frozen=True)
class GateConfig:
    #: the gate runs (a round without validation utilities, e.g. a bare `screen`, skips it)
    validation_gate: bool = True
    #: slack as a fraction of the best coalition's gain over the base model
    gate_tolerance: float = 0.3
    #: slack floor as a fraction of the base model's validation loss (late rounds gain ~0)
    gate_floor: float = 0.02
    #: up to this many live rows every coalition is a candidate; above, the greedy removal path
    gate_exact_max: int = 8
    #: slack of at least this many paired standard errors of all live rows against the best (0: off)
    gate_noise_z: float = 3.0

    def __post_init__(self) -> None:
        if not 0 <= self.gate_tolerance < 1 or self.gate_floor < 0 or self.gate_exact_max < 1 or self.gate_noise_z < 0:
            raise RuleConfigError("validation gate: need 0 <= gate_tolerance < 1, gate_floor >= 0, gate_exact_max >= 1"
                                  ", gate_noise_z >= 0")


@dataclass(frozen=True)
class GateDecision:
    """The kept coalition (positions in the list the gate was given) and the figures behind it."""

    kept: frozenset[int]
    empty: float
    best: float
    chosen: float
    tau: float
    method: str  # exact | path | aggregate
    candidates: int
    #: the paired standard error of all live rows against the best coalition (0: not measured)
    se: float = 0.0

    @property
    def stats(self) -> dict[str, float]:
        return {"empty": self.empty, "best": self.best, "chosen": self.chosen, "tau": self.tau,
                "exact": 1.0 if self.method == "exact" else 0.0, "candidates": float(self.candidates), "se": self.se}


def _path(n: int, utility: Utility) -> dict[frozenset[int], float]:
    current = frozenset(range(n))
    out = {current: utility(current)}
    for _ in range((n - 1) // 2):
        # highest utility after removal; ties remove the later row (committed later)
        best_i, best_v = -1, -math.inf
        prefetch(utility, [current - {i} for i in sorted(current, reverse=True)])  # one parallel batch a step
        for i in sorted(current, reverse=True):
            v = utility(current - {i})
            if v > best_v:
                best_i, best_v = i, v
        current = current - {best_i}
        out[current] = best_v
    return out


def select_coalition(
    n: int, utility: Utility, config: GateConfig | None = None, *, aggregate_only: bool = False
) -> GateDecision:
    """The coalition of positions 0..n-1 the gate keeps, from `utility` (a coalition -> value);
    `aggregate_only` (DP projects) weighs only the coalition of all n."""
    cfg = config or GateConfig()
    empty = utility(frozenset())
    if n == 0:
        return GateDecision(frozenset(), empty, empty, empty, 0.0, "exact", 0)
    if aggregate_only:
        method = "aggregate"
        values = {frozenset(range(n)): utility(frozenset(range(n)))}
    elif n <= cfg.gate_exact_max:
        method = "exact"
        every = [frozenset(i for i in range(n) if m >> i & 1) for m in range(1, 1 << n)]
        prefetch(utility, every)
        values = {c: utility(c) for c in every}
    else:
        method = "path"
        values = _path(n, utility)
    best = max(values.values())
    tau = max(cfg.gate_tolerance * abs(best - empty), cfg.gate_floor * abs(empty))
    if best < empty - cfg.gate_tolerance * abs(empty):
        return GateDecision(frozenset(), empty, best, empty, tau, method, len(values))
    everyone = frozenset(range(n))
    se = 0.0
    if cfg.gate_noise_z > 0 and values[everyone] < best - tau:
        # the smallest, earliest-listed best coalition (the same on every machine: recorded values)
        top = min((c for c, v in values.items() if v == best), key=lambda c: (len(c), tuple(sorted(c))))
        se = paired_noise(utility, top, top - {max(top)}) or 0.0
        tau = max(tau, cfg.gate_noise_z * se)
    ok = [c for c, v in values.items() if v >= best - tau]
    kept = max(ok, key=lambda c: (len(c), values[c], tuple(-i for i in sorted(c))))
    return GateDecision(kept, empty, best, values[kept], tau, method, len(values), se)


@dataclass(frozen=True)
class ValidationGate(FilterBase):
    """`harmful`: a live row outside the largest coalition within tau of the best (module doc)."""

    name: ClassVar[str] = "validation_gate"
    config: GateConfig = field(default_factory=GateConfig)

    def __call__(self, batch: Batch) -> ScreenReport:
        out = batch.finite_verdicts()
        if not self.config.validation_gate or batch.utility is None:
            return ScreenReport(tuple(out))
        rows = [int(i) for i in np.nonzero(batch.live(out))[0]]
        d = select_coalition(len(rows), restrict(batch.utility, rows), self.config, aggregate_only=batch.dp is not None)
        for k, i in enumerate(rows):
            if k not in d.kept:
                detail = (f"without it the kept coalition's validation utility is {d.chosen:.6g}, within tau {d.tau:.4g}"
                          f" of the best {d.best:.6g} (base model {d.empty:.6g}; {d.method} over {d.candidates})")
                if not d.kept:
                    detail = (f"no coalition comes within tau {d.tau:.4g} of the base model's validation utility"
                              f" {d.empty:.6g}: the round keeps the base model")
                out[i] = Verdict(i, out[i].trainer, HARMFUL, detail)
        return ScreenReport(tuple(out), {f"gate_{k}": v for k, v in d.stats.items()})

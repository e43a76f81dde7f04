"""Screening of a round's updates before aggregation: poisoned, lazy and copied updates.

Each filter returns one `Verdict` per update with a stable reason code:

- `non_finite`   the update holds NaN or infinity (checked first, by every filter);
- `insufficient_noise` (projects whose spec declares DP only) the update's energy is below the
                 least the declared noise leaves (`dp_noise.py`);
- `zero_update`  norm ~0, absolutely or relative to the round's median norm (a free rider, or
                 the global model sent back unchanged, whose delta is zero);
- `stale_update` cosine ~1 and norm ratio ~1 to the trainer's own previous-round update (a
                 resend);
- `copy_of:<trainer>` near-identical (cosine > 0.999 and relative L2 distance < 1e-3) to an
                 update committed earlier, by (block, log index); only the first committed is
                 paid;
- `outlier`      farther from the coordinate-wise median than median + 3 sigma of all distances,
                 with the robust sigma MAD x 1.4826, so attackers cannot inflate sigma (the
                 three-sigma building block of the Proof-of-Contribution design);
- `harmful`      outside the largest coalition whose validation utility is within tau of the best
                 coalition's (the validation gate; it needs `Batch.utility`, the scorer's own
                 coalition utilities, and skips without them);
- `ok`           accepted.

Every filter is a small frozen dataclass with its own config, registered in `FILTERS`, and
follows the `Filter` protocol: called on a `Batch` (the round's stacked updates, who sent each
row, their previous updates, the last global step and the rows still accepted), it returns a
`ScreenReport` with one verdict per row. `screen(...)` runs the registered filters in `ORDER`
(dp_noise, free_rider, copy, outlier, validation_gate) and gives each update the first reason that
applies; the outlier statistics are taken over the updates still accepted at that point, so zero
updates and copies do not pull the centre, and the gate weighs only what the others kept. `FilterConfig` holds every filter's thresholds under the flat keys of the
`[aggregator.filters]` table and of the round record's `filters` field.

    base.py        reason codes, Submission, Verdict, ScreenReport, Batch
    dp_noise.py    insufficient_noise
    free_rider.py  zero_update, stale_update
    copy.py        copy_of:<trainer>
    outlier.py     outlier
    validation_gate.py  harmful
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from aggregator.errors import RuleConfigError
from aggregator.filters.base import (
    COPY_OF,
    HARMFUL,
    INSUFFICIENT_NOISE,
    NON_FINITE,
    OK,
    OUTLIER,
    STALE_UPDATE,
    ZERO_UPDATE,
    Batch,
    ScreenReport,
    Submission,
    Verdict,
)
from aggregator.filters.copy import CopyConfig, CopyFilter
from aggregator.filters.dp_noise import DpNoiseConfig, DpNoiseFilter
from aggregator.filters.free_rider import FreeRiderConfig, FreeRiderFilter
from aggregator.filters.outlier import OutlierConfig, OutlierFilter
from aggregator.filters.validation_gate import GateConfig, GateDecision, ValidationGate, select_coalition
from aggregator.rules import _linalg as la
from market._spec import Registry
from market.protocol.privacy import DpPolicy

__all__ = [
    "COPY_OF",
    "FILTERS",
    "HARMFUL",
    "INSUFFICIENT_NOISE",
    "NON_FINITE",
    "OK",
    "ORDER",
    "OUTLIER",
    "STALE_UPDATE",
    "ZERO_UPDATE",
    "Batch",
    "CopyConfig",
    "CopyFilter",
    "DpNoiseConfig",
    "DpNoiseFilter",
    "Filter",
    "FilterConfig",
    "FreeRiderConfig",
    "FreeRiderFilter",
    "GateConfig",
    "GateDecision",
    "OutlierConfig",
    "OutlierFilter",
    "ScreenReport",
    "Submission",
    "ValidationGate",
    "Verdict",
    "make_filter",
    "screen",
    "select_coalition",
]


class Filter(Protocol):
    """One screening rule over a round's batch (Flower-strategy style: a small object, one phase).

    `filter(batch)` returns a `ScreenReport` with exactly one `Verdict` per row of `batch`, in row
    order: `ok`, or this filter's reason with a human-readable detail; non-finite rows are always
    `non_finite` (`batch.finite_verdicts()`). `batch.accepted` marks the rows earlier filters left
    accepted; a filter may look at every row (a copy of a rejected update is a copy too) but only
    its verdicts on still-accepted rows count. `stats` are figures for the round record's metrics
    (as `filter_<key>`). A filter never changes the batch and never raises for a bad update.
    """

    name: ClassVar[str]

    def __call__(self, batch: Batch) -> ScreenReport: ...


#: Every filter by name; `ORDER` is the sequence `screen` runs.
FILTERS: Registry[Filter] = Registry("filter", error=RuleConfigError)
FILTERS.add(DpNoiseFilter.name, DpNoiseFilter)
FILTERS.add(FreeRiderFilter.name, FreeRiderFilter)
FILTERS.add(CopyFilter.name, CopyFilter)
FILTERS.add(OutlierFilter.name, OutlierFilter)
FILTERS.add(ValidationGate.name, ValidationGate, ("gate",))
ORDER: tuple[str, ...] = ("dp_noise", "free_rider", "copy", "outlier", "validation_gate")

_SECTIONS: dict[str, type[Any]] = {
    "dp_noise": DpNoiseConfig, "free_rider": FreeRiderConfig, "copy": CopyConfig, "outlier": OutlierConfig,
    "validation_gate": GateConfig,
}


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of every filter, flat (the `[aggregator.filters]` keys and the record's
    `filters` field); `section(name)` is one filter's own config. Defaults are the ones the
    tests check for false positives."""

    outlier_sigmas: float = 3.0
    outlier_min_updates: int = 5
    outlier_sigma_floor: float = 0.15
    zero_abs_norm: float = 1e-12
    zero_rel_norm: float = 1e-2
    stale_cosine: float = 0.9999
    stale_norm_tolerance: float = 1e-3
    copy_cosine: float = 0.999
    copy_rel_distance: float = 1e-3
    validation_gate: bool = True
    gate_tolerance: float = 0.3
    gate_floor: float = 0.02
    gate_exact_max: int = 8
    gate_noise_z: float = 3.0
    #: pay stretched updates as if their norm were the lower median (`aggregator.fairness`)
    pay_norm_bound: bool = True
    #: the part of each round's allocation split by (capped) claimed samples among the trainers
    #: with a positive score, the rest by score (`aggregator.fairness.pay_weights`)
    pay_data_share: float = 0.75
    #: count no claim above the eligible trainers' lower median claim in the data part
    pay_claim_cap: bool = True

    @classmethod
    def from_record(cls, filters: Mapping[str, Any]) -> FilterConfig:
        """The config a round record's `filters` field states. Records written before the gate
        existed do not name it: their rounds ran without it, and so does their replay."""
        return cls(**{"validation_gate": False, "pay_norm_bound": False, "pay_data_share": 0.0, "pay_claim_cap": False,
                      "gate_noise_z": 0.0, **filters})

    def __post_init__(self) -> None:
        # the pay_* keys belong to no filter: the score and reward stages read them
        if not 0.0 <= self.pay_data_share < 1.0:
            raise RuleConfigError(f"pay_data_share must be in [0, 1), got {self.pay_data_share}")
        for name in _SECTIONS:
            self.section(name)  # each filter's config checks its own values

    def section(self, name: str) -> Any:
        """The config of filter `name` (FreeRiderConfig, CopyConfig, OutlierConfig, GateConfig)."""
        cls = _SECTIONS[FILTERS.canonical(name)]
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})


def make_filter(name: str, config: FilterConfig | None = None) -> Filter:
    """Filter `name` with its section of `config`."""
    cfg = config or FilterConfig()
    return FILTERS.create(name, config=cfg.section(name))


def screen(
    updates: torch.Tensor,
    submissions: Sequence[Submission],
    previous: Mapping[str, torch.Tensor] | None = None,
    config: FilterConfig | None = None,
    global_step: torch.Tensor | None = None,
    *,
    filters: Sequence[str] = ORDER,
    utility: Callable[[frozenset[int]], float] | None = None,
    dp: DpPolicy | None = None,
) -> ScreenReport:
    """Run `filters` (registered names, in order) on one round; each update keeps the first
    reason that applies. `previous` maps trainer -> its previous-round update `[d]`;
    `global_step` is the previous round's global model minus the one before it; `utility` maps a
    set of rows to the scorer's validation utility of their FedAvg (the gate skips without it);
    `dp` is the DP policy the project spec declares (`dp_noise` checks it; the gate then judges
    the noised aggregate as a whole)."""
    cfg = config or FilterConfig()
    stats: dict[str, float] = {}
    with la.single_threaded_blas():
        batch = dataclasses.replace(Batch.of(updates, submissions, previous, global_step), utility=utility, dp=dp)
        verdicts = batch.finite_verdicts()
        for name in filters:
            live = np.array([v.accepted for v in verdicts])
            report = make_filter(name, cfg)(dataclasses.replace(batch, accepted=live))
            for i, v in enumerate(report.verdicts):
                if verdicts[i].accepted and not v.accepted:
                    verdicts[i] = v
            stats.update(report.stats)
    return ScreenReport(verdicts=tuple(verdicts), stats=stats)

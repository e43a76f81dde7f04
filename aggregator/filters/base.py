"""What every filter shares: reason codes, the round's `Batch`, the per-row `Verdict` and the
`ScreenReport` a filter (and `screen`) returns."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from aggregator.errors import InvalidUpdates
from aggregator.rules import _linalg as la

if TYPE_CHECKING:
    from market.protocol.privacy import DpPolicy

__all__ = [
    "COPY_OF",
    "HARMFUL",
    "INSUFFICIENT_NOISE",
    "NON_FINITE",
    "OK",
    "OUTLIER",
    "STALE_UPDATE",
    "ZERO_UPDATE",
    "Batch",
    "ScreenReport",
    "Submission",
    "Verdict",
]

OK = "ok"
NON_FINITE = "non_finite"
ZERO_UPDATE = "zero_update"
STALE_UPDATE = "stale_update"
COPY_OF = "copy_of"
OUTLIER = "outlier"
HARMFUL = "harmful"
INSUFFICIENT_NOISE = "insufficient_noise"


@dataclass(frozen=True)
class Submission:
    """Who sent row i of the stack and when it was committed on chain (its payment order)."""

    trainer: str
    block: int
    log_index: int

    @property
    def order(self) -> tuple[int, int]:
        return (self.block, self.log_index)


@dataclass(frozen=True)
class Verdict:
    """One update's verdict: `reason` is a stable code (`ok`, `outlier`, `copy_of:<trainer>`, ...)."""

    index: int
    trainer: str
    reason: str = OK
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.reason == OK

    @property
    def code(self) -> str:
        """The reason without its argument (`copy_of:<trainer>` -> `copy_of`)."""
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True)
class ScreenReport:
    """All verdicts of a round, in input order, and the accepted rows."""

    verdicts: tuple[Verdict, ...]
    stats: Mapping[str, float] = field(default_factory=dict)

    @property
    def accepted(self) -> tuple[int, ...]:
        return tuple(v.index for v in self.verdicts if v.accepted)

    @property
    def rejected(self) -> dict[str, str]:
        return {v.trainer: v.reason for v in self.verdicts if not v.accepted}

    def reasons(self) -> dict[str, str]:
        return {v.trainer: v.reason for v in self.verdicts}




@dataclass(frozen=True)
class Batch:
    """One round's updates as every filter sees them (`Batch.of` builds and checks it).

    `accepted` marks the rows still accepted when a filter runs (`screen` sets it from the
    verdicts so far; None: every finite row). A filter decides what it looks at: the outlier
    statistics use the accepted rows only, while copying a rejected update is a copy too.
    """

    x: torch.Tensor  # float32 [n, d]
    xn: np.ndarray  # the same memory as numpy
    norms: np.ndarray  # float64 [n], NaN for non-finite rows
    submissions: tuple[Submission, ...]
    #: trainer -> its own previous-round update `[d]`
    previous: Mapping[str, torch.Tensor] = field(default_factory=dict)
    #: the previous round's global model minus the one before it `[d]`
    global_step: torch.Tensor | None = None
    accepted: np.ndarray | None = None
    #: coalition (a set of row indices) -> the scorer's validation utility of base + server_lr x
    #: FedAvg(those rows); None when the caller has no validation set (the gate then skips)
    utility: Callable[[frozenset[int]], float] | None = None
    #: the client-level DP policy the project spec declares (every update carries its noise);
    #: None when the spec declares none
    dp: DpPolicy | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @classmethod
    def of(
        cls,
        updates: torch.Tensor,
        submissions: Sequence[Submission],
        previous: Mapping[str, torch.Tensor] | None = None,
        global_step: torch.Tensor | None = None,
    ) -> Batch:
        x = la.as_stack(updates)
        subs = tuple(submissions)
        if len(subs) != x.shape[0]:
            raise InvalidUpdates(f"{x.shape[0]} updates but {len(subs)} submissions; pass one Submission per row")
        trainers = [s.trainer.lower() for s in subs]
        if len(set(trainers)) != len(trainers):
            raise InvalidUpdates("a trainer appears twice in one round; keep one update per trainer")
        xn = x.numpy()
        norms = np.empty(len(subs))
        with np.errstate(over="ignore", invalid="ignore"):
            for i in range(len(subs)):
                v = float(np.dot(xn[i], xn[i]))
                if not np.isfinite(v):
                    r = xn[i].astype(np.float64)
                    v = float(np.dot(r, r))  # NaN/inf stays non-finite; float32 overflow does not
                norms[i] = math.sqrt(v) if np.isfinite(v) else math.nan
        return cls(x=x, xn=xn, norms=norms, submissions=subs, previous=previous or {}, global_step=global_step)

    def finite_verdicts(self) -> list[Verdict]:
        """`ok` for every finite row, `non_finite` for the others (every filter starts here)."""
        return [
            Verdict(i, s.trainer, OK)
            if np.isfinite(self.norms[i])
            else Verdict(i, s.trainer, NON_FINITE, "NaN or infinite entries")
            for i, s in enumerate(self.submissions)
        ]

    def live(self, verdicts: Sequence[Verdict]) -> np.ndarray:
        """Rows accepted by `verdicts` and by `accepted`."""
        return np.array([v.accepted and (self.accepted is None or bool(self.accepted[i])) for i, v in enumerate(verdicts)])


class FilterBase:
    """`check(updates, submissions, ...)`: one filter on its own, without building a Batch."""

    def __call__(self, batch: Batch) -> ScreenReport:
        raise NotImplementedError

    def check(
        self,
        updates: torch.Tensor,
        submissions: Sequence[Submission],
        previous: Mapping[str, torch.Tensor] | None = None,
        global_step: torch.Tensor | None = None,
    ) -> list[Verdict]:
        with la.single_threaded_blas():
            return list(self(Batch.of(updates, submissions, previous, global_step)).verdicts)


def cos_and_rel(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """(cosine, |a - b| / max(|a|, |b|), |a|, |b|), computed exactly in float64."""
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    na = float(np.linalg.norm(a64))
    nb = float(np.linalg.norm(b64))
    if na == 0 or nb == 0:
        return 0.0, math.inf, na, nb
    cos = float(np.dot(a64, b64)) / (na * nb)
    rel = float(np.linalg.norm(a64 - b64)) / max(na, nb)
    return cos, rel, na, nb


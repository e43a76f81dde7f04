"""Screening of a round's updates before aggregation: poisoned, lazy and copied updates.

Each filter returns one `Verdict` per update with a stable reason code:

- `non_finite`   the update holds NaN or infinity (checked first, by every filter);
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
- `ok`           accepted.

`screen(...)` runs them in that order on one round and gives each update the first reason that
applies; the outlier statistics are taken over the updates still accepted at that point, so zero
updates and copies do not pull the centre.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from aggregator import _linalg as la
from aggregator.errors import InvalidUpdates, RuleConfigError

__all__ = [
    "COPY_OF",
    "NON_FINITE",
    "OK",
    "OUTLIER",
    "STALE_UPDATE",
    "ZERO_UPDATE",
    "CopyFilter",
    "FilterConfig",
    "FreeRiderFilter",
    "OutlierFilter",
    "ScreenReport",
    "Submission",
    "Verdict",
    "screen",
]

OK = "ok"
NON_FINITE = "non_finite"
ZERO_UPDATE = "zero_update"
STALE_UPDATE = "stale_update"
COPY_OF = "copy_of"
OUTLIER = "outlier"

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of every filter (defaults are the ones the tests check for false positives)."""

    #: flag distances above median + outlier_sigmas * sigma
    outlier_sigmas: float = 3.0
    #: with fewer accepted updates than this, no outlier verdicts (a median/MAD of 3 is noise)
    outlier_min_updates: int = 5
    #: sigma is at least this fraction of the median distance: in high dimensions honest
    #: distances concentrate so tightly that a bare MAD would flag ordinary heterogeneity
    outlier_sigma_floor: float = 0.05
    #: norm at or below this is a zero update whatever the others send
    zero_abs_norm: float = 1e-12
    #: norm below this fraction of the median norm is a zero update
    zero_rel_norm: float = 1e-2
    #: cosine to the trainer's previous update at or above this ...
    stale_cosine: float = 0.9999
    #: ... and |norm / previous norm - 1| at or below this is a stale resend
    stale_norm_tolerance: float = 1e-3
    #: cosine above this ...
    copy_cosine: float = 0.999
    #: ... and |a - b| / max(|a|, |b|) below this is a copy
    copy_rel_distance: float = 1e-3

    def __post_init__(self) -> None:
        if self.outlier_sigmas <= 0 or self.outlier_min_updates < 1:
            raise RuleConfigError("outlier_sigmas must be > 0 and outlier_min_updates >= 1")
        if not (0 <= self.zero_rel_norm < 1) or self.zero_abs_norm < 0:
            raise RuleConfigError("zero_rel_norm must be in [0, 1) and zero_abs_norm >= 0")
        if not (-1 <= self.stale_cosine <= 1 and -1 <= self.copy_cosine <= 1):
            raise RuleConfigError("cosine thresholds must be in [-1, 1]")


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


# ---------------------------------------------------------------------------------------------


@dataclass
class _Batch:
    x: torch.Tensor
    xn: np.ndarray
    norms: np.ndarray  # float64, NaN for non-finite rows
    subs: tuple[Submission, ...]

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


def _batch(updates: torch.Tensor, submissions: Sequence[Submission]) -> _Batch:
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
    return _Batch(x=x, xn=xn, norms=norms, subs=subs)


def _finite_verdicts(b: _Batch) -> list[Verdict]:
    return [
        Verdict(i, s.trainer, OK)
        if np.isfinite(b.norms[i])
        else Verdict(i, s.trainer, NON_FINITE, "NaN or infinite entries")
        for i, s in enumerate(b.subs)
    ]


def _cos_and_rel(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
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


@dataclass(frozen=True)
class FreeRiderFilter:
    """`zero_update` by norm (absolute, and relative to the median norm); `stale_update` by cosine
    and norm ratio to the trainer's own previous-round update, or by cosine to the last global step
    (the previous round's model minus the one before: a free-rider replaying the global model's
    own progress, at any scale)."""

    config: FilterConfig = field(default_factory=FilterConfig)
    name: str = "free_rider"

    def __call__(
        self,
        updates: torch.Tensor,
        submissions: Sequence[Submission],
        previous: Mapping[str, torch.Tensor] | None = None,
        global_step: torch.Tensor | None = None,
    ) -> list[Verdict]:
        with la.single_threaded_blas():
            return self._run(_batch(updates, submissions), previous or {}, global_step)

    def _run(
        self, b: _Batch, previous: Mapping[str, torch.Tensor], global_step: torch.Tensor | None = None
    ) -> list[Verdict]:
        cfg = self.config
        out = _finite_verdicts(b)
        finite = np.isfinite(b.norms)
        med = float(np.median(b.norms[finite])) if finite.any() else 0.0
        prev = {k.lower(): v for k, v in previous.items()}
        step = None
        if global_step is not None:
            sv = la.as_stack(global_step.reshape(1, -1))[0].numpy()
            if sv.shape[0] == b.xn.shape[1] and np.isfinite(sv).all() and float(np.linalg.norm(sv)) > 0:
                step = sv
        for i, v in enumerate(out):
            if not v.accepted:
                continue
            norm = float(b.norms[i])
            if norm <= cfg.zero_abs_norm or norm < cfg.zero_rel_norm * med:
                out[i] = Verdict(i, v.trainer, ZERO_UPDATE, f"norm {norm:.3e} against median norm {med:.3e}")
                continue
            if step is not None:
                cos_g = _cos_and_rel(b.xn[i], step)[0]
                if cos_g >= cfg.stale_cosine:
                    out[i] = Verdict(i, v.trainer, STALE_UPDATE, f"cosine {cos_g:.6f} to the last global step: a replay")
                    continue
            p = prev.get(v.trainer.lower())
            if p is None:
                continue
            pv = la.as_stack(p.reshape(1, -1))[0].numpy()
            if pv.shape[0] != b.xn.shape[1] or not np.isfinite(pv).all():
                continue
            cos, _, na, nb = _cos_and_rel(b.xn[i], pv)
            if nb == 0:
                continue
            ratio = na / nb
            if cos >= cfg.stale_cosine and abs(ratio - 1.0) <= cfg.stale_norm_tolerance:
                out[i] = Verdict(
                    i,
                    v.trainer,
                    STALE_UPDATE,
                    f"cosine {cos:.6f} and norm ratio {ratio:.6f} to its previous update",
                )
        return out


@dataclass(frozen=True)
class CopyFilter:
    """`copy_of:<trainer>` for every update near-identical to one committed earlier.

    Candidate pairs come from one float32 Gram matrix (cosine above the threshold minus a margin
    for rounding); each candidate is then checked exactly in float64. An update is a copy of the
    earliest-committed update it matches; that one stays `ok` (if nothing else rejects it).
    """

    config: FilterConfig = field(default_factory=FilterConfig)
    name: str = "copy"

    def __call__(self, updates: torch.Tensor, submissions: Sequence[Submission]) -> list[Verdict]:
        with la.single_threaded_blas():
            return self._run(_batch(updates, submissions))

    def _run(self, b: _Batch, active: np.ndarray | None = None) -> list[Verdict]:
        cfg = self.config
        out = _finite_verdicts(b)
        cand = np.array([out[i].accepted and b.norms[i] > 0 and (active is None or active[i]) for i in range(b.n)])
        idx = np.nonzero(cand)[0]
        if len(idx) < 2:
            return out
        full = la.gram(b.xn)  # [n, n]; indexing it avoids copying a subset of the rows
        g = full[np.ix_(idx, idx)]
        nrm = np.sqrt(np.maximum(np.diag(g), 1e-300))
        cos = g / nrm[:, None] / nrm[None, :]
        margin = 1e-4
        order = sorted(range(len(idx)), key=lambda k: (b.subs[idx[k]].order, int(idx[k])))
        rank = {k: r for r, k in enumerate(order)}
        for k in order:  # in commit order: match k against every earlier-committed update
            i = int(idx[k])
            for j_k in order[: rank[k]]:
                if cos[k, j_k] <= cfg.copy_cosine - margin:
                    continue
                j = int(idx[j_k])
                c, rel, _, _ = _cos_and_rel(b.xn[i], b.xn[j])
                if c > cfg.copy_cosine and rel < cfg.copy_rel_distance:
                    out[i] = Verdict(
                        i,
                        out[i].trainer,
                        f"{COPY_OF}:{b.subs[j].trainer}",
                        f"cosine {c:.7f}, relative distance {rel:.2e} to the update committed at {b.subs[j].order}",
                    )
                    break
        return out


@dataclass(frozen=True)
class OutlierFilter:
    """`outlier`: distance to the coordinate-wise median above median + k sigma of the distances,
    sigma = max(MAD x 1.4826, sigma_floor x median distance)."""

    config: FilterConfig = field(default_factory=FilterConfig)
    name: str = "outlier"

    def __call__(self, updates: torch.Tensor, submissions: Sequence[Submission]) -> list[Verdict]:
        with la.single_threaded_blas():
            out, _ = self._run(_batch(updates, submissions))
            return out

    def _run(self, b: _Batch, active: np.ndarray | None = None) -> tuple[list[Verdict], dict[str, float]]:
        cfg = self.config
        out = _finite_verdicts(b)
        live = np.array([v.accepted and (active is None or active[i]) for i, v in enumerate(out)])
        rows = np.nonzero(live)[0]
        if len(rows) < cfg.outlier_min_updates:
            return out, {}
        centre = la.sorted_reduce(b.xn, la.median_reducer(len(rows)), rows=rows)
        fin = np.isfinite(b.norms)
        if fin.all():
            dist = np.sqrt(la.sqdist_to(b.xn, b.norms**2, centre, None))[rows]
        else:  # rows with NaN/inf would spoil the fast path for all: go row by row
            c64 = centre.astype(np.float64)
            dist = np.array([np.linalg.norm(b.xn[i].astype(np.float64) - c64) for i in rows])
        med = float(np.median(dist))
        mad = float(np.median(np.abs(dist - med)))
        sigma = max(MAD_TO_SIGMA * mad, cfg.outlier_sigma_floor * med)
        limit = med + cfg.outlier_sigmas * sigma
        for k, i in enumerate(rows.tolist()):
            if dist[k] > limit and sigma > 0:
                out[i] = Verdict(
                    i,
                    out[i].trainer,
                    OUTLIER,
                    f"distance {dist[k]:.4e} to the median > {limit:.4e} "
                    f"(median {med:.4e} + {cfg.outlier_sigmas:g} x sigma {sigma:.4e})",
                )
        return out, {"median_distance": med, "sigma": sigma, "limit": limit}


def screen(
    updates: torch.Tensor,
    submissions: Sequence[Submission],
    previous: Mapping[str, torch.Tensor] | None = None,
    config: FilterConfig | None = None,
    global_step: torch.Tensor | None = None,
) -> ScreenReport:
    """Run every filter on one round: non-finite, zero and stale, copies, then outliers among the
    updates still accepted. `previous` maps trainer -> its previous-round update `[d]`;
    `global_step` is the previous round's global model minus the one before it."""
    cfg = config or FilterConfig()
    with la.single_threaded_blas():
        b = _batch(updates, submissions)
        verdicts = FreeRiderFilter(cfg)._run(b, previous or {}, global_step)
        active = np.array([v.accepted for v in verdicts])
        # against every update: copying a rejected one is a copy too
        copies = CopyFilter(cfg)._run(b)
        for i, v in enumerate(copies):
            if verdicts[i].accepted and not v.accepted:
                verdicts[i] = v
        active = np.array([v.accepted for v in verdicts])
        outliers, stats = OutlierFilter(cfg)._run(b, active)
        for i, v in enumerate(outliers):
            if verdicts[i].accepted and not v.accepted:
                verdicts[i] = v
    return ScreenReport(verdicts=tuple(verdicts), stats=stats)

"""Partitioners that deal one dataset out to simulated trainers, and label noise for poor data.

Every partitioner takes the labels (or, for label-blind ones, just the sample count), the number
of trainers and a seed, and returns one sorted int64 index array per trainer. Guarantees, for any
seed: deterministic; every sample goes to exactly one trainer; no trainer is empty (this needs at
least as many samples as trainers, else `PartitionError`).

- `iid`: a random permutation cut into near-equal parts.
- `dirichlet` (label skew): for each class, proportions over trainers drawn from
  Dirichlet(alpha); small alpha gives trainers few classes, large alpha approaches IID.
- `pathological`: each trainer holds `classes_per_trainer` classes (McMahan et al.'s shards,
  without shards spanning two classes); every class is held by someone.
- `quantity_skew`: IID labels, unequal sizes: Dirichlet(alpha) or power-law proportions.

A trainer left empty by the random draw is given one sample taken from the largest trainer
(for `pathological`, a sample of one of its own classes when another holder can spare one, so it
keeps exactly its classes whenever every class has at least as many samples as holders).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from market._spec import Registry
from trainer.data import Dataset
from trainer.errors import PartitionError

__all__ = [
    "PARTITIONERS",
    "PARTITIONS",
    "Partition",
    "dirichlet",
    "flip_labels_noise",
    "iid",
    "parse_partition",
    "partition",
    "pathological",
    "quantity_skew",
    "split_by_partition",
    "with_label_noise",
]

Partition = list[np.ndarray]
Labels = np.ndarray | torch.Tensor | Sequence[int]


def _labels(labels: Labels) -> np.ndarray:
    y = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise PartitionError(f"labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if y.size and y.min() < 0:
        raise PartitionError("labels must be non-negative class indices")
    return y.astype(np.int64, copy=False)


def _check(n: int, n_trainers: int) -> None:
    if n_trainers < 1:
        raise PartitionError(f"n_trainers must be at least 1, got {n_trainers}")
    if n < n_trainers:
        raise PartitionError(f"{n} samples cannot give each of {n_trainers} trainers at least one; "
                             "use fewer trainers or more data")


def _finish(parts: list[list[np.ndarray]] | list[np.ndarray], n: int,
            pick: Callable[[int, list[np.ndarray]], tuple[int, int] | None] | None = None
            ) -> Partition:
    """Sorted int64 arrays; each empty trainer gets one sample from a donor.

    `pick(i, out)` may choose `(donor, position)`; otherwise the largest trainer gives its last
    sample (it has at least two, since there are at least as many samples as trainers).
    """
    out = [np.sort(np.concatenate(p) if isinstance(p, list) else p).astype(np.int64)
           for p in parts]
    for i, p in enumerate(out):
        if p.size:
            continue
        choice = pick(i, out) if pick is not None else None
        if choice is None:
            donor = max(range(len(out)), key=lambda j: (out[j].size, -j))
            choice = (donor, out[donor].size - 1)
        donor, pos = choice
        out[i] = out[donor][pos:pos + 1]
        out[donor] = np.delete(out[donor], pos)
    assert sum(p.size for p in out) == n
    return out


def iid(n_or_labels: int | Labels, n_trainers: int, *, seed: int = 0) -> Partition:
    """Near-equal random parts (sizes differ by at most one)."""
    n = n_or_labels if isinstance(n_or_labels, int) else len(_labels(n_or_labels))
    _check(n, n_trainers)
    perm = np.random.default_rng(seed).permutation(n)
    return _finish(list(np.array_split(perm, n_trainers)), n)


def _proportions(rng: np.random.Generator, alpha: float, k: int) -> np.ndarray:
    p = rng.dirichlet(np.full(k, alpha))
    if not np.all(np.isfinite(p)) or p.sum() <= 0:  # every gamma draw underflowed
        p = np.zeros(k)
        p[rng.integers(k)] = 1.0
    return p


def _cut(idx: np.ndarray, p: np.ndarray) -> list[np.ndarray]:
    bounds = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
    return np.split(idx, np.clip(bounds, 0, len(idx)))


def dirichlet(labels: Labels, n_trainers: int, *, alpha: float = 0.5, seed: int = 0) -> Partition:
    """Label skew: each class spread over trainers by Dirichlet(alpha) proportions."""
    y = _labels(labels)
    _check(len(y), n_trainers)
    if not alpha > 0:
        raise PartitionError(f"alpha must be positive, got {alpha}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_trainers)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        for t, chunk in enumerate(_cut(idx, _proportions(rng, alpha, n_trainers))):
            parts[t].append(chunk)
    return _finish([p or [np.zeros(0, np.int64)] for p in parts], len(y))


def pathological(labels: Labels, n_trainers: int, *, classes_per_trainer: int = 2,
                 seed: int = 0) -> Partition:
    """Each trainer holds `classes_per_trainer` classes; each class is split among its holders.

    Classes are dealt round-robin over a random class order, so every present class has a
    holder when `n_trainers * classes_per_trainer >= number of classes`.
    """
    y = _labels(labels)
    _check(len(y), n_trainers)
    present = np.unique(y)
    k = classes_per_trainer
    if not 1 <= k <= len(present):
        raise PartitionError(f"classes_per_trainer must be in [1, {len(present)}] (the classes "
                             f"present), got {k}")
    if n_trainers * k < len(present):
        raise PartitionError(f"{n_trainers} trainers x {k} classes cannot cover "
                             f"{len(present)} classes; raise classes_per_trainer or trainers")
    rng = np.random.default_rng(seed)
    order = rng.permutation(present)
    held = [[int(order[(t * k + j) % len(order)]) for j in range(k)] for t in range(n_trainers)]
    holders: dict[int, list[int]] = {int(c): [] for c in present}
    for t, cs in enumerate(held):
        for c in cs:
            holders[c].append(t)
    parts: list[list[np.ndarray]] = [[np.zeros(0, np.int64)] for _ in range(n_trainers)]
    for c, ts in holders.items():
        idx = rng.permutation(np.flatnonzero(y == c))
        ts_shuffled = [ts[i] for i in rng.permutation(len(ts))]
        for t, chunk in zip(ts_shuffled, np.array_split(idx, len(ts)), strict=True):
            parts[t].append(chunk)

    def pick(i: int, out: list[np.ndarray]) -> tuple[int, int] | None:
        # a sample of one of i's classes, from the fullest holder that can spare one
        best: tuple[int, int, int] | None = None
        for c in held[i]:
            for t in holders[c]:
                if t == i or out[t].size < 2:
                    continue
                hits = np.flatnonzero(y[out[t]] == c)
                if hits.size and (best is None or out[t].size > best[0]):
                    best = (out[t].size, t, int(hits[-1]))
        return None if best is None else (best[1], best[2])

    return _finish(parts, len(y), pick)


def quantity_skew(n_or_labels: int | Labels, n_trainers: int, *, alpha: float | None = 1.0,
                  exponent: float | None = None, seed: int = 0) -> Partition:
    """IID samples in unequal amounts.

    Sizes follow Dirichlet(alpha) proportions, or, with `exponent`, a power law: the trainer of
    rank r (random ranks) gets a share proportional to r**-exponent. Each trainer gets at least
    one sample.
    """
    n = n_or_labels if isinstance(n_or_labels, int) else len(_labels(n_or_labels))
    _check(n, n_trainers)
    rng = np.random.default_rng(seed)
    if exponent is not None:
        if not exponent >= 0:
            raise PartitionError(f"exponent must be non-negative, got {exponent}")
        shares = np.arange(1, n_trainers + 1, dtype=np.float64) ** -exponent
        p = shares[rng.permutation(n_trainers)]
        p /= p.sum()
    else:
        if alpha is None or not alpha > 0:
            raise PartitionError(f"alpha must be positive, got {alpha}")
        p = _proportions(rng, alpha, n_trainers)
    spare = n - n_trainers  # one sample each first, the rest by p (largest remainder)
    raw = p * spare
    sizes = np.floor(raw).astype(np.int64)
    rest = spare - int(sizes.sum())
    sizes[np.argsort(-(raw - sizes), kind="stable")[:rest]] += 1
    sizes += 1
    perm = rng.permutation(n)
    return _finish(list(np.split(perm, np.cumsum(sizes)[:-1])), n)


# The spec language's view of the partitioners: one dataclass of parameters per scheme, so
# `--partition dirichlet:alpha=0.5` is typed and checked like every other spec string.


class _Scheme:
    name: ClassVar[str]
    function: ClassVar[Callable[..., Partition]]

    def __call__(self, labels: Labels, n_trainers: int, *, seed: int) -> Partition:
        return type(self).function(labels, n_trainers, seed=seed, **dataclasses.asdict(self))  # type: ignore[call-overload]


@dataclass(frozen=True)
class _Iid(_Scheme):
    name: ClassVar[str] = "iid"
    function = staticmethod(iid)


@dataclass(frozen=True)
class _Dirichlet(_Scheme):
    alpha: float = 0.5
    name: ClassVar[str] = "dirichlet"
    function = staticmethod(dirichlet)


@dataclass(frozen=True)
class _Pathological(_Scheme):
    classes_per_trainer: int = 2
    name: ClassVar[str] = "pathological"
    function = staticmethod(pathological)


@dataclass(frozen=True)
class _QuantitySkew(_Scheme):
    alpha: float | None = 1.0
    exponent: float | None = None
    name: ClassVar[str] = "quantity_skew"
    function = staticmethod(quantity_skew)


_SCHEMES: tuple[type[_Scheme], ...] = (_Iid, _Dirichlet, _Pathological, _QuantitySkew)

PARTITIONS: Registry[_Scheme] = Registry("partition scheme", error=PartitionError, positional=True)
for _scheme in _SCHEMES:
    PARTITIONS.add(_scheme.name, _scheme)

#: The partitioner functions by scheme name.
PARTITIONERS: dict[str, Callable[..., Partition]] = {cls.name: cls.function for cls in _SCHEMES}


def parse_partition(text: str) -> tuple[str, dict[str, Any]]:
    """`iid`, `dirichlet:0.5`, `pathological:2`, `quantity_skew:1.0`, or `name:key=value,...`: a
    bare value sets the scheme's first parameter (alpha, classes_per_trainer, alpha)."""
    return PARTITIONS.parse(text)


def partition(labels: Labels, n_trainers: int, scheme: str = "iid", *, seed: int = 0,
              **params: Any) -> Partition:
    """Dispatch by name: `partition(y, 10, "dirichlet", alpha=0.3, seed=1)`."""
    allowed = PARTITIONS.parameters(scheme)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise PartitionError(
            f"bad parameters {unknown} for scheme {PARTITIONS.canonical(scheme)!r}: it takes {', '.join(allowed) or 'none'}"
        )
    return PARTITIONS.create(scheme, **params)(labels, n_trainers, seed=seed)


def split_by_partition(ds: Dataset, parts: Partition) -> list[Dataset]:
    """One `Dataset` per trainer, named `<name>/t<i>`."""
    return [ds.subset(p, name=f"{ds.name}/t{i}") for i, p in enumerate(parts)]


def flip_labels_noise(labels: Labels, fraction: float, num_classes: int, *,
                      seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Flip `round(fraction * N)` labels, chosen at random, each to a uniformly random *other* class.

    Returns the new int64 labels and the sorted indices that were flipped. The input is not
    modified.
    """
    y = _labels(labels)
    if not 0.0 <= fraction <= 1.0:
        raise PartitionError(f"noise fraction must be in [0, 1], got {fraction}")
    if num_classes < 2:
        raise PartitionError("label noise needs at least two classes")
    if y.size and y.max() >= num_classes:
        raise PartitionError(f"label {int(y.max())} is not below num_classes={num_classes}")
    rng = np.random.default_rng(seed)
    k = round(fraction * len(y))
    chosen = np.sort(rng.choice(len(y), size=k, replace=False))
    noisy = y.copy()
    noisy[chosen] = (y[chosen] + rng.integers(1, num_classes, size=k)) % num_classes
    return torch.from_numpy(noisy), chosen


def with_label_noise(ds: Dataset, fraction: float, *, seed: int = 0) -> Dataset:
    """`ds` with `fraction` of its labels flipped to other classes (see `flip_labels_noise`)."""
    noisy, _ = flip_labels_noise(ds.y, fraction, ds.num_classes, seed=seed)
    return ds.with_labels(noisy)

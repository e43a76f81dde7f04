"""trainer.partition: every partitioner covers each sample exactly once, leaves no trainer
empty and is deterministic in its seed; label skew and noise do what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.data import load_builtin
from trainer.errors import PartitionError
from trainer.partition import (
    dirichlet,
    flip_labels_noise,
    iid,
    partition,
    pathological,
    quantity_skew,
    split_by_partition,
    with_label_noise,
)

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _labels(n: int, classes: int, seed: int) -> np.ndarray:
    """Labels with every class present and uneven class sizes."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(classes), rng.integers(0, classes, n - classes)])
    return rng.permutation(y)


def _assert_valid(parts: list[np.ndarray], n: int, n_trainers: int) -> None:
    assert len(parts) == n_trainers
    assert all(p.dtype == np.int64 and p.size > 0 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, no repeats within a trainer
    everything = np.concatenate(parts)
    assert everything.size == n  # no sample twice across trainers...
    assert np.array_equal(np.sort(everything), np.arange(n))  # ...and none left out


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


seeds = st.integers(0, 2**32 - 1)
sizes = st.tuples(st.integers(10, 600), st.integers(1, 40)).filter(lambda t: t[0] >= t[1])


@SETTINGS
@given(seed=seeds, nt=sizes)
def test_iid_properties(seed: int, nt: tuple[int, int]) -> None:
    n, trainers = nt
    y = _labels(n, 3, seed)
    parts = iid(y, trainers, seed=seed)
    _assert_valid(parts, n, trainers)
    assert max(p.size for p in parts) - min(p.size for p in parts) <= 1
    assert _same(parts, iid(n, trainers, seed=seed))


@SETTINGS
@given(seed=seeds, nt=sizes, alpha=st.floats(0.01, 100.0), classes=st.integers(2, 10))
def test_dirichlet_properties(seed: int, nt: tuple[int, int], alpha: float,
                              classes: int) -> None:
    n, trainers = nt
    y = _labels(max(n, classes), classes, seed)
    parts = dirichlet(y, trainers, alpha=alpha, seed=seed)
    _assert_valid(parts, len(y), trainers)
    assert _same(parts, dirichlet(y, trainers, alpha=alpha, seed=seed))


@SETTINGS
@given(seed=seeds, trainers=st.integers(1, 30), classes=st.integers(2, 10),
       k=st.integers(1, 10), extra=st.integers(0, 300))
def test_pathological_properties(seed: int, trainers: int, classes: int, k: int,
                                 extra: int) -> None:
    k = max(min(k, classes), -(-classes // trainers))  # enough to cover every class
    # every class has at least `trainers` samples, so every holder gets some of each class
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.concatenate([np.repeat(np.arange(classes), trainers),
                                        rng.integers(0, classes, extra)]))
    parts = pathological(y, trainers, classes_per_trainer=k, seed=seed)
    _assert_valid(parts, len(y), trainers)
    assert _same(parts, pathological(y, trainers, classes_per_trainer=k, seed=seed))
    assert [len(np.unique(y[p])) for p in parts] == [k] * trainers


@SETTINGS
@given(seed=seeds, trainers=st.integers(1, 30), classes=st.integers(2, 10),
       k=st.integers(1, 10), n=st.integers(0, 60))
def test_pathological_with_scarce_classes_still_covers_and_fills(
        seed: int, trainers: int, classes: int, k: int, n: int) -> None:
    k = max(min(k, classes), -(-classes // trainers))
    y = _labels(max(n, classes, trainers), classes, seed)
    parts = pathological(y, trainers, classes_per_trainer=k, seed=seed)
    _assert_valid(parts, len(y), trainers)


@SETTINGS
@given(seed=seeds, nt=sizes, alpha=st.floats(0.05, 50.0),
       exponent=st.one_of(st.none(), st.floats(0.0, 3.0)))
def test_quantity_skew_properties(seed: int, nt: tuple[int, int], alpha: float,
                                  exponent: float | None) -> None:
    n, trainers = nt
    parts = quantity_skew(n, trainers, alpha=alpha, exponent=exponent, seed=seed)
    _assert_valid(parts, n, trainers)
    assert _same(parts, quantity_skew(n, trainers, alpha=alpha, exponent=exponent, seed=seed))


def test_different_seeds_give_different_partitions() -> None:
    y = _labels(500, 10, 0)
    for scheme, params in [("iid", {}), ("dirichlet", {"alpha": 0.5}),
                           ("pathological", {"classes_per_trainer": 2}),
                           ("quantity_skew", {"alpha": 1.0})]:
        a = partition(y, 10, scheme, seed=1, **params)
        b = partition(y, 10, scheme, seed=2, **params)
        assert not _same(a, b), scheme


def test_dirichlet_alpha_controls_label_skew() -> None:
    y = load_builtin("mnist5k").y.numpy()

    def mean_classes(parts: list[np.ndarray]) -> float:
        return float(np.mean([np.count_nonzero(np.bincount(y[p], minlength=10) >= 5)
                              for p in parts]))

    skewed = mean_classes(dirichlet(y, 20, alpha=0.1, seed=0))
    balanced = mean_classes(dirichlet(y, 20, alpha=100.0, seed=0))
    assert skewed < 5 and balanced == 10


def test_pathological_gives_exactly_k_classes_and_covers_all() -> None:
    y = load_builtin("mnist5k").y.numpy()
    parts = pathological(y, 10, classes_per_trainer=2, seed=5)
    assert [len(np.unique(y[p])) for p in parts] == [2] * 10
    assert set(np.concatenate([np.unique(y[p]) for p in parts])) == set(range(10))


def test_quantity_skew_sizes_are_unequal() -> None:
    sizes = sorted(p.size for p in quantity_skew(5000, 10, exponent=1.5, seed=0))
    assert sizes[-1] > 10 * sizes[0]
    shares = np.arange(1, 11, dtype=float) ** -1.5
    assert sizes[::-1] == pytest.approx(list(1 + shares / shares.sum() * 4990), abs=1)


def test_partition_errors() -> None:
    y = np.array([0, 1, 2, 0, 1])
    with pytest.raises(PartitionError, match="at least one"):
        iid(y, 6)
    with pytest.raises(PartitionError, match="alpha"):
        dirichlet(y, 2, alpha=0.0)
    with pytest.raises(PartitionError, match="cannot cover"):
        pathological(y, 1, classes_per_trainer=2)
    with pytest.raises(PartitionError, match="unknown partition scheme"):
        partition(y, 2, "by_vibes")
    with pytest.raises(PartitionError, match="bad parameters"):
        partition(y, 2, "iid", alpha=1.0)


def test_split_by_partition_makes_datasets() -> None:
    ds = load_builtin("digits")
    parts = partition(ds.y, 4, "dirichlet", alpha=1.0, seed=0)
    shards = split_by_partition(ds, parts)
    assert [len(s) for s in shards] == [p.size for p in parts]
    assert shards[2].name == "digits/t2"
    assert torch.equal(shards[1].y, ds.y[torch.from_numpy(parts[1])])


@SETTINGS
@given(seed=seeds, fraction=st.floats(0.0, 1.0), classes=st.integers(2, 10),
       n=st.integers(1, 400))
def test_label_noise_flips_exactly_the_fraction_to_other_classes(
        seed: int, fraction: float, classes: int, n: int) -> None:
    y = np.random.default_rng(seed).integers(0, classes, n)
    noisy, flipped = flip_labels_noise(y, fraction, classes, seed=seed)
    assert flipped.size == round(fraction * n)
    changed = np.flatnonzero(noisy.numpy() != y)
    assert np.array_equal(changed, flipped)  # every chosen label moved, no other did
    assert noisy.dtype == torch.int64 and int(noisy.min()) >= 0 and int(noisy.max()) < classes
    again, _ = flip_labels_noise(y, fraction, classes, seed=seed)
    assert torch.equal(noisy, again)


def test_label_noise_targets_are_uniform_over_other_classes() -> None:
    y = np.zeros(20000, dtype=np.int64)
    noisy, _ = flip_labels_noise(y, 1.0, 5, seed=0)
    counts = np.bincount(noisy.numpy(), minlength=5)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] / 20000 - 0.25) < 0.02)


def test_with_label_noise_keeps_samples() -> None:
    ds = load_builtin("digits")
    noisy = with_label_noise(ds, 0.3, seed=1)
    assert torch.equal(noisy.x, ds.x)
    assert (noisy.y != ds.y).sum().item() == round(0.3 * len(ds))
    with pytest.raises(PartitionError, match="fraction"):
        with_label_noise(ds, 1.5)

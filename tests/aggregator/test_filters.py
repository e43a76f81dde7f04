"""Screening filters: zero and stale free riders, copies by commit order, robust 3-sigma outliers,
their order of precedence, and the false-positive rate on honest batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import (
    COPY_OF,
    FILTERS,
    NON_FINITE,
    OK,
    OUTLIER,
    STALE_UPDATE,
    ZERO_UPDATE,
    Batch,
    CopyConfig,
    CopyFilter,
    FilterConfig,
    FreeRiderConfig,
    FreeRiderFilter,
    InvalidUpdates,
    OutlierConfig,
    OutlierFilter,
    RuleConfigError,
    Submission,
    screen,
)
from aggregator.filters import ORDER, make_filter

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def subs(n: int, order: list[int] | None = None) -> list[Submission]:
    """Trainers t0..t{n-1}; `order[i]` is row i's commit position (block 100 + pos // 3)."""
    order = order if order is not None else list(range(n))
    return [Submission(f"t{i}", 100 + order[i] // 3, order[i] % 3) for i in range(n)]


def honest(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g)
    return mu + torch.randn(n, d, generator=g)


# --------------------------------------------------------------------------- free riders


def test_zero_updates_absolute_and_relative() -> None:
    x = honest(8, 200)
    x[2] = 0.0  # the global model sent back unchanged: a zero delta
    x[5] *= 1e-4  # a token update
    v = FreeRiderFilter().check(x, subs(8))
    assert [u.reason for u in v] == [OK, OK, ZERO_UPDATE, OK, OK, ZERO_UPDATE, OK, OK]
    assert "median norm" in v[5].detail
    # relative check off: only the exact zero remains a zero update
    v = FreeRiderFilter(FreeRiderConfig(zero_rel_norm=0.0)).check(x, subs(8))
    assert [u.code for u in v].count(ZERO_UPDATE) == 1 and v[2].code == ZERO_UPDATE


def test_stale_resend_of_own_previous_update() -> None:
    x = honest(6, 300, seed=1)
    prev = honest(6, 300, seed=2)
    previous = {f"t{i}": prev[i] for i in range(6)}
    x[1] = prev[1]  # exact resend
    x[3] = prev[3] * 1.0002  # resend, rescaled within tolerance
    x[4] = prev[4] * 1.5  # same direction, different norm: a fresh update with equal direction
    x[0] = prev[1]  # t0 sends t1's previous update: not its own, so not stale
    v = FreeRiderFilter().check(x, subs(6), previous)
    assert [u.reason for u in v] == [OK, STALE_UPDATE, OK, STALE_UPDATE, OK, OK]
    assert "cosine" in v[1].detail
    # addresses are matched case-insensitively
    v = FreeRiderFilter().check(x, subs(6), {"T1": prev[1]})
    assert v[1].reason == STALE_UPDATE
    # without history nothing is stale
    assert all(u.accepted for u in FreeRiderFilter().check(x, subs(6)))


def test_honest_update_close_to_previous_is_not_stale() -> None:
    prev = honest(1, 1000, seed=3)[0]
    x = honest(4, 1000, seed=4)
    x[0] = prev + 0.05 * torch.randn(1000, generator=torch.Generator().manual_seed(5))
    v = FreeRiderFilter().check(x, subs(4), {"t0": prev})
    assert v[0].accepted  # cosine ~0.999 but below 0.9999


# --------------------------------------------------------------------------- copies


def test_copy_goes_to_the_later_commit() -> None:
    x = honest(5, 100)
    x[3] = x[1]
    v = CopyFilter().check(x, subs(5))
    assert [u.reason for u in v] == [OK, OK, OK, f"{COPY_OF}:t1", OK]
    # t3 committed first (earlier block): t1 is the copy
    v = CopyFilter().check(x, subs(5, order=[4, 3, 2, 0, 1]))
    assert v[1].reason == f"{COPY_OF}:t3" and v[3].accepted
    # same block: the log index decides
    s = [
        Submission("t0", 7, 5),
        Submission("t1", 7, 2),
        Submission("t2", 7, 9),
        Submission("t3", 7, 1),
        Submission("t4", 7, 0),
    ]
    v = CopyFilter().check(x, s)
    assert v[1].reason == f"{COPY_OF}:t3" and v[3].accepted


def test_near_identical_copies_and_chains() -> None:
    x = honest(6, 500, seed=6)
    g = torch.Generator().manual_seed(7)
    x[2] = x[0] * (1 + 1e-5) + 1e-6 * torch.randn(500, generator=g)  # perturbed copy of t0
    x[4] = x[0]  # exact copy of t0
    # 1% off: not a copy
    x[5] = x[0] + 0.01 * x[0].norm() / 500**0.5 * torch.randn(500, generator=g)
    v = CopyFilter().check(x, subs(6))
    assert [u.reason for u in v] == [OK, OK, f"{COPY_OF}:t0", OK, f"{COPY_OF}:t0", OK]
    assert "relative distance" in v[2].detail


def test_opposite_update_is_not_a_copy() -> None:
    x = honest(4, 50)
    x[2] = -x[0]
    assert all(u.accepted for u in CopyFilter().check(x, subs(4)))


# --------------------------------------------------------------------------- outliers


def test_three_sigma_outlier_against_the_median() -> None:
    x = honest(12, 400, seed=8)
    x[7] = x[7] * 6  # far from the coordinate-wise median
    v = OutlierFilter().check(x, subs(12))
    assert [u.code for u in v].count(OUTLIER) == 1 and v[7].code == OUTLIER
    assert "sigma" in v[7].detail


def test_attackers_cannot_inflate_sigma() -> None:
    """With a plain standard deviation, a few huge attackers inflate sigma and hide each other;
    the MAD-based sigma is set by the honest majority."""
    x = honest(15, 300, seed=9)
    x[0] *= 1e6
    x[1] *= 1e3
    x[2] *= 30
    x[3] = x[4] * 8
    v = OutlierFilter().check(x, subs(15))
    assert [i for i, u in enumerate(v) if not u.accepted] == [0, 1, 2, 3]


def test_too_few_updates_gives_no_outlier_verdicts() -> None:
    x = honest(4, 100)
    x[0] *= 100
    assert all(u.accepted for u in OutlierFilter().check(x, subs(4)))
    assert not OutlierFilter(OutlierConfig(outlier_min_updates=3)).check(x, subs(4))[0].accepted


@pytest.mark.parametrize(("n", "d"), [(10, 1000), (20, 1000), (50, 2000), (10, 100), (30, 100)])
def test_false_positive_rate_on_honest_batches(n: int, d: int) -> None:
    flagged = total = 0
    for t in range(40):
        x = honest(n, d, seed=1000 + t)
        rep = screen(x, subs(n))
        flagged += n - len(rep.accepted)
        total += n
    # nominal one-sided 3-sigma rate is 0.13 %; allow for MAD noise at small n and d
    limit = 0.02 if d <= 100 else 0.005
    assert flagged / total <= limit, f"{flagged}/{total} honest updates flagged"


# --------------------------------------------------------------------------- screen


def test_screen_gives_the_first_reason_in_order() -> None:
    x = honest(14, 300, seed=11)
    prev = {"t1": x[1].clone(), "t3": x[3].clone()}
    x[0, 5] = float("nan")
    x[1] = x[1]  # stale resend ...
    x[2] = x[1]  # ... and t2 copies it: still a copy (of a rejected update)
    x[4] = 0.0
    x[5] = x[6] * 20  # an outlier
    x[7] = x[6] * 20  # ... and its copy
    rep = screen(x, subs(14), previous=prev)
    assert rep.reasons() == {
        "t0": NON_FINITE,
        "t1": STALE_UPDATE,
        "t2": f"{COPY_OF}:t1",
        "t3": STALE_UPDATE,
        "t4": ZERO_UPDATE,
        "t5": OUTLIER,
        "t6": OK,
        "t7": f"{COPY_OF}:t5",
        **{f"t{i}": OK for i in range(8, 14)},
    }
    assert rep.accepted == (6, 8, 9, 10, 11, 12, 13)
    assert rep.rejected["t7"] == "copy_of:t5"
    assert rep.stats["limit"] > rep.stats["median_distance"] > 0
    assert [v.code for v in rep.verdicts][:3] == [NON_FINITE, STALE_UPDATE, COPY_OF]


@SETTINGS
@given(
    st.integers(8, 20),
    st.integers(500, 1500),
    st.integers(0, 2**31 - 1),
    st.floats(4.0, 1e6),
)
def test_filters_catch_injected_free_riders_copies_and_outliers(n: int, d: int, seed: int, blowup: float) -> None:
    x = honest(n, d, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    perm = torch.randperm(n, generator=g).tolist()
    zero, stale, copy, orig, out = perm[:5]
    previous = {f"t{stale}": x[stale].clone() * 1.00001}
    x[zero] = 0.0
    x[copy] = x[orig]
    x[out] = x[out] * blowup
    order = torch.randperm(n, generator=g).tolist()
    s = subs(n, order)
    rep = screen(x, s, previous=previous)
    first, later = (orig, copy) if order[orig] < order[copy] else (copy, orig)
    expected = {i: OK for i in range(n)}
    expected.update({zero: ZERO_UPDATE, stale: STALE_UPDATE, later: f"{COPY_OF}:t{first}", out: OUTLIER})
    got = {v.index: v.reason for v in rep.verdicts}
    assert got == expected


# --------------------------------------------------------------------------- validation


def test_inputs_are_validated() -> None:
    x = honest(3, 10)
    with pytest.raises(InvalidUpdates, match="submissions"):
        screen(x, subs(2))
    with pytest.raises(InvalidUpdates, match="twice"):
        screen(x, [Submission("a", 1, 0), Submission("A", 1, 1), Submission("b", 1, 2)])
    with pytest.raises(RuleConfigError):
        FilterConfig(outlier_sigmas=0)
    with pytest.raises(RuleConfigError):
        FilterConfig(zero_rel_norm=1.5)
    with pytest.raises(RuleConfigError):
        FilterConfig(copy_cosine=2.0)


def test_screen_runs_the_registered_filters_in_order() -> None:
    assert list(FILTERS) == sorted(ORDER) and ORDER == ("dp_noise", "free_rider", "copy", "outlier", "validation_gate")
    x = honest(8, 30)
    x[2] = 0.0
    x[5] = x[1]
    x[7] *= 50.0
    rep = screen(x, subs(8))
    assert [rep.reasons()[f"t{i}"].split(":")[0] for i in (2, 5, 7)] == [ZERO_UPDATE, COPY_OF, OUTLIER]
    only = screen(x, subs(8), filters=("outlier",))
    assert only.reasons()["t2"] == OK and only.reasons()["t7"] == OUTLIER
    # one filter on its own is a Filter over a Batch; its config is its section of FilterConfig
    cfg = FilterConfig(copy_cosine=0.5)
    assert make_filter("copy", cfg) == CopyFilter(CopyConfig(copy_cosine=0.5))
    assert isinstance(cfg.section("free_rider"), FreeRiderConfig)
    report = make_filter("copy")(Batch.of(x, subs(8)))
    assert [v.reason for v in report.verdicts] == [v.reason for v in CopyFilter().check(x, subs(8))]


def test_non_finite_rows_are_flagged_by_every_filter() -> None:
    x = honest(6, 20)
    x[1, 0] = float("inf")
    x[4, 3] = float("nan")
    for f in (FreeRiderFilter(), CopyFilter(), OutlierFilter()):
        v = f.check(x, subs(6))
        assert [u.code for u in v] == [OK, NON_FINITE, OK, OK, NON_FINITE, OK]


def test_huge_finite_updates_are_outliers_not_errors() -> None:
    x = honest(8, 50)
    x[3] = 3e37
    rep = screen(x, subs(8))
    assert rep.reasons()["t3"] == OUTLIER and len(rep.accepted) == 7
    assert np.isfinite(rep.stats["limit"])


def test_replaying_the_last_global_step_is_stale_at_any_scale() -> None:
    """A free-rider that sends back the global model's own last step (scaled or not) is caught;
    honest updates merely correlated with that step are not."""
    import torch

    from aggregator.filters import STALE_UPDATE, Submission, screen

    g = torch.Generator().manual_seed(3)
    step = torch.randn(500, generator=g)
    honest = [0.5 * step + torch.randn(500, generator=g) for _ in range(6)]
    replay = 0.37 * step
    stack = torch.stack([*honest, replay])
    subs = [Submission(f"0x{i:040x}", 10 + i, 0) for i in range(7)]
    report = screen(stack, subs, {}, None, step)
    assert all(v.accepted for v in report.verdicts[:6])
    assert report.verdicts[6].reason == STALE_UPDATE and "global step" in report.verdicts[6].detail
    # without the global step the replay passes the free-rider check
    assert screen(stack, subs, {}, None, None).verdicts[6].reason != STALE_UPDATE

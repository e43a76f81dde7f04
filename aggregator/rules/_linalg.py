"""Chunked, overflow-safe kernels over a stack of updates `[n, d]` (float32, CPU).

Everything here keeps its working memory to small column chunks or `[n]`/`[n, n]`/`[d]` arrays, so
a rule never holds more than one extra copy-sized buffer beside the stacked updates. Dot products
and Gram matrices go through numpy's BLAS (OpenBLAS accumulates far more accurately than torch's
float32 `mv`: ~6e-7 against ~2e-5 relative error at d = 1M) and fall back to float64 when float32
overflows, which is what huge (attacker) vectors do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from aggregator.errors import InvalidUpdates

#: Target size of one working buffer of a column chunk. Small enough to stay in cache-sized
#: pieces and far below the stacked updates' size; large enough that Python overhead is noise.
CHUNK_BYTES = 1 << 21
#: Below this ratio of squared distance to squared norms, the expanded form
#: |x|^2 - 2 x.z + |z|^2 loses too many digits and distances are recomputed exactly.
_EXPANSION_GUARD = 1e-2


_controller: Any = None


def single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
    """Run numpy's BLAS on one thread inside the block.

    Two reasons: results then do not depend on the machine's core count (a multi-threaded GEMM
    splits its sums differently), which an auditor re-running a round needs; and on a small,
    busy machine a multi-threaded GEMM whose threads get descheduled is 5-20x slower than one
    thread (measured on the 2-core box: 0.2 s single vs 0.7-4.5 s threaded under load for a
    100 x 1M Gram matrix). Without threadpoolctl (a scikit-learn dependency) it does nothing.
    """
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        except Exception:  # noqa: BLE001  # pragma: no cover - threadpoolctl ships with scikit-learn
            _controller = False
    if _controller is False:
        return contextlib.nullcontext()
    return _controller.limit(limits=1, user_api="blas")  # type: ignore[no-any-return]


def as_stack(updates: torch.Tensor) -> torch.Tensor:
    """`updates` as a contiguous float32 CPU tensor `[n, d]`, n >= 1, d >= 1 (no copy when it is one)."""
    if not isinstance(updates, torch.Tensor):
        raise InvalidUpdates(
            f"updates must be a torch.Tensor [n, d], got {type(updates).__name__}; "
            "stack the flattened updates with torch.stack"
        )
    if updates.dim() != 2 or updates.shape[0] < 1 or updates.shape[1] < 1:
        raise InvalidUpdates(
            f"updates must have shape [n, d] with n, d >= 1, got {tuple(updates.shape)}; "
            "stack one flattened update per row"
        )
    if not updates.is_floating_point():
        raise InvalidUpdates(f"updates must be floating point, got {updates.dtype}; send float32 deltas")
    x = updates.detach()
    if x.device.type != "cpu":
        x = x.cpu()
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    return x.contiguous()


def as_weights(weights: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """Validated non-negative finite float64 weights `[n]`, or None."""
    if weights is None:
        return None
    w = torch.as_tensor(weights).detach().to("cpu", torch.float64).reshape(-1)
    if w.numel() != n:
        raise InvalidUpdates(f"got {w.numel()} weights for {n} updates; pass one weight per row")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise InvalidUpdates("weights must be finite and non-negative; fix the sample counts")
    return w


def row_sqnorms(x: torch.Tensor) -> torch.Tensor:
    """Squared L2 norms of the rows as float64 `[n]`; raises InvalidUpdates on NaN or infinity.

    One BLAS dot per row (numpy, not torch: interleaving torch's OpenMP pool with OpenBLAS's
    threads on few cores makes both spin against each other). Float32 overflows beyond ~1.8e19;
    those rows are recomputed in float64, and a row that is still not finite holds a NaN or an
    infinity.
    """
    xn = x.numpy()
    out = np.empty(xn.shape[0], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(xn.shape[0]):
            out[i] = float(np.dot(xn[i], xn[i]))
    for i in np.nonzero(~np.isfinite(out))[0].tolist():
        r = xn[i].astype(np.float64)
        v = float(np.dot(r, r))
        if not np.isfinite(v):
            raise InvalidUpdates(
                f"update {i} has NaN or infinite entries; reject it (filters flag it as non_finite) before aggregating"
            )
        out[i] = v
    return torch.from_numpy(out)


def chunk_cols(rows: int, d: int, bytes_per_elem: int = 4) -> int:
    """Columns per chunk so that a `[rows, cols]` buffer stays near CHUNK_BYTES, and below an
    eighth of the `[rows, d]` float32 stack itself, so small stacks get proportionally small
    buffers too (at least 64 columns)."""
    budget = min(CHUNK_BYTES, max(1 << 14, rows * d * 4 // 8))
    return max(64, min(d, budget // max(1, rows * bytes_per_elem)))


def col_ranges(d: int, cols: int) -> Iterator[tuple[int, int]]:
    for s in range(0, d, cols):
        yield s, min(d, s + cols)


def sorted_reduce(
    xn: np.ndarray,
    reducer: Callable[[np.ndarray], np.ndarray],
    *,
    scale: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    replicate: int | None = None,
    copies: int = 0,
) -> np.ndarray:
    """Sort every coordinate's values across updates, chunk by chunk, and reduce each to one value.

    The chunk `xn[rows, s:e]` is copied transposed into a `[cols, N]` buffer (one row per
    coordinate), scaled per update by `scale`, extended by `copies` columns repeating update
    `replicate` (FoundationFL's synthetic updates), sorted in place along each row (numpy's SIMD
    sort) and handed to `reducer`, which maps the sorted `[cols, N]` block to `[cols]`.
    Working memory: one `[cols, N]` float32 buffer of about CHUNK_BYTES.
    """
    idx = None if rows is None else np.asarray(rows, dtype=np.int64)
    k = xn.shape[0] if idx is None else len(idx)
    d = xn.shape[1]
    total = k + copies
    cols = chunk_cols(total, d)
    buf = np.empty((cols, total), dtype=np.float32)
    out = np.empty(d, dtype=np.float32)
    sc = None if scale is None else np.asarray(scale, dtype=np.float32)[None, :]
    for s, e in col_ranges(d, cols):
        w = e - s
        v = buf[:w]
        src = xn[:, s:e] if idx is None else xn[idx, s:e]
        np.copyto(v[:, :k], src.T)
        if sc is not None:
            v[:, :k] *= sc
        if copies:
            assert replicate is not None
            v[:, k:] = v[:, replicate : replicate + 1]
        v.sort(axis=1)
        out[s:e] = reducer(v)
    return out


def median_reducer(total: int) -> Callable[[np.ndarray], np.ndarray]:
    lo, hi = (total - 1) // 2, total // 2

    def reduce(v: np.ndarray) -> np.ndarray:
        if lo == hi:
            return v[:, lo]
        # halves first: (a + b) / 2 overflows for values near float32's maximum
        return v[:, lo] * np.float32(0.5) + v[:, hi] * np.float32(0.5)

    return reduce


def trimmed_reducer(total: int, f: int) -> Callable[[np.ndarray], np.ndarray]:
    keep = total - 2 * f

    def reduce(v: np.ndarray) -> np.ndarray:
        mid = v[:, f : total - f]
        with np.errstate(over="ignore", invalid="ignore"):
            r = np.add.reduce(mid, axis=1) * np.float32(1.0 / keep)
        if not np.isfinite(r).all():
            r = (mid.astype(np.float64).sum(axis=1) / keep).astype(np.float32)
        return r

    return reduce


def gram(xn: np.ndarray) -> np.ndarray:
    """`X X^T` as float64 `[n, n]`: float32 SYRK, redone in float64 chunks if it overflowed."""
    with np.errstate(over="ignore", invalid="ignore"):
        g = (xn @ xn.T).astype(np.float64)
    if np.isfinite(g).all():
        return g
    n, d = xn.shape
    g = np.zeros((n, n), dtype=np.float64)
    cols = chunk_cols(n, d, 8)
    for s, e in col_ranges(d, cols):
        c = xn[:, s:e].astype(np.float64)
        g += c @ c.T
    return g


def sqdist_matrix(g: np.ndarray) -> np.ndarray:
    """Pairwise squared distances from a Gram matrix (clamped at 0, exact zeros on the diagonal)."""
    sq = np.diag(g)
    d2 = sq[:, None] + sq[None, :] - 2.0 * g
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def dots(xn: np.ndarray, z: np.ndarray) -> np.ndarray:
    """`X z` as float64 `[n]` (float32 GEMV, float64 chunks if it overflowed)."""
    with np.errstate(over="ignore", invalid="ignore"):
        r = (xn @ z).astype(np.float64)
    if np.isfinite(r).all():
        return r
    n, d = xn.shape
    r = np.zeros(n, dtype=np.float64)
    cols = chunk_cols(n, d, 8)
    for s, e in col_ranges(d, cols):
        r += xn[:, s:e].astype(np.float64) @ z[s:e].astype(np.float64)
    return r


def combine(xn: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """`sum_i coef_i x_i` as float32 `[d]` (float32 GEMV, float64 chunks if it overflowed)."""
    c32 = coef.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        r = c32 @ xn
    if np.isfinite(r).all():
        return r
    n, d = xn.shape
    r64 = np.empty(d, dtype=np.float64)
    cols = chunk_cols(n, d, 8)
    for s, e in col_ranges(d, cols):
        r64[s:e] = coef @ xn[:, s:e].astype(np.float64)
    with np.errstate(over="ignore"):
        return r64.astype(np.float32)


def sqnorm(v: np.ndarray) -> float:
    """`|v|^2` of a float32 vector (BLAS dot; float64 when float32 overflows)."""
    with np.errstate(over="ignore", invalid="ignore"):
        r = float(np.dot(v, v))
    if np.isfinite(r):
        return r
    return float(sum(float(np.dot(c, c)) for c in np.array_split(v.astype(np.float64), 16)))


def exact_sqdist(xn: np.ndarray, z: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """`|s_i x_i - z|^2` for every row, by direct subtraction in chunks (float64 accumulation)."""
    n, d = xn.shape
    acc = np.zeros(n, dtype=np.float64)
    cols = chunk_cols(n, d, 8)
    sc = None if scale is None else scale.astype(np.float64)[:, None]
    for s, e in col_ranges(d, cols):
        c = xn[:, s:e].astype(np.float64)
        if sc is not None:
            c *= sc
        c -= z[s:e].astype(np.float64)
        acc += np.einsum("ij,ij->i", c, c)
    return acc


def sqdist_to(xn: np.ndarray, sq: np.ndarray, z: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """`|s_i x_i - z|^2` for every row: expanded form via one GEMV, exact where it is ill-conditioned.

    `sq` holds the squared norms of the scaled rows `s_i x_i`.
    """
    zz = sqnorm(z)
    xz = dots(xn, z)
    if scale is not None:
        xz = xz * scale
    d2 = sq - 2.0 * xz + zz
    if not np.isfinite(d2).all() or (d2 < _EXPANSION_GUARD * (sq + zz)).any():
        return exact_sqdist(xn, z, scale)
    return d2

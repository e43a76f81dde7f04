"""The numeric format that makes a round's new model bit-exact on any machine.

Why: a float32 reduction (a sum, a dot product, a GEMM) adds its terms in an order that depends
on the SIMD width PyTorch dispatched to (`ATEN_CPU_CAPABILITY` default / avx2 / avx512), on the
thread count, on the BLAS and on the PyTorch version, and float addition is not associative. So
two honest machines get different last bits, and the model digest (and every decision taken on
a float comparison) stops being checkable. What *is* machine-independent is (1) a single IEEE-754
operation on given operands (`+`, `*`, a conversion, `round`: correctly rounded by definition),
(2) a comparison, and (3) integer arithmetic without overflow. Everything here is built from
those three, so its result is the same bit for bit wherever it runs.

The format
----------
**Aggregation grid** (`weighted_mean`, `trimmed_mean`, `coordinate_median`): every coordinate
(column) j of a stack of updates gets its own power-of-two grid `2^-k_j`, chosen from the
values that enter the reduction: with `E_j` the binary exponent of the largest |value| of the
column (`max |x| < 2^E_j`, exact: a max is a comparison), `k_j = bits - E_j`. Each value is
quantised to the int64 `q = round_half_even(x * 2^k_j)` (exact: float32 -> float64 is exact, a
power-of-two scaling is exact in float64's range, and `round` of a float64 is exact), so
|q| < 2^bits. Sums of q are exact int64 sums (integer addition is associative: any order, SIMD
width or thread split gives the same total); a mean divides the exact integer total by the
exact integer weight with round-half-to-even (`div_round`); the result is dequantised by one
correctly rounded conversion, `float32(q * 2^-k_j)` (exact in float64 since |q| < 2^53, then one
rounding to float32).

`bits` is `GRID_BITS` (52) when it fits and less when the total weight W needs the headroom:
`bits = min(52, 61 - bitlen(W))`, so `|sum w_i q_i| < 2^61` never overflows. Why a per-column grid
from the reduced values, rather than a fixed 2^-24 or one exponent per tensor: a fixed grid
either drops small deltas (2^-24 ~ 6e-8: a 1e-6 delta keeps 4 bits) or overflows on large ones,
and one exponent per tensor lets a single attacker coordinate of 1e3 set the grid for every
honest coordinate of that tensor. A column's own grid keeps >= 30 bits (52 by default) below
the largest value that is actually summed, more than float32's 24: the rounding error of the
format is far below that of the float32 arithmetic it replaces. The grid of a trimmed mean is
taken after trimming, so trimmed attacker values do not coarsen it either.

**Row grid** (`Geometry`: norms, dot products, distances for selection rules and filters): row i
gets the grid `2^-k_i`, `k_i = ROW_BITS - E_i` from the row's own largest |value| (32 bits below
it), `q_i = round_half_even(x_i * 2^k_i)`, split into two 16-bit limbs `q = hi * 2^16 + lo` so
int64 matrix products of limbs (`|limb product| <= 2^32`, summed over < 2^31 columns) cannot
overflow. Dot products, squared norms and squared distances are then exact rationals
(`fractions.Fraction`, power-of-two denominators) of the quantised rows, and every comparison a
rule or filter makes on them (Krum's neighbours, a clip decision, an outlier limit, a cosine
threshold) is exact. Square roots, where a statistic needs one, are `sqrt_floor` (the exact
floor at 64 significant bits, by `math.isqrt`).

**Elementwise steps** (`scale` factors in the reductions, `apply_step`) use one float64
operation per intermediate, each in its own kernel, so no fused multiply-add can change a
rounding; factors that come from a computation (a clip factor) are dyadic rationals
(`clip_factor`), exact in float64.

Requirements: IEEE-754 binary32/binary64 in round-to-nearest-even with subnormals honoured
(PyTorch's default: `torch.set_flush_denormal(False)`), and finite inputs (callers reject NaN
and infinity first; the kernels raise `NumericsError` when they see one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from market.errors import NumericsError

__all__ = [
    "GRID_BITS",
    "MAX_TOTAL_WEIGHT",
    "ROW_BITS",
    "Geometry",
    "NumericsError",
    "apply_step",
    "clip_factor",
    "coordinate_median",
    "dequantise",
    "div_round",
    "grid_exponents",
    "integer_weights",
    "mean",
    "median_fraction",
    "pow2",
    "quantise",
    "row_sqnorms",
    "sqrt_floor",
    "trimmed_mean",
    "weighted_mean",
]

#: Bits of the aggregation grid below each column's largest reduced |value|.
GRID_BITS = 52
#: Bits of the distance grid below each row's largest |value| (two 16-bit limbs).
ROW_BITS = 32
_LIMB = 16
_LIMB_BASE = 1 << _LIMB
#: Integer weights of a weighted mean must sum to less than this (`integer_weights` rescales).
MAX_TOTAL_WEIGHT = 1 << 30
#: Target bytes of one float64 working buffer of a column chunk.
_CHUNK_BYTES = 1 << 22


# ---------------------------------------------------------------------------------------------
# grid primitives


def pow2(k: torch.Tensor) -> torch.Tensor:
    """`2.0 ** k` as float64, built from the exponent bits (exact; no libm `pow` involved)."""
    k = k.to(torch.int64)
    if bool(((k < -1022) | (k > 1023)).any()):
        raise NumericsError("a power-of-two scale is outside float64's normal range; the values are not finite")
    return torch.bitwise_left_shift(k + 1023, 52).view(torch.float64)


def grid_exponents(maxabs: torch.Tensor, bits: int) -> torch.Tensor:
    """`k = bits - E` with `maxabs < 2^E` (binary exponent by `frexp`, exact); 0 where maxabs is 0."""
    m = maxabs.to(torch.float64)
    if not bool(torch.isfinite(m).all()):
        raise NumericsError("the values hold NaN or infinity; reject non-finite updates before aggregating")
    exp = torch.frexp(m).exponent.to(torch.int64)
    return torch.where(m > 0, bits - exp, torch.zeros_like(exp))


def quantise(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """`round_half_even(x * 2^k)` as int64 (k broadcasts against x); exact for float32/float64 x."""
    return torch.round(x.to(torch.float64) * pow2(k)).to(torch.int64)


def dequantise(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """`float32(q * 2^-k)`: exact in float64 (|q| < 2^53), then one correctly rounded conversion."""
    return (q.to(torch.float64) * pow2(-k)).to(torch.float32)


def div_round(num: torch.Tensor, den: int) -> torch.Tensor:
    """`num / den` rounded half to even, exactly, on int64 (den > 0, |num| < 2^62)."""
    if den <= 0:
        raise NumericsError(f"division by {den}; the total weight must be positive")
    q = torch.div(num, den, rounding_mode="floor")
    r2 = 2 * (num - q * den)  # in [0, 2 den)
    up = (r2 > den) | ((r2 == den) & (torch.remainder(q, 2) == 1))
    return q + up.to(torch.int64)


# ---------------------------------------------------------------------------------------------
# reductions over a stack [n, d] on the aggregation grid


def _check_stack(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < 1 or not x.is_floating_point():
        raise NumericsError("updates must be a floating-point tensor [n, d] with n >= 1; stack the flat updates")
    return x.detach().cpu()


def _cols(rows: int, d: int) -> int:
    return max(64, min(d, _CHUNK_BYTES // max(1, 8 * rows)))


def _scaled_chunks(
    x: torch.Tensor,
    *,
    rows: Sequence[int] | None = None,
    scale: Sequence[float] | None = None,
    replicate: int | None = None,
    copies: int = 0,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """`(s, e, v)` with v the float64 `[N, e - s]` values of columns s:e: the chosen rows, each
    times its scale (one float64 multiply), then `copies` repeats of row `replicate` of them."""
    idx = None if rows is None else torch.as_tensor(list(rows), dtype=torch.int64)
    k = x.shape[0] if idx is None else int(idx.numel())
    sc = None
    if scale is not None:
        sc = torch.as_tensor(list(scale), dtype=torch.float64).reshape(-1, 1)
        if sc.shape[0] != k:
            raise NumericsError(f"got {sc.shape[0]} scale factors for {k} rows; pass one per row")
    d = int(x.shape[1])
    cols = _cols(k + copies, d)
    for s in range(0, d, cols):
        e = min(d, s + cols)
        part = x[:, s:e] if idx is None else x[idx, s:e]
        v = part.to(torch.float64)
        if sc is not None:
            v = v * sc
        if copies:
            assert replicate is not None
            v = torch.cat([v, v[replicate : replicate + 1].expand(copies, -1)])
        yield s, e, v


def weighted_mean(x: torch.Tensor, weights: Sequence[int], *, scale: Sequence[float] | None = None) -> torch.Tensor:
    """`sum_i w_i s_i x_i / sum_i w_i` (float32 `[d]`) for non-negative int weights summing to
    1..MAX_TOTAL_WEIGHT - 1 (use `integer_weights` for real-valued ones)."""
    x = _check_stack(x)
    w = [int(v) for v in weights]
    if len(w) != x.shape[0]:
        raise NumericsError(f"got {len(w)} weights for {x.shape[0]} rows; pass one weight per row")
    if any(v < 0 for v in w) or not 0 < sum(w) < MAX_TOTAL_WEIGHT:
        raise NumericsError(
            f"weights must be non-negative ints summing to 1..{MAX_TOTAL_WEIGHT - 1}, got a total of {sum(w)}; "
            "rescale them with integer_weights"
        )
    total = sum(w)
    bits = min(GRID_BITS, 61 - total.bit_length())
    live = [i for i, v in enumerate(w) if v > 0]
    wt = torch.tensor([w[i] for i in live], dtype=torch.int64).reshape(-1, 1)
    live_scale = None if scale is None else [float(scale[i]) for i in live]
    out = torch.empty(x.shape[1], dtype=torch.float32)
    for s, e, v in _scaled_chunks(x, rows=live, scale=live_scale):
        k = grid_exponents(v.abs().amax(dim=0), bits)
        acc = (quantise(v, k) * wt).sum(dim=0)
        out[s:e] = dequantise(div_round(acc, total), k)
    return out


def mean(x: torch.Tensor, *, scale: Sequence[float] | None = None) -> torch.Tensor:
    """The plain mean of the rows (each times its scale), float32 `[d]`."""
    return weighted_mean(x, [1] * int(x.shape[0]), scale=scale)


def _sorted_mean(
    x: torch.Tensor,
    lo: int,
    hi: int,
    *,
    rows: Sequence[int] | None,
    scale: Sequence[float] | None,
    replicate: int | None = None,
    copies: int = 0,
) -> torch.Tensor:
    """Per column: sort the values (comparisons: exact), average positions lo..hi-1 on a grid
    taken from those kept values only."""
    keep = hi - lo
    bits = min(GRID_BITS, 61 - keep.bit_length())
    out = torch.empty(x.shape[1], dtype=torch.float32)
    for s, e, v in _scaled_chunks(x, rows=rows, scale=scale, replicate=replicate, copies=copies):
        kept = torch.sort(v, dim=0).values[lo:hi]
        k = grid_exponents(kept.abs().amax(dim=0), bits)
        out[s:e] = dequantise(div_round(quantise(kept, k).sum(dim=0), keep), k)
    return out


def trimmed_mean(
    x: torch.Tensor,
    f: int,
    *,
    rows: Sequence[int] | None = None,
    scale: Sequence[float] | None = None,
    replicate: int | None = None,
    copies: int = 0,
) -> torch.Tensor:
    """Coordinate-wise mean after dropping the f smallest and f largest values of each column
    (of the chosen `rows`, each times its scale, plus `copies` repeats of row `replicate`)."""
    x = _check_stack(x)
    total = (x.shape[0] if rows is None else len(rows)) + copies
    if f < 0 or total - 2 * f < 1:
        raise NumericsError(f"cannot trim {f} values from each end of {total}; need at least one left")
    return _sorted_mean(x, f, total - f, rows=rows, scale=scale, replicate=replicate, copies=copies)


def coordinate_median(
    x: torch.Tensor,
    *,
    rows: Sequence[int] | None = None,
    scale: Sequence[float] | None = None,
    replicate: int | None = None,
    copies: int = 0,
) -> torch.Tensor:
    """Coordinate-wise median (the exact mean of the two middle values, rounded half to even on
    the grid, when the count is even)."""
    x = _check_stack(x)
    total = (x.shape[0] if rows is None else len(rows)) + copies
    if total < 1:
        raise NumericsError("the median of no values is undefined; pass at least one row")
    return _sorted_mean(x, (total - 1) // 2, total // 2 + 1, rows=rows, scale=scale, replicate=replicate,
                        copies=copies)


def apply_step(base: torch.Tensor, step: torch.Tensor, lr: float = 1.0) -> torch.Tensor:
    """`float32(base + lr * step)`: one float64 multiply and one float64 add in separate kernels
    (no fused multiply-add can differ between machines), then one rounding to float32."""
    scaled = torch.mul(step.to(torch.float64), float(lr))
    return torch.add(base.to(torch.float64), scaled).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# exact geometry on the row grid


def _limbs(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hi = torch.div(q, _LIMB_BASE, rounding_mode="floor")
    return hi, q - hi * _LIMB_BASE


def _combine(hh: int, hl: int, lh: int, ll: int) -> int:
    return (hh << (2 * _LIMB)) + ((hl + lh) << _LIMB) + ll


def _row_grid(x: torch.Tensor) -> torch.Tensor:
    return grid_exponents(x.abs().amax(dim=1), ROW_BITS).reshape(-1, 1)


def _diag(x: torch.Tensor, k: torch.Tensor) -> list[int]:
    """Exact integer `q_i . q_i` per row on the row grid `k` (int64 limb sums, chunked)."""
    n, d = int(x.shape[0]), int(x.shape[1])
    acc = [torch.zeros(n, dtype=torch.int64) for _ in range(3)]
    cols = _cols(n, d)
    for s in range(0, d, cols):
        hi, lo = _limbs(quantise(x[:, s : s + cols], k))
        acc[0] += (hi * hi).sum(dim=1)
        acc[1] += (hi * lo).sum(dim=1)
        acc[2] += (lo * lo).sum(dim=1)
    hh, hl, ll = (a.tolist() for a in acc)
    return [_combine(hh[i], hl[i], hl[i], ll[i]) for i in range(n)]


def row_sqnorms(x: torch.Tensor, *, scale: Sequence[float] | None = None) -> list[Fraction]:
    """`|s_i x_i|^2` exactly for every row (on the row grid), without the Gram matrix."""
    return Geometry.of(x, scale=scale, full=False).sqnorms()


@dataclass(frozen=True)
class Geometry:
    """Exact dot products of a stack's rows on the row grid: `gram[i][j]` is the integer
    `q_i . q_j`, the true value being `gram[i][j] * 2^-(k_i + k_j) * s_i * s_j` (s: row scales).
    `Geometry.of(x, full=False)` computes only the diagonal (norms, distances to a vector)."""

    x: torch.Tensor
    k: tuple[int, ...]
    scale: tuple[Fraction, ...]
    diag: tuple[int, ...]
    gram: tuple[tuple[int, ...], ...] | None

    @classmethod
    def of(cls, x: torch.Tensor, *, scale: Sequence[float] | None = None, full: bool = True) -> Geometry:
        """Quantise every row on its own grid and compute the exact Gram matrix (int64 limb GEMMs)."""
        x = _check_stack(x)
        n, d = int(x.shape[0]), int(x.shape[1])
        k = _row_grid(x)
        sc = tuple(Fraction(1) if scale is None else Fraction(float(v)) for v in (scale or [1.0] * n))
        if len(sc) != n:
            raise NumericsError(f"got {len(sc)} scale factors for {n} rows; pass one per row")
        ks = tuple(int(v) for v in k.reshape(-1).tolist())
        if not full:
            return cls(x, ks, sc, tuple(_diag(x, k)), None)
        acc = [torch.zeros((n, n), dtype=torch.int64) for _ in range(3)]
        cols = _cols(n, d)
        for s in range(0, d, cols):
            hi, lo = _limbs(quantise(x[:, s : s + cols], k))
            acc[0] += hi @ hi.T
            acc[1] += hi @ lo.T
            acc[2] += lo @ lo.T
        hh, hl, ll = (a.tolist() for a in acc)
        gram = tuple(tuple(_combine(hh[i][j], hl[i][j], hl[j][i], ll[i][j]) for j in range(n)) for i in range(n))
        return cls(x, ks, sc, tuple(gram[i][i] for i in range(n)), gram)

    def scaled(self, scale: Sequence[float]) -> Geometry:
        """The same rows with other scale factors (nothing recomputed)."""
        return Geometry(self.x, self.k, tuple(Fraction(float(v)) for v in scale), self.diag, self.gram)

    @property
    def n(self) -> int:
        return len(self.k)

    def _unit(self, i: int, j: int) -> Fraction:
        return self.scale[i] * self.scale[j] / (Fraction(2) ** (self.k[i] + self.k[j]))

    def dot(self, i: int, j: int) -> Fraction:
        """`(s_i x_i) . (s_j x_j)` exactly (on the quantised rows)."""
        if self.gram is None:
            raise NumericsError("this Geometry holds norms only; build it with Geometry.of(x, full=True)")
        return self.gram[i][j] * self._unit(i, j)

    def sqnorm(self, i: int) -> Fraction:
        return self.diag[i] * self._unit(i, i)

    def sqnorms(self) -> list[Fraction]:
        return [self.sqnorm(i) for i in range(self.n)]

    def sqdist(self, i: int, j: int) -> Fraction:
        """`|s_i x_i - s_j x_j|^2` exactly (0 on the diagonal)."""
        if i == j:
            return Fraction(0)
        return self.sqnorm(i) + self.sqnorm(j) - 2 * self.dot(i, j)

    def sqdist_matrix(self) -> list[list[Fraction]]:
        return [[self.sqdist(i, j) for j in range(self.n)] for i in range(self.n)]

    def dots_to(self, z: torch.Tensor, rows: Sequence[int] | None = None) -> tuple[list[Fraction], Fraction]:
        """`(s_i x_i) . z` exactly for each row (of `rows`), and `|z|^2`, z `[d]` on its own row grid."""
        zz = _check_stack(z.reshape(1, -1))
        if zz.shape[1] != self.x.shape[1]:
            raise NumericsError(f"the vector has {zz.shape[1]} entries, the rows {self.x.shape[1]}; use one layout")
        idx = list(range(self.n)) if rows is None else [int(r) for r in rows]
        kz = _row_grid(zz)
        kx = torch.tensor([self.k[i] for i in idx], dtype=torch.int64).reshape(-1, 1)
        d = int(self.x.shape[1])
        cols = _cols(len(idx) + 1, d)
        dots = [torch.zeros(len(idx), dtype=torch.int64) for _ in range(4)]
        zsq = [torch.zeros((), dtype=torch.int64) for _ in range(3)]
        sel = torch.as_tensor(idx, dtype=torch.int64)
        for s in range(0, d, cols):
            xh, xl = _limbs(quantise(self.x[sel, s : s + cols], kx))
            zh, zl = _limbs(quantise(zz[0, s : s + cols], kz[0]))
            dots[0] += xh @ zh
            dots[1] += xh @ zl
            dots[2] += xl @ zh
            dots[3] += xl @ zl
            zsq[0] += zh @ zh
            zsq[1] += zh @ zl
            zsq[2] += zl @ zl
        kz0 = int(kz.item())
        z2 = _combine(int(zsq[0]), int(zsq[1]), int(zsq[1]), int(zsq[2])) / Fraction(2) ** (2 * kz0)
        cols_ = [t.tolist() for t in dots]
        out = []
        for r, i in enumerate(idx):
            xz = _combine(cols_[0][r], cols_[1][r], cols_[2][r], cols_[3][r])
            out.append(self.scale[i] * xz / (Fraction(2) ** (self.k[i] + kz0)))
        return out, z2

    def sqdist_to(self, z: torch.Tensor, rows: Sequence[int] | None = None) -> list[Fraction]:
        """`|s_i x_i - z|^2` exactly for each row (of `rows`), z `[d]` on its own row grid."""
        idx = list(range(self.n)) if rows is None else [int(r) for r in rows]
        dots, z2 = self.dots_to(z, idx)
        return [self.sqnorm(i) - 2 * xz + z2 for i, xz in zip(idx, dots)]


# ---------------------------------------------------------------------------------------------
# exact scalars


def sqrt_floor(x: Fraction | int, bits: int = 64) -> Fraction:
    """The largest dyadic y = m / 2^p with y^2 <= x, where p is chosen so y has about `bits`
    significant bits (floor of the exact square root: deterministic, by `math.isqrt`)."""
    v = Fraction(x)
    if v < 0:
        raise NumericsError(f"square root of a negative value {float(v)!r}")
    if v == 0:
        return Fraction(0)
    mag = v.numerator.bit_length() - v.denominator.bit_length()  # ~log2(v)
    p = max(0, bits - mag // 2)
    scaled = v * (1 << (2 * p))
    return Fraction(math.isqrt(scaled.numerator // scaled.denominator), 1 << p)


def clip_factor(sqnorm: Fraction, bound: Fraction | float, bits: int = 30) -> float:
    """`min(1, bound / |x|)` rounded down to a multiple of 2^-bits (a float64 exactly): a row with
    squared norm `sqnorm` is clipped iff `sqnorm > bound^2` (exact comparison)."""
    b = Fraction(bound)
    if b <= 0:
        raise NumericsError(f"clip bound must be positive, got {float(b)!r}")
    if sqnorm <= b * b:
        return 1.0
    # largest t with (t / 2^bits)^2 * sqnorm <= b^2
    target = b * b * (1 << (2 * bits)) / sqnorm
    t = math.isqrt(target.numerator // target.denominator)
    return math.ldexp(t, -bits)


def median_fraction(values: Sequence[Fraction]) -> Fraction:
    """The exact median (mean of the two middle values for an even count)."""
    if not values:
        raise NumericsError("the median of no values is undefined")
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def integer_weights(values: Sequence[Fraction | int | float], total_bits: int = 29) -> list[int]:
    """Non-negative integer weights proportional to `values` for `weighted_mean`: the values
    themselves when they are ints summing below MAX_TOTAL_WEIGHT, else the largest-remainder
    apportionment of 2^total_bits (ties to the lower index): exact and deterministic."""
    vals = [Fraction(v) for v in values]
    if any(v < 0 for v in vals) or not sum(vals) > 0:
        raise NumericsError("weights must be non-negative with a positive sum")
    if all(v.denominator == 1 for v in vals) and sum(vals) < MAX_TOTAL_WEIGHT:
        return [int(v) for v in vals]
    total = sum(vals)
    unit = 1 << total_bits
    quotas = [v * unit / total for v in vals]
    whole = [q.numerator // q.denominator for q in quotas]
    left = unit - sum(whole)
    order = sorted(range(len(vals)), key=lambda i: (-(quotas[i] - whole[i]), i))
    for i in order[:left]:
        whole[i] += 1
    return whole

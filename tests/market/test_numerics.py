"""The fixed-point format of `market.protocol.numerics`: each kernel equals a pure-Python integer
reference bit for bit, is close to the exact real value, and gives the same bytes on 1 and 2
threads, with any chunking, and under every `ATEN_CPU_CAPABILITY` this CPU can run."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from market.protocol import numerics as nx

ROOT = Path(__file__).resolve().parents[2]


def _random(n: int, d: int, seed: int) -> torch.Tensor:
    """float32 values from integer draws (mantissa and exponent): the same on every kernel variant,
    unlike torch.randn, whose vectorised transcendental functions differ in the last bits."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randint(-(1 << 23), 1 << 23, (n, d), generator=g)
    e = torch.randint(-33, -20, (n, d), generator=g)
    return (m.double() * nx.pow2(e)).float()


def _stack(n: int, d: int, seed: int = 0) -> torch.Tensor:
    x = _random(n, d, seed)
    # columns of very different magnitudes, exact ties and zeros: the cases a grid gets wrong
    x[:, : d // 4] *= 1e-4
    x[0, 1] = 1e3
    x[:, 2] = 0.0
    if n > 2:
        x[1, 3] = x[2, 3]
    return x


# ---------------------------------------------------------------------------------------------
# pure-Python references (Python ints: exact by construction)


def _exponent(v: float) -> int:
    return math.frexp(v)[1]


def _ref_mean_col(values: list[float], weights: list[int], bits: int) -> float:
    m = max(abs(v) for v, w in zip(values, weights) if w > 0)
    k = bits - _exponent(m) if m > 0 else 0
    total = sum(weights)
    acc = sum(w * round(Fraction(v) * Fraction(2) ** k) for v, w in zip(values, weights) if w > 0)
    q = round(Fraction(acc, total))  # Python rounds half to even
    return float(torch.tensor(float(Fraction(q) / Fraction(2) ** k), dtype=torch.float64).float())


def _ref_sorted_col(values: list[float], lo: int, hi: int) -> float:
    kept = sorted(values)[lo:hi]
    bits = min(nx.GRID_BITS, 61 - (hi - lo).bit_length())
    return _ref_mean_col(kept, [1] * len(kept), bits)


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


# ---------------------------------------------------------------------------------------------


def test_grid_primitives_are_exact() -> None:
    k = torch.tensor([-1022, -1, 0, 5, 1023])
    assert nx.pow2(k).tolist() == [2.0**-1022, 0.5, 1.0, 32.0, 2.0**1023]
    q = nx.quantise(torch.tensor([0.75, -0.75, 2.5, 3.5, -0.0]), torch.tensor([0, 0, 0, 0, 0]))
    assert q.tolist() == [1, -1, 2, 4, 0]  # half to even
    assert nx.div_round(torch.tensor([5, 7, -5, -7, 6, 1]), 2).tolist() == [2, 4, -2, -4, 3, 0]
    assert nx.div_round(torch.tensor([10, 11, -10]), 4).tolist() == [2, 3, -2]
    assert nx.dequantise(torch.tensor([3, 0]), torch.tensor([1, 0])).tolist() == [1.5, 0.0]
    assert str(nx.dequantise(torch.tensor([0]), torch.tensor([3]))[0].item()) == "0.0"  # never -0.0


def test_weighted_mean_equals_the_integer_reference() -> None:
    x = _stack(5, 300)
    w = [250, 1, 0, 99, 7]
    got = nx.weighted_mean(x, w)
    bits = min(nx.GRID_BITS, 61 - sum(w).bit_length())
    ref = [_ref_mean_col(x[:, j].tolist(), w, bits) for j in range(x.shape[1])]
    assert got.tolist() == ref
    exact = (x.double() * torch.tensor(w, dtype=torch.float64)[:, None]).sum(0) / sum(w)
    assert torch.allclose(got.double(), exact, rtol=2e-7, atol=0)


def test_trimmed_mean_and_median_equal_the_integer_reference() -> None:
    x = _stack(6, 200, seed=1)
    tm = nx.trimmed_mean(x, 1)
    med = nx.coordinate_median(x)
    odd = nx.coordinate_median(x, rows=[0, 2, 5])
    for j in range(x.shape[1]):
        col = x[:, j].tolist()
        assert tm[j].item() == _ref_sorted_col(col, 1, 5)
        assert med[j].item() == _ref_sorted_col(col, 2, 4)
        assert odd[j].item() == sorted(col[i] for i in (0, 2, 5))[1] + 0.0  # the middle value itself


def test_replicated_rows_and_scales() -> None:
    x = _stack(4, 100, seed=2)
    got = nx.trimmed_mean(x, 2, replicate=1, copies=3)
    ext = torch.cat([x, x[1:2].expand(3, -1)])
    assert _bits(got) == _bits(nx.trimmed_mean(ext, 2))
    s = [1.0, 0.5, nx.clip_factor(Fraction(9), Fraction(1)), 1.0]
    scaled = (x.double() * torch.tensor(s, dtype=torch.float64)[:, None])
    assert _bits(nx.mean(x, scale=s)) == _bits(nx.mean(scaled))


def test_results_do_not_depend_on_chunking_or_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _stack(7, 5000, seed=3)
    outs = []
    for chunk, threads in ((1 << 22, 1), (1 << 22, 2), (4096, 1), (999, 2)):
        monkeypatch.setattr(nx, "_CHUNK_BYTES", chunk)
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            geo = nx.Geometry.of(x)
            outs.append((
                _bits(nx.weighted_mean(x, [1, 2, 3, 4, 5, 6, 7])),
                _bits(nx.trimmed_mean(x, 2)),
                _bits(nx.coordinate_median(x)),
                geo.gram,
                tuple(geo.sqdist_to(x[3] * 0.5)),
            ))
        finally:
            torch.set_num_threads(prev)
    assert all(o == outs[0] for o in outs)


def test_geometry_is_exact_on_the_quantised_rows() -> None:
    x = _stack(4, 400, seed=4)
    x[3] *= 1e6  # a huge row on its own grid
    geo = nx.Geometry.of(x, scale=[1.0, 0.25, 1.0, 1.0])
    q = []
    for i in range(4):
        m = max(abs(v) for v in x[i].tolist())
        k = nx.ROW_BITS - _exponent(m)
        assert geo.k[i] == k
        q.append([round(Fraction(v) * Fraction(2) ** k) for v in x[i].tolist()])
    for i in range(4):
        for j in range(4):
            assert geo.gram[i][j] == sum(a * b for a, b in zip(q[i], q[j]))
    x64 = x.double() * torch.tensor([1.0, 0.25, 1.0, 1.0], dtype=torch.float64)[:, None]
    for i in range(4):
        for j in range(4):
            true = float(((x64[i] - x64[j]) ** 2).sum())
            assert math.isclose(float(geo.sqdist(i, j)), true, rel_tol=1e-6, abs_tol=1e-30)
    z = x[0] * 0.5 + x[1] * 0.5
    for i, d2 in enumerate(geo.sqdist_to(z)):
        assert math.isclose(float(d2), float(((x64[i] - z.double()) ** 2).sum()), rel_tol=1e-6)
    assert geo.sqdist_to(x[2], rows=[2]) == [Fraction(0)]  # exact: no cancellation residue


def test_exact_scalars() -> None:
    r = nx.sqrt_floor(Fraction(2))
    assert r * r <= 2 < (r + Fraction(1, r.denominator)) ** 2
    assert nx.sqrt_floor(Fraction(9, 4)) == Fraction(3, 2)
    assert nx.sqrt_floor(0) == 0
    assert nx.clip_factor(Fraction(4), 3.0) == 1.0  # |x| = 2 <= 3: not clipped
    c = nx.clip_factor(Fraction(16), 1.0)
    assert c == 0.25 and c == math.ldexp(int(c * 2**30), -30)
    c3 = nx.clip_factor(Fraction(3), 1.0)
    assert Fraction(c3) ** 2 * 3 <= 1 < (Fraction(c3) + Fraction(1, 2**30)) ** 2 * 3
    assert nx.median_fraction([Fraction(3), Fraction(1), Fraction(2), Fraction(10)]) == Fraction(5, 2)
    assert nx.integer_weights([3, 1, 0]) == [3, 1, 0]
    w = nx.integer_weights([Fraction(1, 3), Fraction(1, 3), Fraction(1, 3)], total_bits=4)
    assert w == [6, 5, 5] and sum(w) == 16


def test_apply_step_rounds_once_per_operation() -> None:
    base = _stack(1, 1000, seed=5)[0]
    step = _stack(1, 1000, seed=6)[0]
    got = nx.apply_step(base, step, 0.7)
    ref = [float(torch.tensor(b + float(torch.tensor(s, dtype=torch.float64) * 0.7), dtype=torch.float64).float())
           for b, s in zip(base.double().tolist(), step.double().tolist())]
    assert got.tolist() == ref


def test_non_finite_and_bad_weights_raise() -> None:
    x = _stack(3, 10)
    x[1, 4] = float("nan")
    with pytest.raises(nx.NumericsError, match="NaN or infinity"):
        nx.mean(x)
    with pytest.raises(nx.NumericsError, match="integer_weights"):
        nx.weighted_mean(_stack(2, 4), [1 << 29, 1 << 29])
    with pytest.raises(nx.NumericsError, match="trim"):
        nx.trimmed_mean(_stack(4, 4), 2)


# ---------------------------------------------------------------------------------------------
# the same bytes under every kernel variant this CPU can run

_PROBE = r"""
import hashlib, sys, torch
from market.protocol import numerics as nx
want = sys.argv[1]
got = torch.backends.cpu.get_cpu_capability()
if want != "DEFAULT" and got != want:
    print("UNSUPPORTED", got); raise SystemExit(0)
torch.set_num_threads(int(sys.argv[2]))
g = torch.Generator().manual_seed(7)
m = torch.randint(-(1 << 23), 1 << 23, (9, 20011), generator=g)
x = (m.double() * nx.pow2(torch.randint(-33, -20, (9, 20011), generator=g))).float()
x[:, :5000] *= 1e-5
x[4] *= 300.0
h = hashlib.sha256()
for t in (nx.weighted_mean(x, list(range(1, 10))), nx.trimmed_mean(x, 2), nx.coordinate_median(x),
          nx.trimmed_mean(x, 3, replicate=2, copies=9), nx.mean(x, scale=[0.5] * 9),
          nx.apply_step(x[0], nx.mean(x), 0.3)):
    h.update(t.numpy().tobytes())
geo = nx.Geometry.of(x)
h.update(repr(geo.gram).encode()); h.update(repr(geo.sqdist_to(x[1] * 0.25)).encode())
print("DIGEST", h.hexdigest())
"""


def _probe(capability: str, threads: int) -> str | None:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability.lower(), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _PROBE, capability, str(threads)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True).stdout.split()
    return out[1] if out[0] == "DIGEST" else None


def test_same_bytes_under_every_kernel_variant_and_thread_count() -> None:
    digests = {}
    for cap in ("DEFAULT", "AVX2", "AVX512"):
        for threads in (1, 2):
            d = _probe(cap, threads)
            if d is not None:
                digests[(cap, threads)] = d
    assert ("DEFAULT", 1) in digests
    if len({c for c, _ in digests}) < 2:
        pytest.skip("this CPU runs only PyTorch's default kernels: nothing to compare against")
    assert len(set(digests.values())) == 1, digests

"""Robust aggregation rules: our time and peak memory beside ByzFL's and Flower's implementations.

    .venv/bin/python benchmarks/robust_rules.py            # n in {10, 50, 100}, d in {100k, 1M}
    .venv/bin/python benchmarks/robust_rules.py --quick    # n in {10, 50}, d = 100k
    .venv/bin/python benchmarks/robust_rules.py --smoke    # seconds: n = 10, d = 10k, ours only

Each (library, n, d) runs in a fresh subprocess that builds the same random stack (torch normal_,
seeded identically, float32) and calls every rule of that library on it: the first call measures
peak memory, then the time is the best of a few calls (fewer for the largest stacks). Peers:

- ByzFL (PyPI `byzfl`) and Flower (PyPI `flwr`, only `flwr.server.strategy.aggregate`) run from
  the peer venv benchmarks/.venv-peers, created here if missing (torch 2.13.0 and numpy 2.4.6
  first, then `byzfl --no-deps` plus scipy, which its aggregators import, and `flwr --no-deps`).
  `import byzfl` also imports ByzFL's training framework, which needs torchvision, and PyPI's
  torchvision wheel does not load against this machine's torch 2.13.0+cpu; so the worker loads
  `byzfl.aggregators.aggregators` (numpy, torch, scipy only) without the package's `__init__`.
  Likewise `flwr`'s `__init__` pulls in protobuf/grpc, so the worker loads
  `flwr/server/strategy/aggregate.py` alone with its two type-only imports stubbed.
- Peak memory: Linux's VmHWM (peak resident set) of the worker process, reset before each call
  through /proc/self/clear_refs ("5"), minus the resident set just before the call, divided by
  the stacked updates' size. tracemalloc does not see torch's or numpy's buffers, and torch has
  no CPU allocator statistics; the workers run with MALLOC_MMAP_THRESHOLD_=65536 so freed large
  buffers go back to the kernel and do not hide the next call's allocations. "total" adds the
  stack itself (1.0): the target is total <= 2x.
- Parameters are matched so the two sides compute the same thing; the last column is the largest
  absolute difference between our result and the peer's on the same data.

Targets: >= 1x ByzFL on median and trimmed mean, >= 3x on Krum, Multi-Krum and geometric median;
peak memory <= 2x the stacked updates.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = Path(__file__).resolve().parent / ".venv-peers"
PEER_PY = PEER_VENV / "bin" / "python"
SEED = 20250601


# ============================================================================ worker side


def _status(key: str) -> int:
    m = re.search(key + r":\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    return int(m.group(1)) * 1024 if m else 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _make_stack(n: int, d: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(SEED + 7919 * n + d)
    mu = torch.empty(d).normal_(generator=g)
    x = torch.empty(n, d).normal_(generator=g)
    x.add_(mu)
    x[0].mul_(25.0)  # one far update so robust rules differ from the mean
    return x


def _params(n: int, d: int) -> dict[str, Any]:
    fb = max(1, n // 10)  # ByzFL's f
    return {
        "f_trim": fb,
        "fb": fb,
        "f_krum": fb - 1,  # ours/Flower: n - f - 2 neighbours == ByzFL's n - fb - 1
        "m_multi": n - fb,
        "clip": float(d) ** 0.5,  # ~ the honest norms
        "tau": 10.0,
    }


def _ours(n: int, d: int) -> dict[str, Callable[[Any], Any]]:
    from aggregator.rules import (
        CenteredClipping,
        FedAvg,
        FoundationFL,
        GeometricMedian,
        Krum,
        Median,
        MultiKrum,
        NormClipping,
        TrimmedMean,
    )

    p = _params(n, d)
    return {
        "fedavg": FedAvg(),
        "median": Median(),
        "trimmed_mean": TrimmedMean(f=p["f_trim"]),
        "krum": Krum(f=p["f_krum"]),
        "multi_krum": MultiKrum(f=p["f_krum"], m=p["m_multi"]),
        "geomed": GeometricMedian(nu=0.1, max_iter=3, eps=0.0, init="zero"),
        "geomed_default": GeometricMedian(),
        "centered_clipping": CenteredClipping(tau=p["tau"], iters=3),
        "norm_clip": NormClipping(bound=p["clip"]),
        "foundation_fl": FoundationFL(),
    }


def _load_byzfl() -> tuple[types.ModuleType, types.ModuleType, str]:
    try:
        agg = importlib.import_module("byzfl.aggregators.aggregators")
        pre = importlib.import_module("byzfl.aggregators.preaggregators")
        how = "import byzfl"
    except Exception as exc:
        spec = importlib.util.find_spec("byzfl")
        if spec is None or not spec.submodule_search_locations:
            raise
        for k in [k for k in sys.modules if k == "byzfl" or k.startswith("byzfl.")]:
            del sys.modules[k]
        pkg = types.ModuleType("byzfl")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["byzfl"] = pkg
        agg = importlib.import_module("byzfl.aggregators.aggregators")
        pre = importlib.import_module("byzfl.aggregators.preaggregators")
        how = f"aggregators module only (import byzfl fails: {type(exc).__name__}: {exc})"
    return agg, pre, how


def _byzfl(n: int, d: int) -> tuple[dict[str, Callable[[Any], Any]], str]:
    from importlib.metadata import version

    agg, pre, how = _load_byzfl()
    p = _params(n, d)
    clip = pre.Clipping(c=p["clip"])
    avg = agg.Average()
    rules: dict[str, Callable[[Any], Any]] = {
        "fedavg": agg.Average(),
        "median": agg.Median(),
        "trimmed_mean": agg.TrMean(f=p["fb"]),
        "krum": agg.Krum(f=p["fb"]),
        "multi_krum": agg.MultiKrum(f=p["fb"]),
        "geomed": agg.GeometricMedian(nu=0.1, T=3),
        "centered_clipping": _fresh(lambda: agg.CenteredClipping(L=3, tau=p["tau"])),
        "norm_clip": lambda x: avg(clip(x)),  # clips x in place (it runs last)
    }
    return rules, f"byzfl {version('byzfl')}: {how}"


def _fresh(factory: Callable[[], Any]) -> Callable[[Any], Any]:
    """ByzFL's CenteredClipping keeps its last result as the next call's start: rebuild it."""
    return lambda x: factory()(x)


def _load_flower() -> tuple[types.ModuleType, str]:
    from importlib.metadata import version

    spec = importlib.util.find_spec("flwr")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("flwr is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "server" / "strategy" / "aggregate.py"
    stubs = {
        "flwr": types.ModuleType("flwr"),
        "flwr.common": types.ModuleType("flwr.common"),
        "flwr.server": types.ModuleType("flwr.server"),
        "flwr.server.client_proxy": types.ModuleType("flwr.server.client_proxy"),
    }
    common = stubs["flwr.common"]
    for name in ("FitRes", "NDArray", "NDArrays"):
        setattr(common, name, Any)
    common.parameters_to_ndarrays = None  # type: ignore[attr-defined]  # only aggregate_inplace
    stubs["flwr.server.client_proxy"].ClientProxy = Any  # type: ignore[attr-defined]
    sys.modules.update(stubs)
    mspec = importlib.util.spec_from_file_location("flwr_aggregate", path)
    assert mspec is not None and mspec.loader is not None
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    return mod, f"flwr {version('flwr')}: server/strategy/aggregate.py only"


def _flower(n: int, d: int) -> tuple[dict[str, Callable[[Any], Any]], str]:
    fa, how = _load_flower()
    p = _params(n, d)

    def results(xn: Any) -> list[Any]:
        return [([row], 1) for row in xn]

    return {
        "fedavg": lambda xn: fa.aggregate(results(xn))[0],
        "median": lambda xn: fa.aggregate_median(results(xn))[0],
        "trimmed_mean": lambda xn: fa.aggregate_trimmed_avg(results(xn), p["f_trim"] / n)[0],
        "krum": lambda xn: fa.aggregate_krum(results(xn), p["f_krum"], 0)[0],
        "multi_krum": lambda xn: fa.aggregate_krum(results(xn), p["f_krum"], p["m_multi"])[0],
    }, how


def worker(libs: str, n: int, d: int, reps: int, outdir: str, skip: list[str]) -> None:
    """Run every rule of each library in `libs` ("ours", or "byzfl+flower") on one stack."""
    import numpy as np
    import torch

    for lib in libs.split("+"):
        # a fresh stack per library: ByzFL's Clipping clips its input in place
        x = _make_stack(n, d)
        stacked = x.numel() * 4
        try:
            if lib == "ours":
                rules: dict[str, Callable[[Any], Any]] = dict(_ours(n, d))
                how = "aggregator.rules"
                arg: Any = x
            elif lib == "byzfl":
                rules, how = _byzfl(n, d)
                arg = x
            else:
                rules, how = _flower(n, d)
                arg = x.numpy()
        except Exception as exc:  # noqa: BLE001
            print(json.dumps({"lib": lib, "fatal": f"{type(exc).__name__}: {exc}"}), flush=True)
            continue
        print(json.dumps({"lib": lib, "how": how}), flush=True)
        for name, fn in rules.items():
            rec: dict[str, Any] = {"lib": lib, "rule": name}
            if f"{lib}:{name}" in skip:
                rec["error"] = "skipped: its n^2 Python-loop distances take minutes at this size"
                print(json.dumps(rec), flush=True)
                continue
            call_arg = arg
            try:
                _reset_peak()
                before = _status("VmRSS")
                t0 = time.perf_counter()
                try:
                    out = fn(call_arg)
                except RuntimeError as exc:
                    if lib != "byzfl" or "too large" not in str(exc):
                        raise
                    # torch.quantile refuses very large inputs: ByzFL's numpy path instead
                    rec["note"] = "torch path failed (quantile: input too large); numpy input"
                    call_arg = x.numpy()
                    _reset_peak()
                    before = _status("VmRSS")
                    t0 = time.perf_counter()
                    out = fn(call_arg)
                first = time.perf_counter() - t0
                peak = _status("VmHWM")
                more = reps if first < 3.0 else 0
                best = first
                for _ in range(more):
                    t0 = time.perf_counter()
                    fn(call_arg)
                    best = min(best, time.perf_counter() - t0)
                vec = out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
                np.save(Path(outdir) / f"{lib}_{name}.npy", vec.astype(np.float32).reshape(-1))
                rec.update(time=best, extra=(peak - before) / stacked, calls=1 + more)
            except Exception as exc:  # noqa: BLE001 - report and go on with the next rule
                rec["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
            print(json.dumps(rec), flush=True)


# ============================================================================ driver side


def ensure_peer_venv() -> tuple[bool, bool, list[str]]:
    """Create/complete benchmarks/.venv-peers; returns (byzfl ok, flower ok, notes)."""
    notes: list[str] = []
    env = dict(os.environ)
    if not PEER_PY.exists():
        py = shutil.which("python3") or sys.executable
        notes.append(f"creating {PEER_VENV} with {py} -m venv")
        r = subprocess.run([py, "-m", "venv", str(PEER_VENV)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            notes.append("venv creation failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])
            return False, False, notes

    def have(mod: str) -> bool:
        r = subprocess.run(
            [str(PEER_PY), "-c", f"import importlib.util,sys; sys.exit(importlib.util.find_spec({mod!r}) is None)"],
            capture_output=True,
            check=False,
        )
        return r.returncode == 0

    def pip(*args: str) -> str | None:
        r = subprocess.run(
            [str(PEER_PY), "-m", "pip", "install", "-q", *args], capture_output=True, text=True, env=env, check=False
        )
        if r.returncode == 0:
            return None
        lines = [ln for ln in r.stderr.strip().splitlines() if "ignored" not in ln]
        return (lines or ["pip failed"])[-1]

    steps = [
        ("torch", ("torch==2.13.0", "numpy==2.4.6")),
        ("byzfl", ("byzfl", "--no-deps")),
        ("scipy", ("scipy",)),
        ("flwr", ("flwr", "--no-deps")),
    ]
    ok = {}
    for mod, args in steps:
        if have(mod):
            ok[mod] = True
            continue
        notes.append(f"pip install {' '.join(args)}")
        err = pip(*args)
        ok[mod] = err is None
        if err:
            notes.append(f"  failed: {err}")
    return ok["torch"] and ok["byzfl"] and ok["scipy"], ok["torch"] and ok["flwr"], notes


def run_worker(py: str, libs: str, n: int, d: int, reps: int, outdir: str, skip: list[str]) -> list[dict[str, Any]]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(ROOT))
    cmd = [
        py,
        __file__,
        "--worker",
        libs,
        "--n",
        str(n),
        "--d",
        str(d),
        "--reps",
        str(reps),
        "--outdir",
        outdir,
        "--skip",
        ",".join(skip),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT), check=False)
    recs = []
    for line in r.stdout.splitlines():
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        recs.append({"lib": libs, "fatal": f"worker exited {r.returncode}: {tail}"})
    return recs


def fmt_t(t: float | None) -> str:
    if t is None:
        return "-"
    return f"{t * 1000:.0f}ms" if t < 10 else f"{t:.1f}s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker")
    ap.add_argument("--n", type=int)
    ap.add_argument("--d", type=int)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--outdir")
    ap.add_argument("--skip", default="")
    ap.add_argument("--quick", action="store_true", help="n in {10, 50}, d = 100k")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="seconds: n = 10, d = 10k, no peers (a run check: memory ratios mean nothing at this size)")
    args = ap.parse_args()
    if args.smoke:
        args.no_peers, args.reps = True, 1
    if args.worker:
        worker(args.worker, args.n, args.d, args.reps, args.outdir, args.skip.split(","))
        return

    import numpy as np

    ns = [10] if args.smoke else [10, 50] if args.quick else [10, 50, 100]
    ds = [10_000] if args.smoke else [100_000] if args.quick else [100_000, 1_000_000]
    byz_ok = flwr_ok = False
    if not args.no_peers:
        t0 = time.perf_counter()
        byz_ok, flwr_ok, notes = ensure_peer_venv()
        for line in notes:
            print(f"[peers] {line}")
        print(
            f"[peers] byzfl {'ready' if byz_ok else 'UNAVAILABLE'}, flower "
            f"{'ready' if flwr_ok else 'UNAVAILABLE'} ({time.perf_counter() - t0:.0f}s)"
        )
    print(
        f"[host] {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; torch "
        "threads default; our BLAS calls single-threaded"
    )
    targets = {"median": 1.0, "trimmed_mean": 1.0, "krum": 3.0, "multi_krum": 3.0, "geomed": 3.0}
    header = (
        f"{'n':>4} {'d':>8} {'rule':<18} {'ours':>8} {'byzfl':>8} {'flower':>8} "
        f"{'x byzfl':>8} {'x flwr':>7} {'ours mem':>9} {'byzfl mem':>9} {'flwr mem':>9} {'|diff| byzfl/flwr':>18}"
    )
    misses: list[str] = []
    mem_worst = 0.0
    started = time.perf_counter()
    print(header)
    hows: dict[str, str] = {}
    rows_out: list[str] = []
    for d in ds:
        for n in ns:
            stacked_mb = n * d * 4 / 2**20
            reps = 3 if stacked_mb <= 50 else 2 if stacked_mb <= 200 else 1
            with tempfile.TemporaryDirectory() as tmp:
                res: dict[str, dict[str, dict[str, Any]]] = {"ours": {}, "byzfl": {}, "flower": {}}
                peers = "+".join(lib for lib, ok in (("byzfl", byz_ok), ("flower", flwr_ok)) if ok)
                plan = [(sys.executable, "ours")] + ([(str(PEER_PY), peers)] if peers else [])
                # Flower's Krum computes its n^2 distances in a Python loop (25 s a call at
                # n = 50, d = 1M on this box): skipped from n^2 d > 1e9 on, and said so
                skip = ["flower:krum", "flower:multi_krum"] if n * n * d > 1_000_000_000 else []
                for py, libs in plan:
                    for rec in run_worker(py, libs, n, d, reps, tmp, skip):
                        if "how" in rec:
                            hows[rec["lib"]] = rec["how"]
                        elif "fatal" in rec:
                            print(f"[{rec['lib']}] n={n} d={d}: {rec['fatal']}")
                        else:
                            res[rec["lib"]][rec["rule"]] = rec
                for rule, o in res["ours"].items():
                    b = res["byzfl"].get(rule, {})
                    f = res["flower"].get(rule, {})
                    ot, bt, ft = o.get("time"), b.get("time"), f.get("time")
                    xb = f"{bt / ot:.1f}x" if ot and bt else ("err" if "error" in b else "-")
                    xf = (
                        f"{ft / ot:.1f}x"
                        if ot and ft
                        else ("skip" if "skipped" in f.get("error", "") else "err" if "error" in f else "-")
                    )
                    diffs = []
                    for lib, rec in (("byzfl", b), ("flower", f)):
                        po = Path(tmp) / f"ours_{rule}.npy"
                        pp = Path(tmp) / f"{lib}_{rule}.npy"
                        if "time" in rec and po.exists() and pp.exists():
                            diffs.append(f"{float(np.max(np.abs(np.load(po) - np.load(pp)))):.1e}")
                        else:
                            diffs.append("-")
                    mem = lambda r: f"{1 + r['extra']:.2f}x" if "extra" in r else "-"
                    line = (
                        f"{n:>4} {d:>8} {rule:<18} {fmt_t(ot):>8} {fmt_t(bt):>8} {fmt_t(ft):>8} "
                        f"{xb:>8} {xf:>7} {mem(o):>9} {mem(b):>9} {mem(f):>9} {'/'.join(diffs):>18}"
                    )
                    rows_out.append(line)
                    print(line, flush=True)
                    if "extra" in o:
                        mem_worst = max(mem_worst, 1 + o["extra"])
                    if rule in targets and ot and bt and bt / ot < targets[rule]:
                        misses.append(f"{rule} n={n} d={d}: {bt / ot:.2f}x < {targets[rule]:.0f}x")
                    for lib, rec in (("ours", o), ("byzfl", b), ("flower", f)):
                        if "error" in rec and "skipped" not in rec["error"]:
                            print(f"     {lib} {rule}: {rec['error']}" + (f" ({rec['note']})" if "note" in rec else ""))
                        elif "note" in rec:
                            print(f"     {lib} {rule}: {rec['note']}")
    print()
    for lib, how in hows.items():
        print(f"[{lib}] {how}")
    print(
        "times: best of the calls after the first (1 call when the first took > 3 s); "
        "mem: peak resident set during the call / stacked updates, including the stack (1.00x)"
    )
    print(
        "matched parameters: trimmed_mean f=max(1,n//10) per side; krum/multi_krum ours f=fb-1 "
        "== ByzFL f=fb (same neighbour count), m=n-fb; geomed nu=0.1, 3 iterations from 0 "
        "(geomed_default: ours, medoid start, eps=1e-5); centered_clipping tau=10, 3 iterations "
        "from 0; norm_clip bound sqrt(d)"
    )
    if byz_ok:
        print("targets vs ByzFL: " + ("all met" if not misses else "MISSED: " + "; ".join(misses)))
    print(
        f"peak memory target (<= 2x the stacked updates): worst ours {mem_worst:.2f}x -> "
        f"{'met' if mem_worst <= 2.0 else 'MISSED'}"
    )
    print(
        f"wall time {time.perf_counter() - started:.0f}s; load average {os.getloadavg()[0]:.1f} at "
        "end (other work on the machine inflates every time above, the peers' threaded torch "
        "calls most)"
    )


if __name__ == "__main__":
    main()

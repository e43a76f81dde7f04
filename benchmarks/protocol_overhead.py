"""Protocol overhead per round on the real local stack (issue 15): chain + IPFS + record, without
training and scoring, at 10, 50, 100 and 1,000 trainers.

Run: .venv/bin/python benchmarks/protocol_overhead.py [--counts 10,50,100,1000] [--rounds 3] [--smoke]
     (--smoke: 5 trainers, 1 round, well under a minute; scripts/bench-smoke.sh runs it)

The script starts anvil (`devnet.anvil.Anvil`, automine) and a js-ipfs daemon
(`devnet.ipfsnode.IpfsNode`) on free loopback ports, deploys LearningMarket, and for each count
(keys funded with anvil_setBalance, registered, each trainer its own
`trainer.participant.Participant` and state directory; one IPFS client per trainer thread) runs
rounds with pre-encoded updates (a real `mnist_cnn` delta, perturbed per trainer, encoded with
`market.protocol.codec` before the clock starts):

- trainers (a thread pool in this process): upload to IPFS, commit, [mine past the commit
  deadline], reveal;
- aggregator (`aggregator.round`): `load_context` (chain events, spec, previous record),
  `gather_inputs` (`fetch_verified`, the journal as cache, as the service, + the base models), the
  validate stage of `compute_from_inputs`, `publish_round` (model + record on IPFS),
  `finalizeRound`. The round runs with the `equal` scorer.

Not counted: training, filter + aggregate + score + reward (shown apart as "compute*"; the
validation gate, which evaluates models as scoring does, is off), and chain
waiting (deadlines are passed with anvil_mine; the time of those calls is shown as "mining*").
Every JSON-RPC request the trainers send during commit and reveal is counted on the wire (a batch
is one request carrying several methods), per trainer and by method.

Targets: <= 3 s per round at 50 trainers; growth linear, <= 60 ms per trainer (the slope of the
per-round total against the count, and the total over the count at the largest count).
Figures are written to reports/benchmarks/protocol_overhead.json (`--out`). Both processes are
stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from aggregator.round import RoundConfig, compute_from_inputs, gather_inputs, load_context, publish_round
from aggregator.service import available_for
from lab.inprocess import ETHER, MODELS, service_config, splits
from market.models import ModelSpec, init_model
from market.protocol.codec import ModelHeader, UpdateHeader, encode_model, encode_update
from market.protocol.documents import ProjectSpec
from trainer.training import TrainConfig, train_local

TARGET_S = 3.0
TARGET_N = 50
TARGET_MS_PER_TRAINER = 60.0
#: the project's round-0 hyper-parameters (`market demo`'s)
HYPERPARAMS = {"epochs": 2, "lr": 0.05, "batch_size": 32}
PHASES = ("upload", "commit", "reveal", "context", "fetch", "validate", "publish", "finalize")


# ---------------------------------------------------------------------------- meters


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuMeter:
    """CPU seconds used by this process (the trainers' and the aggregator's clients), anvil and
    the IPFS daemon between `start()` and `stop()`: shows which one a phase waits on."""

    def __init__(self, pids: dict[str, int | None]):
        self.pids = pids
        self._t0: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        t = os.times()
        return {"clients": t.user + t.system, **{k: _cpu_seconds(p) for k, p in self.pids.items()}}

    def start(self) -> None:
        self._t0 = self._now()

    def stop(self) -> dict[str, float]:
        now = self._now()
        return {k: now[k] - self._t0.get(k, 0.0) for k in now}


class RpcCounter:
    """Counts the JSON-RPC requests a Web3 HTTP provider puts on the wire (after web3's own
    caching), and the methods they carry: a batch is one request with several methods."""

    def __init__(self, w3: Any):
        manager = w3.provider._request_session_manager  # the one place every request and batch goes through
        self._post: Callable[..., bytes] = manager.make_post_request
        self._lock = threading.Lock()
        self.requests = 0
        self.methods: Counter[str] = Counter()
        manager.make_post_request = self._counted

    def _counted(self, endpoint: Any, data: Any, **kwargs: Any) -> bytes:
        body = json.loads(data) if isinstance(data, bytes | str) else data
        calls = body if isinstance(body, list) else [body]
        with self._lock:
            self.requests += 1
            self.methods.update(str(c.get("method")) for c in calls)
        return self._post(endpoint, data, **kwargs)

    def snapshot(self) -> tuple[int, Counter[str]]:
        with self._lock:
            return self.requests, Counter(self.methods)


class ThreadStores:
    """One IPFS client per thread, so that a pool of trainer threads each talk over their own
    connection (as trainers on their own machines would) without one client per trainer."""

    def __init__(self, api: str):
        self.api = api
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _store(self) -> Any:
        store = getattr(self._local, "store", None)
        if store is None:
            from market.storage import IpfsStore

            store = self._local.store = IpfsStore(self.api, timeout=120)
            with self._lock:
                self._all.append(store)
        return store

    def add(self, data: bytes) -> str:
        return str(self._store().add(data))

    def cat(self, cid: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
        return bytes(self._store().cat(cid, max_bytes=max_bytes, timeout=timeout))

    def close(self) -> None:
        for store in self._all:
            with contextlib.suppress(Exception):
                store.close()


# ---------------------------------------------------------------------------- one round


@dataclass
class RoundTiming:
    n: int
    round: int
    upload: float = 0.0
    commit: float = 0.0
    reveal: float = 0.0
    context: float = 0.0
    fetch: float = 0.0
    validate: float = 0.0
    publish: float = 0.0
    finalize: float = 0.0
    compute_not_counted: float = 0.0
    mine_not_counted: float = 0.0
    mined_blocks: int = 0
    update_bytes: int = 0
    record_bytes: int = 0
    accepted: int = 0
    #: wire requests and methods the trainers sent during commit + reveal, and the aggregator's round
    trainer_requests: int = 0
    trainer_methods: dict[str, int] = field(default_factory=dict)
    aggregator_requests: int = 0
    aggregator_methods: dict[str, int] = field(default_factory=dict)
    #: CPU seconds per process during the trainers' phases and the aggregator's phase
    cpu_trainers: dict[str, float] = field(default_factory=dict)
    cpu_aggregator: dict[str, float] = field(default_factory=dict)

    @property
    def trainers(self) -> float:
        return self.upload + self.commit + self.reveal

    @property
    def aggregator(self) -> float:
        return self.context + self.fetch + self.validate + self.publish + self.finalize

    @property
    def total(self) -> float:
        return self.trainers + self.aggregator


def _real_delta(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """One real mnist_cnn update: one epoch on 400 MNIST-5k samples from the initial weights."""
    train, _, _ = splits("mnist5k", 0)
    shard = train.subset(np.arange(400))
    res = train_local(spec, init_model(spec, 0).state_dict(), shard, TrainConfig(epochs=1, lr=0.05, seed=1))
    return res.delta


def _since(counter: RpcCounter, before: tuple[int, Counter[str]]) -> tuple[int, dict[str, int]]:
    requests, methods = counter.snapshot()
    return requests - before[0], dict(methods - before[1])


def _aggregate_round(agg: Any, store: Any, journal: Any, pid: int, r: int, pspec: ProjectSpec,
                     config: RoundConfig, valset: Any, validation_cid: str, timing: RoundTiming) -> str:
    """The service's round (`aggregator.round`) with the `equal` scorer: context, fetch (the
    journal as cache), validate, [filter, aggregate, score, reward, adapt: not counted], publish,
    finalize. Returns the new model's CID."""
    t0 = time.perf_counter()
    info = agg.project(pid)
    ctx = load_context(agg, store, pid, r, available_for(agg, info, r), spec=pspec)
    t1 = time.perf_counter()
    inputs = gather_inputs(store, ctx, valset=valset, validation_cid=validation_cid, config=config, cache=journal)
    t2 = time.perf_counter()
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks[name] = time.perf_counter()

    computed = compute_from_inputs(inputs, config, on_stage=mark)
    t4 = time.perf_counter()
    published = publish_round(store, computed)
    t5 = time.perf_counter()
    agg.finalize_round(pid, r, published.model_cid, published.record_cid, computed.root, computed.allocation)
    t6 = time.perf_counter()
    t3 = marks["validate"]
    timing.context, timing.fetch, timing.validate = t1 - t0, t2 - t1, t3 - t2
    timing.compute_not_counted = t4 - t3
    timing.publish, timing.finalize = t5 - t4, t6 - t5
    timing.record_bytes = len(published.record_bytes)
    timing.accepted = sum(1 for c in computed.candidates if c.accepted)
    return str(published.model_cid)


# ---------------------------------------------------------------------------- the run


def overhead(counts: Sequence[int], rounds: int, console: Console, workers: int) -> dict[str, Any]:
    """Run `rounds` rounds at each trainer count on a fresh local stack; every round's timings."""
    from eth_account import Account
    from eth_utils import keccak

    from aggregator.journal import Journal
    from aggregator.valset import load_validation_set
    from devnet.anvil import Anvil, rpc_call
    from devnet.ipfsnode import IpfsNode
    from devnet.ports import free_ports
    from market.chain import ProjectParams, connect
    from market.chain.accounts import dev_account
    from market.chain.deployment import deploy
    from market.storage import IpfsStore
    from trainer.participant import Participant

    # Scoring and the validation gate evaluate models: computation, not protocol overhead.
    base = service_config(score=False)
    config = dataclasses.replace(base, filters=dataclasses.replace(base.filters, validation_gate=False))
    ms = MODELS["mnist5k"]
    out: dict[str, Any] = {"rounds_per_count": rounds, "threads": workers, "timings": []}
    with tempfile.TemporaryDirectory(prefix="protocol-overhead-") as d:
        tmp = Path(d)
        anvil_port, api, gw, rpcp = free_ports(4)
        ipfs = IpfsNode(tmp / "ipfs" / "repo", api, gw, rpcp)
        anvil = Anvil(tmp / "anvil", port=anvil_port, accounts=10)
        anvil.state_dir.mkdir(parents=True)
        trainer_stores = ThreadStores(ipfs.api_multiaddr)
        agg_store = None
        try:
            with console.status("starting anvil and the js-ipfs daemon..."):
                ipfs.start(timeout=120)
                anvil.start()
            out["pids"] = {"anvil": anvil.process.pid, "ipfs": ipfs.status().pid}
            cpu = CpuMeter(out["pids"])
            out["ipfs_version"] = ipfs.status().version
            w3 = connect(anvil.url)
            rpc = RpcCounter(w3)
            dep = deploy(w3, dev_account(0), anvil.url)
            owner = dep.client(w3, dev_account(0))
            agg = dep.client(w3, dev_account(1))
            agg_store = IpfsStore(ipfs.api_multiaddr, timeout=120)
            with console.status("training one real mnist_cnn delta and publishing the spec..."):
                delta0 = _real_delta(ms)
                init = init_model(ms, 0).state_dict()
                wcid = agg_store.add(encode_model(init, ModelHeader(0, 0, ms.architecture)))
                pspec = ProjectSpec(model=ms.model_copy(update={"initial_weights_cid": wcid}),
                                    hyperparams=dict(HYPERPARAMS))
                spec_cid = agg_store.add(pspec.to_bytes())
                valset = load_validation_set("mnist5k:size=500,seed=0", ms)
                validation_cid = agg_store.add(valset.to_npz())
            for n in counts:
                accounts = [Account.from_key(keccak(text=f"protocol-overhead-trainer-{n}-{i}")) for i in range(n)]
                for a in accounts:
                    rpc_call(anvil.url, "anvil_setBalance", [a.address, hex(10**21)])
                params = ProjectParams(
                    aggregator=dev_account(1).address, arbiter=dev_account(2).address, num_rounds=rounds,
                    reward_per_round=ETHER, commit_window=2 * n + 30, reveal_window=n + 30, challenge_window=2,
                    spec_cid=spec_cid,
                )
                pid, _ = owner.create_project(params)
                parts = [Participant(owner.with_account(a), trainer_stores, tmp / "trainers" / f"n{n}-{i}",
                                     poll_interval=0.01) for i, a in enumerate(accounts)]
                journal = Journal(tmp / "journal" / f"p{pid}")
                with ThreadPoolExecutor(max_workers=min(n, workers), thread_name_prefix="trainer") as pool:
                    with console.status(f"{n} trainers register in project {pid}..."):
                        list(pool.map(Participant.join, parts, [pid] * n))
                    base_cid = wcid
                    for r in range(rounds):
                        timing = RoundTiming(n, r)
                        # pre-encoded updates (the training side; not timed)
                        gen = torch.Generator().manual_seed(1000 * n + r)
                        blobs = []
                        for p in parts:
                            d_i = {k: v * (1.0 + 0.1 * torch.randn(v.shape, generator=gen)) for k, v in delta0.items()}
                            blobs.append(encode_update(d_i, UpdateHeader(pid, r, base_cid, p.address, 400)))
                        timing.update_bytes = len(blobs[0])
                        with console.status(f"{n} trainers, round {r}: upload, commit, reveal"):
                            cpu.start()
                            t0 = time.perf_counter()
                            states = list(pool.map(Participant.prepare, parts, [pid] * n, [r] * n, blobs))
                            t1 = time.perf_counter()
                            before = rpc.snapshot()
                            states = list(pool.map(Participant.commit, parts, states))
                            t2 = time.perf_counter()
                            committed = _since(rpc, before)
                            timing.upload, timing.commit = t1 - t0, t2 - t1
                            info = agg.project(pid)
                            tm = time.perf_counter()
                            k = info.commit_deadline - agg.block_number + 1
                            if k > 0:
                                anvil.mine(k)
                                timing.mined_blocks += k
                            timing.mine_not_counted += time.perf_counter() - tm
                            before = rpc.snapshot()
                            t3 = time.perf_counter()
                            states = list(pool.map(Participant.reveal, parts, states))
                            timing.reveal = time.perf_counter() - t3
                            revealed = _since(rpc, before)
                            timing.trainer_requests = committed[0] + revealed[0]
                            timing.trainer_methods = dict(Counter(committed[1]) + Counter(revealed[1]))
                            assert all(s.stage.value == "revealed" for s in states)
                            tm = time.perf_counter()
                            k = info.reveal_deadline - agg.block_number + 1
                            if k > 0:
                                anvil.mine(k)
                                timing.mined_blocks += k
                            timing.mine_not_counted += time.perf_counter() - tm
                            timing.cpu_trainers = cpu.stop()
                        with console.status(f"{n} trainers, round {r}: aggregator context, fetch, validate, publish, "
                                            "finalize"):
                            cpu.start()
                            before = rpc.snapshot()
                            base_cid = _aggregate_round(agg, agg_store, journal, pid, r, pspec, config, valset,
                                                        validation_cid, timing)
                            timing.aggregator_requests, timing.aggregator_methods = _since(rpc, before)
                            timing.cpu_aggregator = cpu.stop()
                        out["timings"].append({**asdict(timing), "trainers": timing.trainers,
                                               "aggregator": timing.aggregator, "total": timing.total})
                        console.print(
                            f"  n={n} round {r}: trainers {timing.trainers:.2f} s (upload {timing.upload:.2f}, "
                            f"commit {timing.commit:.2f}, reveal {timing.reveal:.2f}); aggregator "
                            f"{timing.aggregator:.2f} s (context {timing.context:.2f}, fetch {timing.fetch:.2f}, "
                            f"validate {timing.validate:.2f}, publish {timing.publish:.2f}, finalize "
                            f"{timing.finalize:.2f}); total {timing.total:.2f} s; "
                            f"{timing.trainer_requests / n:.1f} RPC requests per trainer", highlight=False)
        finally:
            trainer_stores.close()
            if agg_store is not None:
                with contextlib.suppress(Exception):
                    agg_store.close()
            anvil.stop()
            ipfs.stop()
            out["stopped"] = {"anvil": anvil.process.pid is None, "ipfs": not ipfs.is_running()}
    return out


# ---------------------------------------------------------------------------- summary


def summarize(ov: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per count: the median over rounds of every phase, RPC methods per trainer."""
    rows = []
    by_n: dict[int, list[dict[str, Any]]] = {}
    for t in ov.get("timings", []):
        by_n.setdefault(int(t["n"]), []).append(t)
    keys = (*PHASES, "trainers", "aggregator", "total", "compute_not_counted", "mine_not_counted")
    for n, ts in sorted(by_n.items()):
        cpu = {f"cpu_{phase}_{proc}": statistics.median(t[f"cpu_{phase}"].get(proc, 0.0) for t in ts)
               for phase in ("trainers", "aggregator") for proc in ("clients", "anvil", "ipfs")}
        methods: Counter[str] = Counter()
        for t in ts:
            methods.update(t["trainer_methods"])
        per_trainer = {m: c / (n * len(ts)) for m, c in sorted(methods.items())}
        total = statistics.median(t["total"] for t in ts)
        rows.append({
            "n": n, "rounds": len(ts), **{k: statistics.median(t[k] for t in ts) for k in keys}, **cpu,
            "total_max": max(t["total"] for t in ts), "ms_per_trainer": total / n * 1000,
            # this process's CPU (every trainer's client and the aggregator's): what the GIL serialises
            "py_cpu_ms_per_trainer": statistics.median(
                t["cpu_trainers"].get("clients", 0.0) + t["cpu_aggregator"].get("clients", 0.0) for t in ts) / n * 1000,
            "rpc_requests_per_trainer": statistics.mean(t["trainer_requests"] for t in ts) / n,
            "rpc_methods_per_trainer": per_trainer,
            "aggregator_requests": statistics.median(t["aggregator_requests"] for t in ts),
            "update_bytes": ts[0]["update_bytes"], "record_bytes": statistics.median(t["record_bytes"] for t in ts),
        })
    return rows


def slope_ms(rows: list[dict[str, Any]]) -> float | None:
    """Least-squares slope of the per-round total against the count, in ms per trainer."""
    if len(rows) < 2:
        return None
    xs = np.array([r["n"] for r in rows], dtype=float)
    ys = np.array([r["total"] for r in rows], dtype=float)
    return float(np.polyfit(xs, ys, 1)[0] * 1000)


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    at = [r for r in rows if r["n"] == TARGET_N]
    out.append({
        "target": f"<= {TARGET_S:g} s per round at {TARGET_N} trainers",
        "measured": f"{at[0]['total']:.2f} s (median of {at[0]['rounds']}, max {at[0]['total_max']:.2f})" if at
        else f"not run at {TARGET_N} trainers",
        "met": at[0]["total"] <= TARGET_S if at else None,
    })
    if rows:
        big = max(rows, key=lambda r: r["n"])
        slope = slope_ms(rows)
        measured = f"{big['ms_per_trainer']:.1f} ms per trainer at {big['n']} (total / count)"
        if slope is not None:
            measured += f"; slope {slope:.1f} ms per trainer over {', '.join(str(r['n']) for r in rows)}"
            met: bool | None = slope <= TARGET_MS_PER_TRAINER
        else:  # one count: total / count bounds the slope from above (it includes the fixed costs)
            met = True if big["ms_per_trainer"] <= TARGET_MS_PER_TRAINER else None
        out.append({"target": f"linear, <= {TARGET_MS_PER_TRAINER:g} ms per trainer (slope)", "measured": measured,
                    "met": met})
    return out


def _yes(ok: bool | None) -> str:
    return "[dim]n/a[/]" if ok is None else ("[green]met[/]" if ok else "[red]NOT met[/]")


def print_rows(console: Console, rows: list[dict[str, Any]]) -> None:
    t = Table(title="Protocol overhead per round on the real stack (anvil + js-ipfs), median over rounds, seconds; "
                    "training, scoring and chain waiting excluded")
    cols = ("trainers", *PHASES, "total", "max", "ms/trainer", "py CPU ms/trainer", "compute*", "mining*",
            "RPC req/trainer",
            "CPU s trainers py/anvil/ipfs", "CPU s aggr. py/anvil/ipfs")
    for c in cols:
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(str(r["n"]), *(f"{r[k]:.2f}" for k in (*PHASES, "total")), f"{r['total_max']:.2f}",
                  f"{r['ms_per_trainer']:.1f}", f"{r['py_cpu_ms_per_trainer']:.1f}",
                  f"{r['compute_not_counted']:.2f}", f"{r['mine_not_counted']:.2f}",
                  f"{r['rpc_requests_per_trainer']:.1f}",
                  "/".join(f"{r[f'cpu_trainers_{p}']:.1f}" for p in ("clients", "anvil", "ipfs")),
                  "/".join(f"{r[f'cpu_aggregator_{p}']:.1f}" for p in ("clients", "anvil", "ipfs")))
    if rows:
        t.caption = (f"update {rows[0]['update_bytes'] / 1024:.0f} KiB (mnist_cnn, f32); upload/commit/reveal: all "
                     "trainers in parallel from this one process (wall); context..finalize: the aggregator; * not "
                     f"counted; load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    console.print(t)
    m = Table(title="JSON-RPC methods per trainer per commit + reveal (on the wire; a batch counts once as a request)")
    m.add_column("trainers", justify="right")
    m.add_column("requests", justify="right")
    m.add_column("methods")
    for r in rows:
        m.add_row(str(r["n"]), f"{r['rpc_requests_per_trainer']:.1f}",
                  ", ".join(f"{k} {v:.1f}" for k, v in r["rpc_methods_per_trainer"].items()))
    console.print(m)


def print_targets(console: Console, rows: list[dict[str, Any]]) -> None:
    t = Table(title="Targets (issue 15)")
    t.add_column("target")
    t.add_column("measured")
    t.add_column("", justify="center")
    for r in rows:
        t.add_row(r["target"], r["measured"], _yes(r["met"]))
    console.print(t)


# ---------------------------------------------------------------------------- main


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind, so the finally block stops anvil and IPFS by PID


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="10,50,100,1000", help="trainer counts, comma-separated")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per count (the median is reported)")
    ap.add_argument("--threads", type=int, default=32, help="trainer threads")
    ap.add_argument("--smoke", action="store_true", help="5 trainers, 1 round")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default reports/benchmarks/protocol_overhead[.smoke].json)")
    args = ap.parse_args(argv)
    args.count_list = [int(x) for x in str(args.counts).split(",") if x.strip()]
    if args.smoke:
        args.count_list, args.rounds = [5], 1
    if not args.count_list or min(args.count_list) < 1 or args.rounds < 1:
        ap.error("--counts needs positive integers and --rounds >= 1")
    if args.out is None:
        args.out = ROOT / "reports" / "benchmarks" / ("protocol_overhead.smoke.json" if args.smoke
                                                      else "protocol_overhead.json")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    console = Console(width=None if sys.stdout.isatty() else 200)
    started = time.perf_counter()
    ov = overhead(args.count_list, args.rounds, console, args.threads)
    rows = summarize(ov)
    print_rows(console, rows)
    tg = targets(rows)
    print_targets(console, tg)
    report = {
        "meta": {
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": time.perf_counter() - started,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "loadavg_end": os.getloadavg(), "smoke": args.smoke,
        },
        "overhead": ov, "summary": rows, "slope_ms_per_trainer": slope_ms(rows), "targets": tg,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    console.print(f"figures written to {args.out} ({report['meta']['seconds']:.0f} s in all)", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

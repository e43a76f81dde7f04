"""Round latency for one trainer: from "round opened" to "revealed", training excluded.

Run: .venv/bin/python benchmarks/round_latency.py [--trials 5] [--block-time 1] [--commit-window 2]
                                                   [--model mnist_cnn] [--smoke]

Starts a real anvil node and a real js-ipfs node on free loopback ports (stopped by PID at the
end), deploys LearningMarket, and for each trial creates a project (round 0 opens at creation),
registers the trainer, then times, with a pre-encoded update (so no training), the trainer's
own code path (`trainer.update.check_update` + `Participant.submit`, what `trainer submit` runs):

- validate: the trainer's self-check of its encoded update against the spec (nothing is sent
  with a bad payload)
- upload:   the update to IPFS (`ipfs add`, pinned)
- commit:   the commit transaction, until its receipt
- wait:     until the commit deadline has passed (blocks, not work)
- reveal:   the reveal transaction, until its receipt
- other:    chain reads between the steps (state checks, deadlines)

Two chains are measured in the same run:

- interval: anvil mines a block every `--block-time` seconds; the commit window is
  `--commit-window` blocks, so `wait` is chain time, the floor any trainer faces;
- automine: anvil mines one block per transaction, and the benchmark mines past the commit
  deadline the moment the trainer starts waiting: what is left is the protocol's own overhead.

The clock starts once the trainer is registered in the freshly created project (the round is
open) and stops when the reveal's receipt is back.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from devnet.ports import free_ports
from market.chain import MarketClient, ProjectParams, connect
from market.chain.accounts import dev_account
from market.chain.deployment import deploy
from market.models import ModelSpec, init_model
from market.protocol.codec import ModelHeader, UpdateHeader, encode_model, encode_update
from market.protocol.documents import ProjectSpec
from market.storage import IpfsStore
from trainer.participant import Participant, SubmitTimings
from trainer.update import check_update

ETHER = 10**18
STEPS = ("validate", "upload", "commit", "wait", "reveal", "other", "total")
MODELS = {
    "logreg": ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10, dataset="digits"),
    "digits_mlp": ModelSpec(architecture="digits_mlp", input_shape=(64,), num_classes=10, dataset="digits"),
    "mnist_cnn": ModelSpec(architecture="mnist_cnn", input_shape=(1, 28, 28), num_classes=10, dataset="mnist5k"),
}


def publish_spec(store: IpfsStore, ms: ModelSpec) -> tuple[ProjectSpec, str, torch.nn.Module]:
    model = init_model(ms, 0)
    wcid = store.add(encode_model(model.state_dict(), ModelHeader(0, 0, ms.architecture)))
    spec = ProjectSpec(model=ms.model_copy(update={"initial_weights_cid": wcid}))
    return spec, store.add(spec.to_bytes()), model


def trial(owner: MarketClient, trainer: MarketClient, store: IpfsStore, state_dir: Path, spec: ProjectSpec,
          spec_cid: str, template: torch.nn.Module, commit_window: int,
          mine: Callable[[int], None] | None) -> dict[str, float]:
    pid, _ = owner.create_project(ProjectParams(
        aggregator=dev_account(1).address, arbiter=dev_account(2).address, num_rounds=1, reward_per_round=ETHER,
        commit_window=commit_window, reveal_window=max(10, commit_window), challenge_window=2, spec_cid=spec_cid,
    ))
    trainer.register(pid)  # with the stake the project asks
    base = spec.model.initial_weights_cid
    assert base is not None
    gen = torch.Generator().manual_seed(pid)
    delta = {k: torch.randn(v.shape, generator=gen) * 1e-3 for k, v in template.state_dict().items()}
    data = encode_update(delta, UpdateHeader(pid, 0, base, trainer.account_address, 1000))  # pre-encoded

    def on_wait(_what: str, now: int, target: int) -> None:
        if mine is not None:
            mine(target - now)

    participant = Participant(trainer, store, state_dir, poll_interval=0.02, on_wait=on_wait)
    t = SubmitTimings()
    start = time.perf_counter()  # the round is open and the trainer registered
    check_update(data, spec, template, project_id=pid, round_=0, base_model_cid=base, trainer=participant.address)
    validated = time.perf_counter()
    state = participant.submit(pid, 0, data, timeout=600, timings=t)
    total = time.perf_counter() - start
    assert state.stage.value == "revealed"
    row = {"validate": validated - start, "upload": t.upload, "commit": t.commit, "wait": t.wait, "reveal": t.reveal,
           "total": total}
    row["other"] = total - sum(row[k] for k in ("validate", "upload", "commit", "wait", "reveal"))
    row["bytes"] = float(len(data))
    return row


def run_mode(name: str, block_time: float | None, args: argparse.Namespace, ms: ModelSpec, ipfs: IpfsNode,
             tmp: Path, console: Console) -> list[dict[str, float]]:
    anvil = Anvil(tmp / f"anvil-{name}", port=free_ports(1)[0], block_time=block_time)
    anvil.state_dir.mkdir(parents=True, exist_ok=True)
    anvil.start()
    store = IpfsStore(ipfs.api_multiaddr, timeout=60)
    try:
        w3 = connect(anvil.url)
        dep = deploy(w3, dev_account(0), anvil.url)
        owner = dep.client(w3, dev_account(0))
        spec, spec_cid, template = publish_spec(store, ms)
        mine = None if block_time else anvil.mine
        rows = []
        for i in range(args.trials + 1):  # the first trial warms up connections and caches
            trainer = dep.client(w3, dev_account(3 + i % 20))
            row = trial(owner, trainer, store, tmp / f"state-{name}-{i}", spec, spec_cid, template, args.commit_window, mine)
            if i:
                rows.append(row)
            console.print(f"  {name} trial {i}{' (warm-up)' if i == 0 else ''}: {row['total']:.3f} s", highlight=False)
        return rows
    finally:
        store.close()
        anvil.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--block-time", type=float, default=1.0, help="seconds per block in the interval mode")
    ap.add_argument("--commit-window", type=int, default=2, help="blocks")
    ap.add_argument("--model", choices=sorted(MODELS), default="mnist_cnn")
    ap.add_argument("--smoke", action="store_true", help="one trial per mode with logreg: checks the script runs, not a figure")
    args = ap.parse_args()
    if args.smoke:
        args.trials, args.model = 1, "logreg"
    console = Console()
    ms = MODELS[args.model]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ipfs = IpfsNode(tmp / "ipfs" / "repo", *free_ports(3))
        ipfs.start(timeout=90)
        try:
            results = {
                f"interval ({args.block_time:g} s blocks)": run_mode("interval", args.block_time, args, ms, ipfs, tmp, console),
                "automine + mined wait": run_mode("automine", None, args, ms, ipfs, tmp, console),
            }
        finally:
            ipfs.stop()

    size = next(iter(results.values()))[0]["bytes"]
    table = Table(title=(
        f"round opened -> revealed, one trainer, training excluded: {args.model} update of {size / 1024:.0f} KiB,"
        f" commit window {args.commit_window} blocks, {args.trials} trials per mode: median (min-max), seconds"
    ))
    table.add_column("step")
    for mode in results:
        table.add_column(mode, justify="right")
    for step in STEPS:
        cells = []
        for rows in results.values():
            vals = [r[step] for r in rows]
            cells.append(f"{statistics.median(vals):.3f} ({min(vals):.3f}-{max(vals):.3f})")
        table.add_row(step, *cells)
    console.print(table)


if __name__ == "__main__":
    main()

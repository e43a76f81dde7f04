"""Flower through the market bridge against plain Flower FedAvg: same app, same task, same engine.

Run: .venv/bin/python benchmarks/flower_bridge.py [--rounds 5] [--clients 3] [--block-time 0.25]
                                                  [--commit-seconds 10] [--smoke]

The app is examples/flower (marketflower: digits_mlp on the 8x8 digits, IID thirds, one epoch per
round, accuracy on the 297 held-out digits). It runs twice, through Flower's own round loop
(`Strategy.start`), messages and records, with its ClientApp (`mods=[market_mod]`) called in
threads by a loopback in-process Grid (Flower's Ray engine starts in ~1 min on a loaded 2-core
machine and would swamp what is measured; tests/flowerbridge/test_flower_run.py runs the real
`flwr run`):

- plain:  `FedAvg` (market-project 0: the mod passes everything through);
- bridge: `MarketStrategy(FedAvg)` on the real local stack (anvil mining every --block-time s,
  js-ipfs, both on free loopback ports, stopped by PID): warm-up, the ServerApp creates the project,
  then each round is a market round (join, update, seal, upload, commit, reveal; the aggregator
  service's validation, filters, fedavg, scoring, rewards, publish, finalize), then the claims.

Printed: final accuracy of both (target: within 1 point), wall seconds per round of both, and the
bridge's overhead per round, split into the chain's clock (the commit and reveal windows, in
blocks: a floor no implementation can beat) and everything else (transactions, IPFS, the market's
round computation, the chain and IPFS reads of the bridge).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples" / "flower")]

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from rich.console import Console
from rich.table import Table

from devnet.ports import free_port, pick_ipfs_api_port
from devnet.stack import Stack
from flowerbridge import MarketStrategy
from market.chain import connect
from market.chain.accounts import dev_account
from market.chain.deployment import deploy

PROJECT = """[project]
rounds = {rounds}
reward_per_round = "1 ether"
token = "ETH"
stake = "0.1 ether"
dispute_bond = "0.05 ether"
commit_window = {commit}
reveal_window = {reveal}
challenge_window = {challenge}
aggregator = "dev:1"
arbiter = "dev:2"

[model]
architecture = "digits_mlp"
input_shape = [64]
num_classes = 10
dataset = "digits"
seed = 0

[validation]
max_update_bytes = 1_000_000
max_norm = 100.0

[hyperparams]
epochs = 1
lr = 0.05
batch_size = 32
"""


class LocalGrid(Grid):
    """Flower's Grid over ClientApps called in this process, one thread per node and message."""

    def __init__(self, client_app: Any, run_config: dict[str, Any], nodes: int):
        self.client_app = client_app
        self.run_config = run_config
        self.node_ids = list(range(101, 101 + nodes))
        self.contexts = {
            nid: Context(run_id=1, node_id=nid, node_config={"partition-id": k, "num-partitions": nodes},
                         state=RecordDict(), run_config=dict(run_config))
            for k, nid in enumerate(self.node_ids)
        }
        self.replies: dict[str, Message] = {}
        self._run = Run.create_empty(1)
        self._lock = threading.Lock()

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def _deliver(self, msg: Message) -> Message:
        return self.client_app(msg, self.contexts[msg.metadata.dst_node_id])

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        batch = list(messages)
        for msg in batch:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        with ThreadPoolExecutor(max_workers=max(1, len(batch))) as pool:
            for msg, reply in zip(batch, pool.map(self._deliver, batch), strict=True):
                with self._lock:
                    self.replies[msg.metadata.message_id] = reply
        return [m.metadata.message_id for m in batch]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        with self._lock:
            return [self.replies.pop(i) for i in message_ids if i in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))


class TimedFedAvg(FedAvg):
    """FedAvg that notes when each round's training starts and its aggregation ends."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.timings: dict[int, tuple[float, float]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Any:
        self.timings[server_round] = (time.perf_counter(), 0.0)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
        out = super().aggregate_train(server_round, replies)
        self.timings[server_round] = (self.timings[server_round][0], time.perf_counter())
        return out


def run_app(run_config: dict[str, Any], rounds: int, clients: int) -> tuple[float, dict[int, float], float, Any]:
    """(final accuracy, seconds per round, total seconds, the strategy) of one run of the app."""
    from marketflower import task
    from marketflower.client_app import app as client_app

    grid = LocalGrid(client_app, run_config, clients)
    inner = TimedFedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=clients,
                        min_evaluate_nodes=clients, min_available_nodes=clients)
    strategy: Any = inner
    if run_config.get("market-project-file"):
        strategy = MarketStrategy.from_run_config(inner, run_config)
    x, y = task.load_test()

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = task.new_model()
        model.load_state_dict(arrays.to_torch_state_dict())
        accuracy, loss = task.test(model, x, y)
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    start = time.perf_counter()
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(task.new_model().state_dict()), num_rounds=rounds,
                            train_config=ConfigRecord({}), evaluate_fn=central)
    total = time.perf_counter() - start
    timings = strategy.timings
    per_round = {r: end - begin for r, (begin, end) in timings.items()}
    final = result.evaluate_metrics_serverapp[max(result.evaluate_metrics_serverapp)]
    return float(final["accuracy"]), per_round, total, strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--block-time", type=float, default=0.25, help="anvil's clock, seconds per block")
    parser.add_argument("--commit-seconds", type=float, default=10.0, help="the commit window, in seconds of clock")
    parser.add_argument("--reveal-seconds", type=float, default=3.0, help="the reveal window, in seconds of clock")
    parser.add_argument("--smoke", action="store_true", help="2 rounds: the CI check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:  # a warm in-process client needs ~3 s to fetch, train, upload and commit
        args.rounds, args.commit_seconds, args.reveal_seconds = 2, 7.0, 2.5
    for key, value in {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                       "RAY_USAGE_STATS_ENABLED": "0"}.items():
        os.environ.setdefault(key, value)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    commit = max(4, round(args.commit_seconds / args.block_time))
    reveal = max(2, round(args.reveal_seconds / args.block_time))
    console = Console(width=132)

    with tempfile.TemporaryDirectory(prefix="flower-bridge-") as tmp:
        work = Path(tmp)
        stack = Stack(work / ".market", anvil_port=free_port(), ipfs_api_port=pick_ipfs_api_port(),
                      block_time=args.block_time)
        try:
            stack.up()
            w3 = connect(stack.anvil.url)
            deploy(w3, dev_account(0), stack.anvil.url).save(work / ".market" / "deployment.json")
            config = work / "market.toml"
            config.write_text(f'[market]\nanvil_port = {stack.anvil_port}\nipfs_api_port = {stack.ipfs_api_port}\n'
                              f'state = ".market"\n\n[aggregator]\npoll = {min(0.5, args.block_time)}\n\n'
                              f'[trainer]\npoll_interval = {min(0.5, args.block_time)}\n')
            project = work / "project.toml"
            project.write_text(PROJECT.format(rounds=args.rounds, commit=commit, reveal=reveal,
                                              challenge=min(reveal, commit)))
            base = {"num-server-rounds": args.rounds, "local-epochs": 1, "lr": 0.05, "batch-size": 32,
                    "market-project": 0, "market-project-file": "", "market-owner": "dev:0",
                    "market-config": str(config), "market-aggregator": "dev:1", "market-dev-trainers": 3}
            plain_acc, plain_rounds, plain_total, _ = run_app(base, args.rounds, args.clients)
            bridge_acc, bridge_rounds, bridge_total, bridge = run_app(
                {**base, "market-project-file": str(project)}, args.rounds, args.clients)
        finally:
            stack.down()

    window_s = (commit + reveal) * args.block_time
    plain_mean = statistics.mean(plain_rounds.values())
    bridge_mean = statistics.mean(bridge_rounds.values())
    market_s = statistics.mean(o.seconds for o in bridge.outcomes.values())
    accepted = [int(o.metrics()["market-accepted"]) for o in bridge.outcomes.values()]

    table = Table(title=f"Flower FedAvg, plain vs through the market bridge: {args.clients} clients, {args.rounds} rounds,"
                        f" digits_mlp on digits (block every {args.block_time:g} s; commit {commit} + reveal {reveal} blocks)")
    for col in ("", "plain FedAvg", "bridge", "difference"):
        table.add_column(col, justify="right")
    table.add_row("final accuracy (297 held-out digits)", f"{plain_acc:.4f}", f"{bridge_acc:.4f}",
                  f"{100 * (bridge_acc - plain_acc):+.2f} points")
    table.add_row("wall s per round (train .. aggregate)", f"{plain_mean:.2f}", f"{bridge_mean:.2f}",
                  f"{bridge_mean - plain_mean:+.2f}")
    table.add_row("  the commit + reveal windows (chain clock; training runs inside)", "-", f"{window_s:.2f}", "")
    table.add_row("  beyond the windows (market round, finalize, next model)", "-", f"{bridge_mean - window_s:.2f}", "")
    table.add_row("aggregator: reveal wait + round + finalize, s", "-", f"{market_s:.2f}", "")
    table.add_row("warm-up + project creation, s (once)", "-", f"{bridge.warm_up_seconds:.2f}", "")
    table.add_row("total wall s", f"{plain_total:.1f}", f"{bridge_total:.1f}", f"{bridge_total - plain_total:+.1f}")
    table.add_row("updates accepted per round", "-", ", ".join(map(str, accepted)), "")
    console.print(table)
    print(f"overhead per round: {bridge_mean - plain_mean:.2f} s (the round lasts the {window_s:.2f} s commit+reveal"
          f" windows, then {bridge_mean - window_s:.2f} s more); accuracy difference"
          f" {100 * abs(bridge_acc - plain_acc):.2f} points")


if __name__ == "__main__":
    main()

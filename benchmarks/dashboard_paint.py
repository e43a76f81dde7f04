"""Dashboard first paint with a long history: 100 rounds x 100 trainers (issue 16's target: the
project page paints in under 1 s).

Run: .venv/bin/python benchmarks/dashboard_paint.py [--rounds 100] [--trainers 100] [--smoke]

Builds the history on a real anvil node (free loopback port, stopped by PID at the end) with an
EmbeddedStore for the records: automining off, each round's commits sent as one JSON-RPC batch
of `eth_sendTransaction` from anvil's unlocked dev accounts and mined into one block, then the
reveals likewise, then a finalize carrying a protocol-valid round record (real Merkle root and
proofs over 100 trainers; scores and accuracy are made up: the dashboard only reads them). Then:

- sync:        a fresh `Dashboard` reads the whole event log in pages (`market.chain.events`)
- records:     it fetches and summarises every round record (the follower's warm-up)
- first paint: headless Chromium opens the project page of a freshly started server whose
               follower has caught up (the first page request it serves);
               `first-contentful-paint` from the Performance API; then the HTTP time of the page
- warm:        the same page again, and the htmx fragment the page polls every second
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboard import DashboardConfig, DashboardServer
from dashboard.service import Dashboard
from devnet.anvil import Anvil, rpc_call
from devnet.browser import launch
from devnet.ports import free_port
from market.chain import MarketClient, commitment_of, connect
from market.chain.accounts import dev_account
from market.chain.deployment import deploy
from market.protocol.documents import UpdateInput
from market.storage import EmbeddedStore
from tests.dashboard.support import AGGREGATOR, make_record, make_spec, params

FIRST_TRAINER = 3


class Batch:
    """Unsigned transactions from anvil's unlocked accounts, sent in one JSON-RPC batch."""

    def __init__(self, url: str, client: MarketClient):
        self.url, self.client = url, client
        self.http = httpx.Client(timeout=120)

    def send(self, txs: list[tuple[str, str, Any, int]]) -> None:
        """(sender, function name, args, value) each; then mine them into one block."""
        body = [
            {"jsonrpc": "2.0", "id": i, "method": "eth_sendTransaction",
             "params": [{"from": sender, "to": self.client.address, "value": hex(value), "gas": hex(3_000_000),
                         "data": self.client.contract.encode_abi(fn, args=list(args))}]}
            for i, (sender, fn, args, value) in enumerate(txs)
        ]
        out = self.http.post(self.url, json=body).json()
        errors = [o["error"] for o in out if "error" in o]
        if errors:
            raise RuntimeError(f"{len(errors)} transaction(s) failed: {errors[0]}")
        rpc_call(self.url, "evm_mine", timeout=120)
        receipts = self.http.post(self.url, json=[
            {"jsonrpc": "2.0", "id": i, "method": "eth_getTransactionReceipt", "params": [o["result"]]}
            for i, o in enumerate(out)
        ]).json()
        failed = [r["result"]["transactionHash"] for r in receipts if int(r["result"]["status"], 16) != 1]
        if failed:
            raise RuntimeError(f"{len(failed)} transaction(s) reverted, e.g. {failed[0]}")

    def mine_to(self, block: int) -> None:
        gap = block - int(self.client.w3.eth.block_number)
        if gap > 0:
            rpc_call(self.url, "anvil_mine", [hex(gap)], timeout=120)


def build(anvil: Anvil, store: EmbeddedStore, rounds: int, trainers: int) -> tuple[MarketClient, Path, int]:
    w3 = connect(anvil.url)
    dep = deploy(w3, dev_account(0), anvil.url)
    dep_file = anvil.state_dir / "deployment.json"
    dep.save(dep_file)
    owner = dep.client(w3, dev_account(0))
    spec_cid, base = make_spec(store)
    pid, _ = owner.create_project(params(spec_cid, rounds, commit=4, reveal=4, challenge=2))
    info = owner.project(pid)
    accts = [dev_account(FIRST_TRAINER + i).address for i in range(trainers)]
    rpc_call(anvil.url, "evm_setAutomine", [False])
    b = Batch(anvil.url, owner)
    b.send([(a, "register", [pid], info.stake) for a in accts])
    aggregator = dev_account(AGGREGATOR).address
    if info.aggregator_bond:
        b.send([(aggregator, "postBond", [pid], info.aggregator_bond)])
    previous = None
    rng_rejected = {accts[i] for i in range(0, trainers, 10)}
    for r in range(rounds):
        if r > 0:
            b.mine_to(owner.settles_after(pid, r - 1) + 1)
        info = owner.project(pid)
        salts = {}
        for a in accts:
            data = f"update {pid}/{r}/{a}".encode()
            salts[a] = (store.add(data), hashlib.sha256(data).digest(), os.urandom(32))
        b.send([(a, "commit", [pid, r, commitment_of(pid, r, a, *salts[a])], 0) for a in accts])
        commit_block = int(w3.eth.block_number)
        b.mine_to(info.commit_deadline + 1)
        b.send([(a, "reveal", [pid, r, *salts[a]], 0) for a in accts])
        reveal_block = int(w3.eth.block_number)
        b.mine_to(info.reveal_deadline + 1)
        inputs = [UpdateInput(trainer=a, cid=salts[a][0], digest="0x" + salts[a][1].hex(), commit_block=commit_block,
                              commit_log_index=k, reveal_block=reveal_block) for k, a in enumerate(accts)]
        model = f"model {pid}/{r}".encode()
        model_cid = store.add(model)
        allocation = owner.round_allocation(pid)
        rejected = {a: "outlier" for a in rng_rejected} if r % 3 == 1 else {}
        record = make_record(pid, r, dep.chain_id, dep.address, base, model_cid, model, inputs, rejected, allocation,
                             dict(previous.cumulative_rewards) if previous else {},
                             dict(previous.cumulative_scores) if previous else {})
        b.send([(aggregator, "finalizeRound",
                 [pid, r, model_cid, store.add(record.to_bytes()), bytes.fromhex(record.rewards_root[2:]), allocation],
                 0)])
        previous = record
    rpc_call(anvil.url, "evm_setAutomine", [True])
    return owner, dep_file, pid


def first_paint(url: str) -> tuple[float, float]:
    """(first-contentful-paint ms, load ms) of `url` in a fresh headless Chromium page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page()
            answer = page.goto(url, wait_until="load")
            if answer is None or answer.status != 200:
                raise RuntimeError(f"{url} answered {answer.status if answer else 'nothing'}")
            # headless Chromium records paint entries a frame after load
            page.wait_for_function("() => performance.getEntriesByType('paint').length > 0", timeout=10_000)
            fcp = page.evaluate(
                "() => (performance.getEntriesByName('first-contentful-paint')[0] || {startTime: NaN}).startTime")
            load = page.evaluate("() => performance.getEntriesByType('navigation')[0].loadEventEnd")
            return float(fcp), float(load)
        finally:
            browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--trainers", type=int, default=100)
    ap.add_argument("--smoke", action="store_true", help="10 rounds x 10 trainers")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.trainers = 10, 10
    with tempfile.TemporaryDirectory(prefix="dash-bench-") as tmp:
        anvil = Anvil(Path(tmp) / "anvil", port=free_port(), accounts=FIRST_TRAINER + a.trainers + 1)
        anvil.start()
        try:
            store = EmbeddedStore(Path(tmp) / "store")
            t0 = time.perf_counter()
            owner, dep_file, pid = build(anvil, store, a.rounds, a.trainers)
            built = time.perf_counter() - t0
            head = owner.block_number
            config = DashboardConfig(anvil.url, dep_file, f"embedded:{store.root}", poll=1.0)

            d = Dashboard(config)
            t0 = time.perf_counter()
            d.client()
            assert d._reader is not None
            for ev in d._reader.iter_new():
                d.index.apply(ev)
            sync = time.perf_counter() - t0
            events = d.index.events
            t0 = time.perf_counter()
            d.sync()  # fills the fixed parameters and warms every record
            records = time.perf_counter() - t0
            d.stop()

            server = DashboardServer(config)
            url = server.start()
            try:
                deadline = time.monotonic() + 300
                while httpx.get(url + "/status", timeout=30).json()["events"] < events:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the dashboard's follower did not catch up in 300 s")
                    time.sleep(0.1)
                page = f"{url}/p/{pid}"
                fcp, load = first_paint(page)  # the first request of any page on this server
                t0 = time.perf_counter()
                r = httpx.get(page, timeout=60)
                http_first = time.perf_counter() - t0
                r.raise_for_status()
                size = len(r.content)
                warm = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    httpx.get(page, timeout=60)
                    warm.append(time.perf_counter() - t0)
                frag = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    httpx.get(page, headers={"HX-Request": "true"}, timeout=60)
                    frag.append(time.perf_counter() - t0)
                fcp2, _ = first_paint(page)
            finally:
                server.stop()
        finally:
            anvil.stop()

    print(f"dashboard benchmark: {a.rounds} rounds x {a.trainers} trainers, {events} events up to block {head}, "
          f"history built in {built:.1f} s")
    rows = [
        ("sync: read the event log (paged getLogs + decode)", f"{sync * 1000:.0f} ms"),
        ("records: fetch + summarise every round record", f"{records * 1000:.0f} ms"),
        ("project page, first contentful paint (Chromium, first request after start)",
         f"{fcp:.0f} ms (load {load:.0f} ms)"),
        ("project page, next HTTP response", f"{http_first * 1000:.0f} ms ({size / 1024:.0f} KiB)"),
        ("project page, first contentful paint (new browser, warm server)", f"{fcp2:.0f} ms"),
        ("project page, warm HTTP (median of 5)", f"{statistics.median(warm) * 1000:.0f} ms"),
        ("live fragment (htmx poll), median of 5", f"{statistics.median(frag) * 1000:.0f} ms"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'what'.ljust(width)} | result |")
    print(f"| {'-' * width} | --- |")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")


if __name__ == "__main__":
    main()

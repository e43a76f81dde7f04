"""The local chain: a real anvil node on loopback, its state kept in a project-local directory."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devnet import toolpaths
from devnet.process import ManagedProcess
from market.errors import StackError


def rpc_call(url: str, method: str, params: list[object] | None = None, timeout: float = 2.0) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        out = json.loads(resp.read())
    if "error" in out:
        raise StackError(f"{method} failed: {out['error']}")
    return out["result"]


@dataclass
class Anvil:
    """anvil on 127.0.0.1:`port`, state in `state_dir/anvil-state.json`, dev accounts funded.

    `block_time` None mines a block per transaction (fast tests); a number mines on a clock, which
    deadlines in blocks need when nobody is sending transactions.
    """

    state_dir: Path
    port: int = 8545
    accounts: int = 30
    block_time: float | None = None
    chain_id: int = 31337

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("anvil", self.state_dir)

    def healthy(self) -> bool:
        try:
            return int(str(rpc_call(self.url, "eth_chainId", timeout=0.5)), 16) == self.chain_id
        except Exception:  # noqa: BLE001
            return False

    def start(self, timeout: float = 30.0) -> int:
        if not toolpaths.ANVIL_BIN.exists():
            raise StackError(f"anvil is not installed at {toolpaths.ANVIL_BIN}: run `npm ci` in {toolpaths.ROOT}")
        if self.process.pid is None and self.healthy():
            raise StackError(f"something else already answers on {self.url}: stop it or choose another --port")
        argv = [
            str(toolpaths.ANVIL_BIN),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--accounts", str(self.accounts),
            "--chain-id", str(self.chain_id),
            "--state", str(self.state_dir / "anvil-state.json"),
            "--no-request-size-limit",
        ]
        if self.block_time:
            argv += ["--block-time", str(self.block_time)]
        return self.process.start(argv, self.healthy, timeout=timeout)

    def stop(self) -> bool:
        return self.process.stop()

    def mine(self, blocks: int = 1) -> None:
        """Mine `blocks` empty blocks (anvil_mine): lets tests skip past deadlines."""
        rpc_call(self.url, "anvil_mine", [hex(blocks)], timeout=60.0)

"""The local stack: anvil and the IPFS daemon on loopback, state in one project-local directory.

The directory remembers how the stack was started (`stack.json`: ports, block time), so a later
`up` without flags brings back the same stack, and an `up` asking for something else while it runs
is refused instead of silently ignored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from devnet.ports import ipfs_ports
from market.errors import StackError

#: Seconds per block of the stack `market stack up` starts: a clock like a real chain's, so deadlines
#: in blocks pass while nobody sends transactions. `--block-time 0` mines one block per transaction.
DEFAULT_BLOCK_TIME = 1.0
_RECORDED = ("anvil_port", "ipfs_api_port", "block_time", "with_ipfs")


@dataclass
class Stack:
    state_dir: Path
    anvil_port: int = 8545
    ipfs_api_port: int = 5001
    block_time: float | None = None
    with_ipfs: bool = True

    @property
    def anvil(self) -> Anvil:
        return Anvil(self.state_dir, port=self.anvil_port, block_time=self.block_time)

    @property
    def ipfs(self) -> IpfsNode:
        return IpfsNode(
            self.state_dir / "ipfs",
            *ipfs_ports(self.ipfs_api_port),
        )

    @classmethod
    def from_state(cls, state_dir: Path, **defaults: Any) -> Stack:
        """The stack last started in `state_dir` (its ports are remembered in stack.json)."""
        saved = state_dir / "stack.json"
        if saved.exists():
            defaults = {**defaults, **json.loads(saved.read_text())}
        return cls(state_dir=state_dir, **defaults)

    @staticmethod
    def recorded(state_dir: Path) -> dict[str, Any] | None:
        saved = state_dir / "stack.json"
        return json.loads(saved.read_text()) if saved.exists() else None

    def describe(self) -> str:
        clock = f"a block every {self.block_time:g} s" if self.block_time else "one block per transaction"
        ipfs = f", IPFS API on {self.ipfs_api_port}" if self.with_ipfs else ""
        return f"anvil on {self.anvil_port} with {clock}{ipfs}"

    def up(self) -> dict[str, dict[str, Any]]:
        running = self.anvil.process.pid is not None
        before = self.recorded(self.state_dir)
        if running and before is not None:
            was = Stack(self.state_dir, **{k: before[k] for k in _RECORDED if k in before})
            if any(getattr(was, k) != getattr(self, k) for k in _RECORDED):
                raise StackError(
                    f"the stack in {self.state_dir} already runs ({was.describe()}); you asked for {self.describe()}:"
                    " run `market stack down` first, then `market stack up` with the new flags"
                )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "stack.json").write_text(
            json.dumps(
                {
                    "anvil_port": self.anvil_port,
                    "ipfs_api_port": self.ipfs_api_port,
                    "block_time": self.block_time,
                    "with_ipfs": self.with_ipfs,
                }
            )
        )
        self.anvil.start()
        if self.with_ipfs:
            node = self.ipfs
            node.init()
            node.start()
        return self.status()

    def down(self) -> list[str]:
        stopped = []
        node = self.ipfs
        if node.is_running():
            node.stop()
            stopped.append("ipfs")
        if self.anvil.stop():
            stopped.append("anvil")
        return stopped

    def status(self) -> dict[str, dict[str, Any]]:
        a = self.anvil
        out: dict[str, dict[str, Any]] = {
            "anvil": {"running": a.process.pid is not None and a.healthy(), "pid": a.process.pid, "url": a.url}
        }
        if self.with_ipfs:
            st = asdict(self.ipfs.status())
            out["ipfs"] = st | {"url": st["api_url"], "repo_dir": str(st["repo_dir"])}
        return out

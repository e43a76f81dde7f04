"""The local stack: anvil and the IPFS daemon on loopback, state in one project-local directory."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from devnet.ports import ipfs_ports


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

    def up(self) -> dict[str, dict[str, Any]]:
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

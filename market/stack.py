"""The local stack: anvil and the IPFS daemon on loopback, state in one project-local directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .anvil import Anvil


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
    def ipfs(self) -> Any:
        from .ipfsnode import IpfsNode

        return IpfsNode(
            self.state_dir / "ipfs",
            api_port=self.ipfs_api_port,
            gateway_port=self.ipfs_api_port + 3079,
            rpc_port=self.ipfs_api_port + 2,
        )

    def up(self) -> dict[str, dict[str, Any]]:
        self.anvil.start()
        if self.with_ipfs:
            node = self.ipfs
            node.init()
            node.start()
        return self.status()

    def down(self) -> list[str]:
        stopped = []
        if self.with_ipfs and self.ipfs.stop():
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
            st = self.ipfs.status()
            out["ipfs"] = st if isinstance(st, dict) else dict(st.__dict__)
        return out

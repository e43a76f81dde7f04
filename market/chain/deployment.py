"""Deploying LearningMarket and the deployment file every other command reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from web3 import Web3

from market.chain import MarketClient, RevertDecoder, TxSender, checksum
from market.chain.artifact import shipped_artifact
from market.errors import ConfigError, DeploymentError
from market.files import atomic_write


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    address: str
    block_number: int
    tx_hash: str
    deployer: str
    compiler: str
    source_hash: str
    rpc: str

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, path: Path) -> Deployment:
        path = Path(path)
        if not path.exists():
            raise DeploymentError(f"no deployment file at {path}: run `market deploy` first (or pass --deployment)")
        try:
            data = json.loads(path.read_text())
            dep = cls(**data)
            checksum(dep.address, "contract address")
        except (ValueError, TypeError, ConfigError) as exc:  # JSONDecodeError is a ValueError
            raise DeploymentError(f"malformed deployment file {path} ({exc}): run `market deploy` again") from None
        return dep

    def client(self, w3: Web3, account: LocalAccount | None = None) -> MarketClient:
        """A client for this deployment, after checking the chain really holds it."""
        chain_id = int(w3.eth.chain_id)
        if chain_id != self.chain_id:
            raise DeploymentError(
                f"the deployment is on chain {self.chain_id} but the node is chain {chain_id}: pass the right --rpc"
            )
        if len(w3.eth.get_code(checksum(self.address, "contract address"))) == 0:
            raise DeploymentError(
                f"no contract at {self.address} on this chain (was the chain restarted without --state?):"
                " run `market deploy` again"
            )
        return MarketClient(w3, self.address, shipped_artifact("LearningMarket").abi, account)


def deploy(w3: Web3, account: LocalAccount, rpc: str = "") -> Deployment:
    """Deploy LearningMarket from `account`."""
    art = shipped_artifact("LearningMarket")
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    sender = TxSender(w3, account, RevertDecoder(art.abi))
    rcpt = sender.send(factory.constructor(), action="deploy LearningMarket")
    receipt = w3.eth.get_transaction_receipt(HexStr(rcpt.tx_hash))
    address = receipt["contractAddress"]
    return Deployment(
        chain_id=int(w3.eth.chain_id),
        address=str(address),
        block_number=rcpt.block_number,
        tx_hash=rcpt.tx_hash,
        deployer=str(account.address),
        compiler=art.compiler,
        source_hash=art.source_hash,
        rpc=rpc,
    )

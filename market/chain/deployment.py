"""Deploying LearningMarket and the deployment file every other command reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from web3 import Web3

from market.chain import MarketClient, RevertDecoder, TxSender, checksum
from market.chain.artifact import shipped_artifact
from market.chain.profiles import ChainProfile, for_chain
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
    #: the chain profile it was deployed under (confirmations, paging, fees), for every tool that
    #: reads this file; None in files written before profiles: the chain's built-in profile
    profile: ChainProfile | None = None

    @property
    def chain_profile(self) -> ChainProfile:
        return self.profile or for_chain(self.chain_id)

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, path: Path) -> Deployment:
        path = Path(path)
        if not path.exists():
            raise DeploymentError(f"no deployment file at {path}: run `market deploy` first (or pass --deployment)")
        try:
            data = json.loads(path.read_text())
            if data.get("profile") is not None:
                data["profile"] = ChainProfile(**data["profile"])
            dep = cls(**data)
            checksum(dep.address, "contract address")
            if dep.profile is not None and dep.profile.chain_id != dep.chain_id:
                raise ValueError(f"its profile {dep.profile.name!r} is chain {dep.profile.chain_id}, not {dep.chain_id}")
        except (ValueError, TypeError, ConfigError) as exc:  # JSONDecodeError is a ValueError
            raise DeploymentError(f"malformed deployment file {path} ({exc}): run `market deploy` again") from None
        return dep

    def client(self, w3: Web3, account: LocalAccount | None = None, profile: ChainProfile | None = None) -> MarketClient:
        """A client for this deployment, after checking the chain really holds it; it sends under
        `profile` (default: the deployment's)."""
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
        chain = profile or self.chain_profile
        return MarketClient(w3, self.address, shipped_artifact("LearningMarket").abi, account, profile=chain,
                            # a local node answers any range in one call; public providers cap it
                            page_size=None if chain.dev_keys else chain.log_page_size,
                            confirmations=chain.confirmations, deployed_at=self.block_number)


def deploy(w3: Web3, account: LocalAccount, rpc: str = "", profile: ChainProfile | None = None) -> Deployment:
    """Deploy LearningMarket from `account` under `profile` (default: the chain's built-in one),
    which the deployment file records."""
    art = shipped_artifact("LearningMarket")
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    profile = profile or for_chain(int(w3.eth.chain_id))
    sender = TxSender(w3, account, RevertDecoder(art.abi), profile=profile)
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
        rpc=_origin(rpc),
        profile=profile,
    )


def _origin(rpc: str) -> str:
    """`rpc` without its path, query and credentials: providers put the API key there, and the
    deployment file is meant to be shared with every participant."""
    parts = urlsplit(rpc)
    if not parts.scheme or not parts.hostname:
        return rpc
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")

"""The shared protocol library of the audited learning market.

What two parties must agree on, and nothing else: the protocol documents and codec
(`market.protocol`), chain access with the shipped contract ABI (`market.chain`), content storage
(`market.storage`), models (`market.models`), the built-in datasets, the one exception tree
(`market.errors`) and the `market` CLI (`market.cli`). `market` imports neither `aggregator` nor
`trainer`; local tooling lives in `devnet`, experiments in `lab`.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are loaded on first use (PEP 562): the CLIs stay quick to start because torch and web3
# are imported only by the commands that need them.
_EXPORTS = {
    "ChainError": "errors",
    "ConfigError": "errors",
    "ContentNotFound": "errors",
    "ContractRevert": "errors",
    "Deployment": "chain.deployment",
    "DeploymentError": "errors",
    "EmbeddedStore": "storage",
    "IntegrityError": "errors",
    "IpfsStore": "storage",
    "MarketClient": "chain",
    "MarketError": "errors",
    "ModelHeader": "protocol.codec",
    "ModelSpec": "models",
    "NodeUnreachable": "errors",
    "ProjectParams": "chain",
    "ProjectSpec": "protocol.documents",
    "RewardTree": "protocol.merkle",
    "RoundRecord": "protocol.documents",
    "StorageError": "errors",
    "Store": "storage",
    "UpdateHeader": "protocol.codec",
    "UpdateRejected": "errors",
    "ValidationPolicy": "protocol.documents",
    "build_model": "models",
    "commitment_of": "chain",
    "connect": "chain",
    "decode_model": "protocol.codec",
    "decode_update": "protocol.codec",
    "deploy": "chain.deployment",
    "encode_model": "protocol.codec",
    "encode_update": "protocol.codec",
    "fetch_verified": "storage",
    "init_model": "models",
    "open_store": "storage",
    "validate_update": "protocol.validation",
}

__all__ = [
    "ChainError",
    "ConfigError",
    "ContentNotFound",
    "ContractRevert",
    "Deployment",
    "DeploymentError",
    "EmbeddedStore",
    "IntegrityError",
    "IpfsStore",
    "MarketClient",
    "MarketError",
    "ModelHeader",
    "ModelSpec",
    "NodeUnreachable",
    "ProjectParams",
    "ProjectSpec",
    "RewardTree",
    "RoundRecord",
    "StorageError",
    "Store",
    "UpdateHeader",
    "UpdateRejected",
    "ValidationPolicy",
    "build_model",
    "commitment_of",
    "connect",
    "decode_model",
    "decode_update",
    "deploy",
    "encode_model",
    "encode_update",
    "fetch_verified",
    "init_model",
    "open_store",
    "validate_update",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'market' has no attribute {name!r}")

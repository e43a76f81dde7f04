"""The shared protocol library of the audited learning market.

Chain access (`market.chain`), deployment, the local stack, content storage (`market.storage`),
the update codec and its validation, Merkle trees, the protocol documents, models, and the
`market` CLI. `market` imports neither `aggregator` nor `trainer`.
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
    "Deployment": "deployment",
    "DeploymentError": "errors",
    "EmbeddedStore": "storage",
    "IntegrityError": "errors",
    "IpfsStore": "storage",
    "MarketClient": "chain",
    "MarketError": "errors",
    "ModelHeader": "codec",
    "ModelSpec": "models",
    "NodeUnreachable": "errors",
    "ProjectParams": "chain",
    "ProjectSpec": "round_record",
    "RewardTree": "merkle",
    "RoundRecord": "round_record",
    "StorageError": "errors",
    "Store": "storage",
    "UpdateHeader": "codec",
    "UpdateRejected": "errors",
    "ValidationPolicy": "round_record",
    "build_model": "models",
    "commitment_of": "chain",
    "connect": "chain",
    "decode_model": "codec",
    "decode_update": "codec",
    "deploy": "deployment",
    "encode_model": "codec",
    "encode_update": "codec",
    "fetch_verified": "storage",
    "init_model": "models",
    "open_store": "storage",
    "validate_update": "validation",
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

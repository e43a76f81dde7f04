"""Chain access: connection, the typed LearningMarket client, and transaction sending."""

from .client import MarketClient, checksum, commitment_of
from .connection import DEFAULT_RPC, EMBEDDED, LOCAL_CHAIN_IDS, connect
from .records import (
    ETH,
    Commit,
    CommitState,
    Finalized,
    ProjectCreated,
    ProjectInfo,
    ProjectParams,
    Reveal,
    RoundInfo,
    RoundStatus,
)
from .reverts import RevertDecoder
from .sender import Receipt, TxSender

__all__ = [
    "DEFAULT_RPC",
    "EMBEDDED",
    "ETH",
    "LOCAL_CHAIN_IDS",
    "Commit",
    "CommitState",
    "Finalized",
    "MarketClient",
    "ProjectCreated",
    "ProjectInfo",
    "ProjectParams",
    "Receipt",
    "Reveal",
    "RevertDecoder",
    "RoundInfo",
    "RoundStatus",
    "TxSender",
    "checksum",
    "commitment_of",
    "connect",
]

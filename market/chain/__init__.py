"""Chain access: connection, the typed LearningMarket client, and transaction sending."""

from market.chain.client import MarketClient, checksum, commitment_of
from market.chain.connection import DEFAULT_RPC, EMBEDDED, LOCAL_CHAIN_IDS, connect
from market.chain.records import (
    ETH,
    Commit,
    CommitState,
    DisputeInfo,
    DisputeOpened,
    DisputeRuling,
    DisputeStatus,
    Expired,
    Finalized,
    ProjectCreated,
    ProjectInfo,
    ProjectParams,
    Reveal,
    Role,
    RoundInfo,
    RoundStatus,
)
from market.chain.reverts import RevertDecoder
from market.chain.sender import Receipt, TxSender

__all__ = [
    "DEFAULT_RPC",
    "EMBEDDED",
    "ETH",
    "LOCAL_CHAIN_IDS",
    "Commit",
    "CommitState",
    "DisputeInfo",
    "DisputeOpened",
    "DisputeRuling",
    "DisputeStatus",
    "Expired",
    "Finalized",
    "MarketClient",
    "ProjectCreated",
    "ProjectInfo",
    "ProjectParams",
    "Receipt",
    "Reveal",
    "RevertDecoder",
    "Role",
    "RoundInfo",
    "RoundStatus",
    "TxSender",
    "checksum",
    "commitment_of",
    "connect",
]

"""Content-addressed storage for model updates and global models: IPFS or an embedded store.

`open_store(url)` gives a `Store`; `fetch_verified` checks fetched bytes against the sha256
digest committed on chain, so integrity never depends on the node that served them.
"""

from __future__ import annotations

from market.storage.base import (
    Store,
    cid_of,
    fetch_verified,
    parse_cid,
    raw_cid,
    same_multihash,
    sha256_digest,
)
from market.storage.embedded import EmbeddedStore
from market.storage.factory import open_store
from market.storage.ipfs import DEFAULT_API, IpfsStore

__all__ = [
    "DEFAULT_API",
    "EmbeddedStore",
    "IpfsStore",
    "Store",
    "cid_of",
    "fetch_verified",
    "open_store",
    "parse_cid",
    "raw_cid",
    "same_multihash",
    "sha256_digest",
]

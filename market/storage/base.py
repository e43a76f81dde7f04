"""The storage interface every backend implements, and CID helpers that trust no node.

A `Store` holds immutable byte strings addressed by CID. Integrity never rests on the store:
the chain commits to the sha256 digest of an update's bytes, and `fetch_verified` checks the
bytes it got against that digest, whatever node served them.

CIDs are compared as decoded multihashes (`same_multihash`), never as strings: js-ipfs prints
CIDv1 in base58btc (`zdj7...`/`zb2r...`), Kubo prints CIDv0 (`Qm...`) or base32 (`bafy...`),
and all of these can name the same block.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

from multiformats import CID

from market.errors import IntegrityError, InvalidCid
from market.storage._unixfs import cid_of

__all__ = [
    "Store",
    "cid_of",
    "fetch_verified",
    "parse_cid",
    "raw_cid",
    "same_multihash",
    "sha256_digest",
]

#: Longest CID string accepted (a sha2-512 CIDv1 in base32 is ~120 characters).
MAX_CID_CHARS = 256


class Store(ABC):
    """Content-addressed byte storage: `add` returns a CID, `cat` returns the bytes back.

    Implementations: `IpfsStore` (a node's RPC API) and `EmbeddedStore` (a local directory).
    Every object added is pinned (kept until explicitly removed). Usable as a context manager.
    """

    @abstractmethod
    def add(self, data: bytes) -> str:
        """Store `data`, pin it and return its CID."""

    @abstractmethod
    def cat(self, cid: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
        """The bytes under `cid`.

        Raises InvalidCid for a malformed CID, ContentNotFound when nothing is found within the
        store's bounded wait, ContentTooLarge past `max_bytes`, StorageError otherwise.
        """

    @abstractmethod
    def pin(self, cid: str) -> None:
        """Keep `cid` (and everything below it) until unpinned; ContentNotFound if absent."""

    @abstractmethod
    def has(self, cid: str, *, timeout: float | None = None) -> bool:
        """Whether the store holds `cid`, answered within a bounded time."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and handles; the store is not used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def parse_cid(cid: str) -> CID:
    """Decode `cid` (any version, any multibase), raising InvalidCid with a one-line message."""
    if not isinstance(cid, str):
        raise InvalidCid(f"a CID must be a string, got {type(cid).__name__}: pass the CID text")
    text = cid.strip()
    if not text or len(text) > MAX_CID_CHARS:
        raise InvalidCid(
            f"{_show(cid)} is not a CID (empty or longer than {MAX_CID_CHARS} characters): "
            "pass the CID the store returned"
        )
    try:
        return CID.decode(text)
    except Exception as exc:  # noqa: BLE001 - multiformats raises assorted KeyError/ValueError
        raise InvalidCid(
            f"{_show(cid)} is not a CID ({_one_line(exc)}): pass the CID the store returned"
        ) from None


def same_multihash(a: str, b: str) -> bool:
    """Whether two CIDs carry the same multihash, whatever their version, base or codec.

    `QmX...`, `bafy...` and `zdj7...` spellings of one block compare equal. The codec is
    ignored on purpose: the multihash names the block's bytes. Raises InvalidCid if either
    string is not a CID.
    """
    return bytes(parse_cid(a).digest) == bytes(parse_cid(b).digest)


def raw_cid(data: bytes) -> str:
    """CIDv1, raw codec, sha2-256 multihash of `data`, base32 (`bafkrei...`)."""
    digest = b"\x12\x20" + hashlib.sha256(data).digest()
    return str(CID("base32", 1, "raw", digest))


def sha256_digest(data: bytes) -> bytes:
    """The 32-byte digest the chain commits to for an update's bytes."""
    return hashlib.sha256(data).digest()


def fetch_verified(
    store: Store,
    cid: str,
    sha256_digest: bytes,
    max_bytes: int,
    *,
    timeout: float | None = None,
) -> bytes:
    """Fetch `cid` (at most `max_bytes`) and check its sha256 against the committed digest.

    Raises IntegrityError when the bytes do not match, whichever store or node served them.
    """
    if len(sha256_digest) != 32:
        raise IntegrityError(
            f"expected a 32-byte sha256 digest for {_show(cid)}, got {len(sha256_digest)} bytes: "
            "pass the digest committed on chain"
        )
    data = store.cat(cid, max_bytes=max_bytes, timeout=timeout)
    got = hashlib.sha256(data).digest()
    if got != sha256_digest:
        raise IntegrityError(
            f"bytes fetched for {_show(cid)} have sha256 {got.hex()[:16]}..., the commitment says "
            f"{sha256_digest.hex()[:16]}...: the content is not what was committed; reject it"
        )
    return data


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]

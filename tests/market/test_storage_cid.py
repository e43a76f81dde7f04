"""CID helpers: the locally computed CIDv0, raw CIDs, multihash comparison, parse errors."""

from __future__ import annotations

import hashlib

import pytest

from market.errors import IntegrityError, InvalidCid, StorageError
from market.storage import EmbeddedStore, cid_of, fetch_verified, parse_cid, raw_cid, same_multihash


def pattern(n: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(n))


# Vectors checked against the js-ipfs 0.66 daemon (`POST /api/v0/add`, default settings); the
# integration tests in test_storage_ipfs.py re-check them against a live node.
VECTORS = [
    (b"", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
    (b"hello world\n", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"),
    (pattern(1024), "QmQYsyenEpHgBd8Bttz4cKqzh5bXf6KogpUPCxfX2s4zYp"),
    (pattern(262_144), "QmZ7cfTEYzy5gH5pYNJLHQy1Fx2vDYLQhAz2WD8eicaVEP"),
    (pattern(262_145), "QmfU7NikntK2cujEDHSnAThFsUWndKSspC5x2wB8NMMgoH"),
    (pattern(1_048_577), "QmefmM5WSzEPvmZZQgQmtPLRvbryZfn5KkrwSB2e3hxZ9P"),
]


# Two-level trees (more than 174 leaves of 256 KiB), also checked against js-ipfs 0.66.
BIG_VECTORS = [
    (174 * 262_144, "QmXTEoJLkx2y1BUzcUoGyw6XLiiP9AsPPS19VP7DCUoPrv"),  # one full root
    (174 * 262_144 + 1, "QmPhNmZ9Mfi7kAjBj8yUe6BNcLP4xSe2LxoYixiWdACZuJ"),  # second level
    (175 * 262_144 + 1, "QmcxbkHKG1RoGba7BdFyYznZGfDSgyNx1qj5TQKXWYvWaz"),
]


@pytest.mark.parametrize(("size", "expected"), BIG_VECTORS, ids=lambda v: str(v))
def test_cid_of_matches_ipfs_add_for_multi_level_trees(size: int, expected: str) -> None:
    assert cid_of(hashlib.shake_256(b"market cid vector").digest(size)) == expected


@pytest.mark.parametrize(
    ("data", "expected"), VECTORS, ids=lambda v: str(len(v)) if isinstance(v, bytes) else ""
)
def test_cid_of_matches_ipfs_add(data: bytes, expected: str) -> None:
    assert cid_of(data) == expected


def test_same_multihash_across_versions_and_bases() -> None:
    v0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    parsed = parse_cid(v0)
    v1_b32 = str(parsed.set(version=1).set(base="base32"))
    v1_b58 = str(parsed.set(version=1).set(base="base58btc"))
    assert v1_b32.startswith("bafy") and v1_b58.startswith("zdj7")
    assert same_multihash(v0, v1_b32) and same_multihash(v1_b58, v1_b32)
    assert not same_multihash(v0, cid_of(b"hello world"))


def test_raw_cid_is_cidv1_raw_sha256() -> None:
    cid = raw_cid(b"abc")
    parsed = parse_cid(cid)
    assert cid.startswith("bafkrei")
    assert parsed.version == 1 and parsed.codec.name == "raw"
    assert bytes(parsed.raw_digest) == hashlib.sha256(b"abc").digest()


@pytest.mark.parametrize(
    "bad", ["", "nope", "Qm", "Qm" + "1" * 44, "bafy!!", "x" * 1000, "/ipfs/Qm"]
)
def test_parse_cid_refuses_malformed(bad: str) -> None:
    with pytest.raises(InvalidCid) as info:
        parse_cid(bad)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, StorageError)


def test_parse_cid_refuses_non_strings() -> None:
    with pytest.raises(InvalidCid):
        parse_cid(b"Qm...")  # type: ignore[arg-type]


def test_fetch_verified_checks_the_digest(tmp_path) -> None:
    store = EmbeddedStore(tmp_path)
    cid = store.add(b"payload")
    assert fetch_verified(store, cid, hashlib.sha256(b"payload").digest(), 100) == b"payload"
    with pytest.raises(IntegrityError) as info:
        fetch_verified(store, cid, hashlib.sha256(b"other").digest(), 100)
    assert "\n" not in str(info.value)
    with pytest.raises(IntegrityError):
        fetch_verified(store, cid, b"short", 100)

"""EmbeddedStore and open_store."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from pathlib import Path

import pytest

from market.errors import (
    ConfigError,
    ContentNotFound,
    ContentTooLarge,
    IntegrityError,
    InvalidCid,
)
from market.storage import (
    EmbeddedStore,
    IpfsStore,
    Store,
    cid_of,
    open_store,
    parse_cid,
    raw_cid,
    same_multihash,
)


@pytest.fixture()
def store(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store")


def test_add_cat_roundtrip_and_pinned(store: EmbeddedStore) -> None:
    for data in (b"", b"x", os.urandom(300_000)):
        cid = store.add(data)
        assert cid == raw_cid(data)
        assert store.cat(cid) == data
        assert store.has(cid)
        assert store.is_pinned(cid)
    assert isinstance(store, Store)


def test_add_is_idempotent_and_leaves_no_temp_files(store: EmbeddedStore) -> None:
    a = store.add(b"same")
    b = store.add(b"same")
    assert a == b
    leftovers = [p for p in store.root.rglob(".tmp-*")]
    assert leftovers == []


def test_any_spelling_of_the_cid_finds_the_bytes(store: EmbeddedStore) -> None:
    cid = store.add(b"spelling")
    other = str(parse_cid(cid).set(base="base58btc"))
    assert other != cid and same_multihash(other, cid)
    assert store.cat(other) == b"spelling"


def test_missing_content_is_content_not_found(store: EmbeddedStore) -> None:
    missing = raw_cid(b"never added")
    assert not store.has(missing)
    with pytest.raises(ContentNotFound):
        store.cat(missing)
    with pytest.raises(ContentNotFound):
        store.pin(missing)
    # an IPFS (dag-pb) CID of the same bytes names another block: not here either
    store.add(b"never added")
    with pytest.raises(ContentNotFound):
        store.cat(cid_of(b"never added"))


def test_malformed_cid(store: EmbeddedStore) -> None:
    with pytest.raises(InvalidCid):
        store.cat("not-a-cid")
    with pytest.raises(InvalidCid):
        store.has("")


def test_max_bytes(store: EmbeddedStore) -> None:
    cid = store.add(b"0123456789")
    assert store.cat(cid, max_bytes=10) == b"0123456789"
    with pytest.raises(ContentTooLarge):
        store.cat(cid, max_bytes=9)


def test_corruption_on_disk_is_an_integrity_error(store: EmbeddedStore) -> None:
    cid = store.add(b"original")
    digest = hashlib.sha256(b"original").hexdigest()
    (store.root / "blocks" / digest[:2] / digest).write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        store.cat(cid)


def test_context_manager(tmp_path: Path) -> None:
    with EmbeddedStore(tmp_path) as store:
        assert store.cat(store.add(b"a")) == b"a"


# -- open_store -------------------------------------------------------------------------------


def test_open_store_embedded(tmp_path: Path) -> None:
    store = open_store(f"embedded:{tmp_path / 'e'}")
    assert isinstance(store, EmbeddedStore)
    assert store.root == tmp_path / "e"


@pytest.mark.parametrize(
    ("url", "multiaddr"),
    [
        ("ipfs:/ip4/127.0.0.1/tcp/5001/http", "/ip4/127.0.0.1/tcp/5001/http"),
        ("ipfs:/ip4/127.0.0.1/tcp/5001", "/ip4/127.0.0.1/tcp/5001/http"),
        ("http://127.0.0.1:5001", "/ip4/127.0.0.1/tcp/5001/http"),
        ("http://127.0.0.1:5001/", "/ip4/127.0.0.1/tcp/5001/http"),
        ("http://localhost:5002", "/dns/localhost/tcp/5002/http"),
        ("http://[::1]:5001", "/ip6/::1/tcp/5001/http"),
    ],
)
def test_open_store_ipfs(url: str, multiaddr: str) -> None:
    store = open_store(url)
    try:
        assert isinstance(store, IpfsStore)
        assert store.address.multiaddr == multiaddr
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:5001",
        "http://192.168.1.2:5001",
        "ipfs:/ip4/8.8.8.8/tcp/5001/http",
        "http://ipfs.io:5001",
        "https://example.com",
        # the unspecified address (all interfaces) is refused too; never dialled: the check comes first
        f"http://{ipaddress.IPv4Address(0)}:5001",
    ],
)
def test_open_store_refuses_remote_hosts(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert "allow_remote" in str(info.value)
    with pytest.raises(ConfigError):
        IpfsStore(url if url.startswith("http") else url.removeprefix("ipfs:"))


def test_open_store_remote_with_explicit_flag() -> None:
    store = open_store("http://10.0.0.1:5001", allow_remote=True)
    try:
        assert isinstance(store, IpfsStore)
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://127.0.0.1",
        "s3://bucket",
        "ipfs:garbage",
        "ipfs:/ip4/127.0.0.1/udp/5001",
        "http://127.0.0.1:5001/api/v0",
        "embedded:",
        "http://127.0.0.1:99999",
        "ipfs:/ip4/localhost/tcp/5001/http",
    ],
)
def test_open_store_refuses_malformed_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)

"""open_store is the one place that knows every store address form; callers pass strings untouched."""

from __future__ import annotations

import pytest

from market.errors import ConfigError
from market.storage import EmbeddedStore, IpfsStore, open_store


@pytest.mark.parametrize("address", [
    "/ip4/127.0.0.1/tcp/5001/http",
    "/ip6/::1/tcp/5001/http",
    "/dns4/localhost/tcp/5001/http",
    "ipfs:/ip4/127.0.0.1/tcp/5001/http",
    "ipfs:/ip6/::1/tcp/5001/http",
    "http://127.0.0.1:5001",
    "  http://localhost:5001  ",
])
def test_every_ipfs_address_form_opens_an_ipfs_store(address: str) -> None:
    assert isinstance(open_store(address), IpfsStore)


def test_embedded_addresses_open_an_embedded_store(tmp_path) -> None:
    assert isinstance(open_store(f"embedded:{tmp_path}"), EmbeddedStore)
    assert isinstance(open_store(f"embedded://{tmp_path}"), EmbeddedStore)


@pytest.mark.parametrize(("address", "says"), [
    ("", "no store address"),
    ("ftp://127.0.0.1", "not a store address"),
    ("127.0.0.1:5001", "not a store address"),
    ("/udp/5001", "not an IPFS API multiaddr"),
    ("embedded:", "names no directory"),
    ("/ip4/10.1.2.3/tcp/5001/http", "not a loopback address"),
    ("http://192.168.1.2:5001", "not a loopback address"),
])
def test_bad_addresses_are_refused_in_one_line(address: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        open_store(address)
    assert "\n" not in str(info.value)

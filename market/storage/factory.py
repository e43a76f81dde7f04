"""`open_store(address)`: a `Store` from any address form, the one place that knows them all
(like web3.py's `load_provider_from_uri`). Callers pass the user's string untouched.

Accepted forms:

- `/ip4/127.0.0.1/tcp/5001/http`, `/ip6/::1/tcp/5001/http`, `/dns4/localhost/tcp/5001/http`
  (an IPFS RPC API multiaddr) -> IpfsStore
- `ipfs:/ip4/127.0.0.1/tcp/5001/http` (the same, with a scheme) -> IpfsStore
- `http://127.0.0.1:5001` (or `https://...`) -> IpfsStore
- `embedded:/path/to/dir` (or `embedded:relative/dir`) -> EmbeddedStore (one process, tests)

A node on a non-loopback host is refused unless `allow_remote=True`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from market.errors import ConfigError
from market.storage._address import parse_api_address, require_loopback
from market.storage.base import Store
from market.storage.embedded import EmbeddedStore
from market.storage.ipfs import IpfsStore

__all__ = ["open_store"]

_USAGE = "use /ip4/127.0.0.1/tcp/5001/http, http://127.0.0.1:5001 or embedded:/path"
_MULTIADDR_PROTOCOLS = ("ip4", "ip6", "dns", "dns4", "dns6")


def _embedded(url: str, rest: str, allow_remote: bool, options: dict[str, Any]) -> Store:
    if options:
        raise ConfigError(f"embedded stores take no options, got {sorted(options)}")
    path = rest.removeprefix("//")
    if not path:
        raise ConfigError(f"{url!r} names no directory: {_USAGE}")
    return EmbeddedStore(path)


def _ipfs(api: str, allow_remote: bool, options: dict[str, Any]) -> Store:
    address = parse_api_address(api)
    require_loopback(address, allow_remote)
    return IpfsStore(address.multiaddr, allow_remote=allow_remote, **options)


_SCHEMES: dict[str, Callable[[str, str, bool, dict[str, Any]], Store]] = {
    "embedded": _embedded,
    "ipfs": lambda url, rest, allow_remote, options: _ipfs(rest, allow_remote, options),
    "http": lambda url, rest, allow_remote, options: _ipfs(url, allow_remote, options),
    "https": lambda url, rest, allow_remote, options: _ipfs(url, allow_remote, options),
}


def open_store(url: str, *, allow_remote: bool = False, **options: Any) -> Store:
    """Open the store `url` names. `options` go to the IpfsStore constructor (timeouts, retries)."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"no store address given: {_USAGE}")
    text = url.strip()
    if text.startswith("/"):
        protocol = text.split("/", 2)[1].lower()
        if protocol not in _MULTIADDR_PROTOCOLS:
            raise ConfigError(f"{url!r} is not an IPFS API multiaddr (it starts with /{protocol}): {_USAGE}")
        return _ipfs(text, allow_remote, options)
    scheme, sep, rest = text.partition(":")
    opener = _SCHEMES.get(scheme.lower()) if sep else None
    if opener is None:
        raise ConfigError(f"{url!r} is not a store address: {_USAGE}")
    return opener(text, rest, allow_remote, dict(options))

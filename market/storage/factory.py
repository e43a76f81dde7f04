"""`open_store(url)`: a `Store` from a URL, refusing non-loopback nodes unless told otherwise.

Accepted forms:

- `ipfs:/ip4/127.0.0.1/tcp/5001/http` (an RPC API multiaddr after `ipfs:`) -> IpfsStore
- `http://127.0.0.1:5001` (or `https://...`) -> IpfsStore
- `embedded:/path/to/dir` (or `embedded:relative/dir`) -> EmbeddedStore
"""

from __future__ import annotations

from typing import Any

from market.errors import ConfigError
from market.storage._address import parse_api_address, require_loopback
from market.storage.base import Store
from market.storage.embedded import EmbeddedStore
from market.storage.ipfs import IpfsStore

__all__ = ["open_store"]

_USAGE = "use ipfs:/ip4/127.0.0.1/tcp/5001/http, http://127.0.0.1:5001 or embedded:/path"


def open_store(url: str, *, allow_remote: bool = False, **options: Any) -> Store:
    """Open the store `url` names. `options` go to the IpfsStore constructor (timeouts, retries).

    A node on a non-loopback host is refused with ConfigError unless `allow_remote=True`.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"no store URL given: {_USAGE}")
    text = url.strip()
    scheme, _, rest = text.partition(":")
    scheme = scheme.lower()
    if scheme == "embedded":
        if options:
            raise ConfigError(f"embedded stores take no options, got {sorted(options)}")
        path = rest.removeprefix("//")
        if not path:
            raise ConfigError(f"{url!r} names no directory: {_USAGE}")
        return EmbeddedStore(path)
    if scheme == "ipfs":
        address = parse_api_address(rest)
    elif scheme in ("http", "https"):
        address = parse_api_address(text)
    else:
        raise ConfigError(f"{url!r} is not a store URL: {_USAGE}")
    require_loopback(address, allow_remote)
    return IpfsStore(address.multiaddr, allow_remote=allow_remote, **options)

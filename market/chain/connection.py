"""Connecting to a chain: a real node over HTTP (anvil here, any EVM node elsewhere) or the
embedded eth-tester chain for quick runs and unit tests."""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from web3 import HTTPProvider, Web3

from market.chain.profiles import LOCAL_CHAIN_IDS, check_chain
from market.errors import ConfigError, NodeUnreachable

if TYPE_CHECKING:
    from market.chain.profiles import ChainProfile

EMBEDDED = "embedded"
DEFAULT_RPC = "http://127.0.0.1:8545"
__all__ = ["DEFAULT_RPC", "EMBEDDED", "LOCAL_CHAIN_IDS", "connect"]


def _check_loopback(url: str, allow_remote: bool) -> None:
    host = urlparse(url).hostname
    if host is None:
        raise ConfigError(f"malformed RPC URL {url!r}: use http://127.0.0.1:8545 or 'embedded'")
    if allow_remote or os.environ.get("MARKET_ALLOW_REMOTE") == "1":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConfigError(
            f"RPC URL {url!r} is not on loopback: set MARKET_ALLOW_REMOTE=1 to talk to another node on purpose"
        )


def connect(
    rpc: str = DEFAULT_RPC, *, timeout: float = 10.0, allow_remote: bool = False, profile: ChainProfile | None = None
) -> Web3:
    """A connected Web3 for `rpc` ("embedded" for an in-process eth-tester chain).

    Raises NodeUnreachable with a one-line hint when nothing answers at `rpc`. With a `profile`,
    the node must be on the profile's chain (ChainMismatch otherwise); a public profile is a
    remote node on purpose, so it lifts the loopback guard.
    """
    if rpc == EMBEDDED:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider

        w3 = Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))
        return w3
    if not rpc.startswith(("http://", "https://")):
        raise ConfigError(f"unsupported RPC URL {rpc!r}: use http://HOST:PORT or 'embedded'")
    _check_loopback(rpc, allow_remote or (profile is not None and not profile.dev_keys))
    # A node's chain id cannot change while it runs: asking once saves one RPC round trip on every
    # signed transaction and every deployment check (web3 asks for it each time otherwise).
    w3 = Web3(HTTPProvider(rpc, request_kwargs={"timeout": timeout}, cache_allowed_requests=True,
                           cacheable_requests={"eth_chainId"}))
    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:  # requests' ConnectionError, timeouts, bad JSON: all mean "no node"
        raise NodeUnreachable(
            f"no Ethereum node answers at {rpc} ({type(exc).__name__}): start one with `market stack up`"
            " or pass the right --rpc"
        ) from exc
    if profile is not None:
        check_chain(chain_id, profile, rpc)
    return w3

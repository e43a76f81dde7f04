"""RPC API addresses: multiaddr <-> URL, and the loopback rule."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from market.errors import ConfigError

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


@dataclass(frozen=True)
class ApiAddress:
    """Where an IPFS RPC API listens."""

    host: str
    port: int
    scheme: str  # "http" or "https"
    family: str  # "ip4", "ip6" or "dns"

    @property
    def multiaddr(self) -> str:
        proto = "dns" if self.family == "dns" else self.family
        return f"/{proto}/{self.host}/tcp/{self.port}/{self.scheme}"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if self.family == "ip6" else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.family == "dns":
            return self.host.lower() in _LOCAL_NAMES
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _port(text: str, source: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"{source!r} has no valid TCP port: give one between 1 and 65535")
    return int(text)


def parse_multiaddr(text: str) -> ApiAddress:
    """`/ip4/127.0.0.1/tcp/5001/http` (the `/http` suffix is optional) -> ApiAddress."""
    parts = text.strip().split("/")
    if len(parts) < 5 or parts[0] != "" or parts[3] != "tcp":
        raise ConfigError(
            f"{text!r} is not an RPC API multiaddr: write it as /ip4/127.0.0.1/tcp/5001/http"
        )
    family, host, port = parts[1], parts[2], _port(parts[4], text)
    rest = [p for p in parts[5:] if p]
    scheme = rest[0] if rest else "http"
    if family not in ("ip4", "ip6", "dns", "dns4", "dns6") or scheme not in ("http", "https"):
        raise ConfigError(
            f"{text!r} is not an RPC API multiaddr: write it as /ip4/127.0.0.1/tcp/5001/http"
        )
    if len(rest) > 1:
        raise ConfigError(f"{text!r} has extra parts after /{scheme}: drop them")
    if family in ("ip4", "ip6"):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"{host!r} in {text!r} is not an {family} address") from None
        if (ip.version == 4) != (family == "ip4"):
            raise ConfigError(f"{host!r} in {text!r} is not an {family} address")
    else:
        family = "dns"
    return ApiAddress(host=host, port=port, scheme=scheme, family=family)


def parse_http_url(text: str) -> ApiAddress:
    """`http://127.0.0.1:5001` -> ApiAddress (no path allowed beyond `/`)."""
    split = urlsplit(text.strip())
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ConfigError(f"{text!r} is not an http(s) URL: write it as http://127.0.0.1:5001")
    if split.path not in ("", "/") or split.query or split.fragment:
        raise ConfigError(
            f"{text!r} has a path or query: give only scheme, host and port (http://127.0.0.1:5001)"
        )
    try:
        port = split.port or (443 if split.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"{text!r} has no valid TCP port: give one between 1 and 65535") from None
    host = split.hostname
    try:
        family = "ip4" if ipaddress.ip_address(host).version == 4 else "ip6"
    except ValueError:
        family = "dns"
    return ApiAddress(host=host, port=port, scheme=split.scheme, family=family)


def parse_api_address(text: str) -> ApiAddress:
    """A multiaddr or an http(s) URL."""
    if not isinstance(text, str):
        raise ConfigError(f"an RPC API address must be a string, got {type(text).__name__}")
    return parse_multiaddr(text) if text.strip().startswith("/") else parse_http_url(text)


def require_loopback(address: ApiAddress, allow_remote: bool) -> None:
    if not address.is_loopback and not allow_remote:
        raise ConfigError(
            f"{address.url} is not a loopback address: this project talks to local nodes only; "
            "pass allow_remote=True to use a remote node deliberately"
        )

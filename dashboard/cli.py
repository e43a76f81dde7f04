"""`market dashboard`: serve the dashboard on loopback (a plugin of the `market` CLI through the
`market.commands` entry-point group, like `market audit`)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

from market.cli.config import load_settings
from market.cli.kit import ConfigOpt, DeploymentOpt, RpcOpt, console
from market.errors import ConfigError

__all__ = ["DEFAULT_PORT", "dashboard"]

DEFAULT_PORT = 8700

IpfsOpt = typer.Option(None, "--ipfs", help="IPFS API (multiaddr or URL) or embedded:DIR; default from the config.")
HostOpt = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback unless MARKET_ALLOW_REMOTE=1).")
PortOpt = typer.Option(DEFAULT_PORT, "--port", help="Port to listen on (0: any free port; the address is printed).")
PollOpt = typer.Option(1.0, "--poll", help="Seconds between chain reads and page refreshes.")


def check_host(host: str) -> None:
    """Refuse to listen beyond loopback unless told to on purpose."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and os.environ.get("MARKET_ALLOW_REMOTE") != "1":
        raise ConfigError(f"--host {host} is not a loopback address: set MARKET_ALLOW_REMOTE=1 to serve other machines")


def dashboard(
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    ipfs: str = IpfsOpt,
    host: str = HostOpt,
    port: int = PortOpt,
    poll: float = PollOpt,
    config: Path = ConfigOpt,
) -> None:
    """Serve a live web dashboard of every project (timeline, verdicts, rewards, audit) read from
    chain + IPFS alone."""
    from dashboard.server import DashboardServer
    from dashboard.service import DashboardConfig

    check_host(host)
    if poll <= 0:
        raise ConfigError(f"--poll must be positive, got {poll}")
    s = load_settings(config).merged(rpc=rpc, deployment=deployment, ipfs=ipfs)
    server = DashboardServer(DashboardConfig(s.rpc, s.deployment, s.ipfs, poll=poll), host, port)
    server.bind()
    console.print(f"dashboard at {server.url} (chain {s.rpc}, IPFS {s.ipfs}); Ctrl-C stops it", highlight=False)
    server.run()

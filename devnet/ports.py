"""Free loopback ports, and the port rule of a stack's IPFS daemon.

A stack's js-ipfs node listens on its API port, API + 2 (its own RPC) and API + 3079 (the gateway),
so `market stack up --ipfs-api-port P` needs all three free (`ipfs_ports`).
"""

from __future__ import annotations

import socket

from market.errors import StackError

__all__ = ["GATEWAY_OFFSET", "RPC_OFFSET", "free_port", "free_ports", "ipfs_ports", "pick_ipfs_api_port", "port_free"]

RPC_OFFSET = 2
GATEWAY_OFFSET = 3079


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 right now (all held open together while picking)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def ipfs_ports(api_port: int) -> tuple[int, int, int]:
    """(api, gateway, rpc) ports of a stack IPFS daemon whose API listens on `api_port`."""
    return api_port, api_port + GATEWAY_OFFSET, api_port + RPC_OFFSET


def pick_ipfs_api_port(attempts: int = 50) -> int:
    """An API port whose gateway and RPC ports (see `ipfs_ports`) are free too."""
    for _ in range(attempts):
        port = free_port()
        if port + GATEWAY_OFFSET < 65536 and all(port_free(q) for q in ipfs_ports(port)[1:]):
            return port
    raise StackError("no free ports for the IPFS daemon on 127.0.0.1: free some ports or pass --ipfs-api-port")

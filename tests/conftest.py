"""Shared fixtures: a real anvil node per session and a real js-ipfs daemon per module (both on free
loopback ports, stopped by PID), a deployed market and its deployment file, and the embedded
eth-tester chain for quick unit tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devnet import toolpaths
from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from devnet.ports import free_port, free_ports
from market.chain import MarketClient, connect
from market.chain.accounts import dev_account, fund_embedded
from market.chain.deployment import Deployment, deploy
from market.storage import IpfsStore


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    node = Anvil(tmp_path_factory.mktemp("anvil"), port=free_port())
    node.start()
    try:
        yield node
    finally:
        node.stop()
        assert node.process.pid is None


@pytest.fixture(scope="session")
def anvil_deployment(anvil: Anvil) -> Deployment:
    w3 = connect(anvil.url)
    return deploy(w3, dev_account(0), anvil.url)


@pytest.fixture()
def market(anvil: Anvil, anvil_deployment: Deployment) -> MarketClient:
    """The deployed market on anvil, sending from dev account 0 (the owner in most tests)."""
    return anvil_deployment.client(connect(anvil.url), dev_account(0))


@pytest.fixture(scope="module")
def embedded() -> tuple[MarketClient, Deployment]:
    """A market deployed on an in-process eth-tester chain, dev accounts 0..9 funded."""
    w3 = connect("embedded")
    fund_embedded(w3, [dev_account(i).address for i in range(10)])
    dep = deploy(w3, dev_account(0), "embedded")
    return dep.client(w3, dev_account(0)), dep


@pytest.fixture()
def tmp_state(tmp_path: Path) -> Path:
    return tmp_path / "state"


needs_jsipfs = pytest.mark.skipif(
    shutil.which("node") is None or not toolpaths.JSIPFS_BIN.exists(), reason="node or js-ipfs (npm ci) is missing"
)


@pytest.fixture(scope="module")
def ipfs_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpfsNode]:
    """A js-ipfs daemon (offline, loopback, no bootstrap peers) for one test module."""
    if shutil.which("node") is None or not toolpaths.JSIPFS_BIN.exists():
        pytest.skip("node or js-ipfs (npm ci) is missing")
    api, gateway, rpc = free_ports(3)
    node = IpfsNode(tmp_path_factory.mktemp("ipfs") / "repo", api, gateway, rpc)
    try:
        node.start(timeout=90)
        yield node
    finally:
        node.stop()
        assert not node.is_running()


@pytest.fixture(scope="module")
def ipfs(ipfs_node: IpfsNode) -> Iterator[IpfsStore]:
    store = IpfsStore(ipfs_node.api_multiaddr, find_timeout=1.0, timeout=30)
    yield store
    store.close()


@pytest.fixture()
def deployment_file(anvil_deployment: Deployment, tmp_path: Path) -> Path:
    path = tmp_path / "deployment.json"
    anvil_deployment.save(path)
    return path


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[Any]:
    """A private Ray instance on loopback for one test module (no dashboard, no usage statistics)."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()

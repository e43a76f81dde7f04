"""Shared fixtures: free loopback ports, a real anvil node per session (stopped by PID), a deployed
market on it, and the embedded eth-tester chain for quick unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devnet.anvil import Anvil
from devnet.ports import free_port
from market.chain import MarketClient, connect
from market.chain.accounts import dev_account, fund_embedded
from market.chain.deployment import Deployment, deploy


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

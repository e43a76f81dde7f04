"""The dashboard in headless Chromium against the real stack: its own anvil (so it can be stopped
and restarted with its --state) and a js-ipfs node on free loopback ports, a two-round project
driven by the aggregator tests' helpers and finalized by the real `aggregator serve --once`.
Checks that the timeline advances as rounds finalize, a rejected update shows its reason, the
audit view turns green, and an RPC outage shows its message and recovers. Writes a screenshot
of each page to build/screenshots/ and docs/screenshots/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboard import DashboardConfig, DashboardServer
from devnet import toolpaths
from devnet.anvil import Anvil
from devnet.browser import CHROMIUM, launch
from devnet.ipfsnode import IpfsNode
from devnet.ports import free_ports
from market.chain import MarketClient, connect
from market.chain.accounts import dev_account
from market.chain.deployment import Deployment, deploy
from market.storage import IpfsStore
from tests.aggregator.support import create_project, encode, honest_deltas, zero_delta
from tests.aggregator.test_service import honest_round, serve

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = [ROOT / "build" / "screenshots", ROOT / "docs" / "screenshots"]
WAIT = 60_000  # ms: generous, the machine is shared


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Anvil, IpfsNode, Path]]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (scripts/setup.sh does)")
    if shutil.which("node") is None or not toolpaths.JSIPFS_BIN.exists():
        pytest.skip("node or js-ipfs (npm ci) is missing")
    base = tmp_path_factory.mktemp("dash-stack")
    anvil_port, api, gateway, rpc = free_ports(4)
    anvil = Anvil(base / "anvil", port=anvil_port)
    node = IpfsNode(base / "ipfs" / "repo", api, gateway, rpc)
    anvil.start()
    try:
        node.start(timeout=90)
        dep = deploy(connect(anvil.url), dev_account(0), anvil.url)
        dep.save(base / "deployment.json")
        yield anvil, node, base / "deployment.json"
    finally:
        node.stop()
        anvil.stop()
        assert anvil.process.pid is None and not node.is_running()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch(pw)
        try:
            yield b
        finally:
            b.close()


def shot(page: Any, name: str) -> None:
    for d in SHOTS:
        d.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS[0] / f"{name}.png"), full_page=True)
    shutil.copyfile(SHOTS[0] / f"{name}.png", SHOTS[1] / f"{name}.png")


def round_state(page: Any, r: int, states: str) -> None:
    """Wait until round `r`'s row shows one of `states` (space-separated)."""
    wanted = " or ".join(f'@data-state="{s}"' for s in states.split())
    page.wait_for_selector(f'xpath=//table[@id="rounds"]//tr[@data-round="{r}" and ({wanted})]', timeout=WAIT)


def wait_status(url: str, code: int) -> None:
    """Wait until /status answers `code` (it reflects the follower's latest pass)."""
    deadline = time.monotonic() + WAIT / 1000
    while (got := httpx.get(url + "/status", timeout=30).status_code) != code:
        assert time.monotonic() < deadline, f"/status still answers {got}, not {code}"
        time.sleep(0.2)


def test_dashboard_follows_a_project_in_a_browser(stack: tuple[Anvil, IpfsNode, Path], browser: Any,
                                                  tmp_path: Path) -> None:
    anvil, node, deployment_file = stack
    owner: MarketClient = Deployment.load(deployment_file).client(connect(anvil.url), dev_account(0))
    ipfs = IpfsStore(node.api_multiaddr, find_timeout=1.0, timeout=30)
    server = DashboardServer(DashboardConfig(anvil.url, deployment_file, node.api_multiaddr, poll=0.5))
    url = server.start()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        p = create_project(owner, anvil.url, ipfs, trainers=4, rounds=2)
        page.goto(url + "/")
        page.wait_for_selector(f'a[href="/p/{p.project_id}"]', timeout=WAIT)
        shot(page, "projects")

        page.goto(f"{url}/p/{p.project_id}")
        page.wait_for_selector('#phase[data-phase="commit"]', timeout=WAIT)
        round_state(page, 0, "open")

        # round 0: three honest updates and a free-rider's zero update, which the aggregator rejects
        updates = honest_round(p, 0, p.base_cid, n=3)
        attacker = p.trainers[3].address
        updates[attacker] = encode(zero_delta(), p.project_id, 0, p.base_cid, attacker)
        p.submit(0, updates)
        page.wait_for_selector('tr[data-round="0"][data-commits="4"][data-reveals="4"]', timeout=WAIT)
        out = serve(anvil, deployment_file, node, p.project_id, tmp_path / "agg")
        assert out.returncode == 0, out.stderr
        round_state(page, 0, "challenge settled")  # the open page advanced by itself
        round_state(page, 1, "open")

        page.click(f'a[href="/p/{p.project_id}/r/0"]')
        page.wait_for_selector(f'tr[data-trainer="{attacker}"] td.reason:text-is("zero_update")', timeout=WAIT)
        shot(page, "round")

        # round 1: every trainer honest, trained from round 0's model (scaled, so no update repeats
        # round 0's: an identical one is rejected as stale)
        page.goto(f"{url}/p/{p.project_id}")
        p.settle_previous()
        base = next(f for f in owner.finalized(p.project_id) if f.round == 0).model_cid
        p.submit(1, {t.address: encode(honest_deltas()[i], p.project_id, 1, base, t.address, scale=0.8)
                     for i, t in enumerate(p.trainers)})
        out = serve(anvil, deployment_file, node, p.project_id, tmp_path / "agg")
        assert out.returncode == 0, out.stderr
        round_state(page, 1, "challenge settled")
        page.wait_for_selector('#phase[data-phase="done"]', timeout=WAIT)
        assert page.locator("svg.plot").count() >= 4
        shot(page, "project")

        page.goto(f"{url}/p/{p.project_id}/t/{p.trainers[0].address}")
        page.wait_for_selector("#earned", timeout=WAIT)
        assert page.inner_text("#earned") != "0 ETH"
        assert page.inner_text("#claim-command") == f"trainer claim {p.project_id} --account NAME"
        shot(page, "trainer")

        record_cid = next(f for f in owner.finalized(p.project_id) if f.round == 0).record_cid
        page.goto(f"{url}/cid/{record_cid}")
        assert '"verdicts"' in page.inner_text("#content")
        shot(page, "record")

        # the audit rebuilds both rounds in the dashboard's background thread and turns green
        page.goto(f"{url}/p/{p.project_id}/audit")
        page.click("#audit-all")
        page.wait_for_selector('[data-audit="pass"]', timeout=180_000)
        assert page.locator("td.fail").count() == 0 and page.locator("td.pass").count() >= 2 * 7
        shot(page, "audit")

        # an RPC outage: anvil stopped by PID shows the message; restarted with its --state, the page recovers
        page.goto(f"{url}/p/{p.project_id}")
        round_state(page, 1, "challenge settled")
        anvil.stop()
        page.wait_for_selector("#chain-down", timeout=WAIT)
        assert "Chain unavailable" in page.inner_text("#chain-down")
        wait_status(url, 503)
        shot(page, "outage")
        anvil.start()
        page.wait_for_selector("#chain-down", state="detached", timeout=WAIT)
        round_state(page, 1, "challenge settled")
        wait_status(url, 200)
    finally:
        page.close()
        server.stop()
        ipfs.close()

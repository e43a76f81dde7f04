"""The dashboard's page data on the embedded chain and an EmbeddedStore: the event index, the
paged log reader, rounds, verdicts, rewards and claims, outages and unknown projects."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dashboard import Dashboard, DashboardConfig, create_app
from dashboard.cli import check_host
from dashboard.pages import NotFound, project_page, projects_page, round_page, trainer_page
from market.chain import MarketClient
from market.chain.accounts import dev_account
from market.chain.deployment import Deployment
from market.chain.events import LogReader
from market.errors import ConfigError, NodeUnreachable
from market.storage import EmbeddedStore
from tests.dashboard.support import ETHER, make_spec, params, run_rounds

with warnings.catch_warnings():  # starlette 1.3 would rather have httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TRAINERS = [dev_account(i) for i in (3, 4, 5)]


class History:
    def __init__(self, owner: MarketClient, dep: Deployment, tmp: Path):
        self.owner, self.dep = owner, dep
        self.store_dir = tmp / "store"
        self.store = EmbeddedStore(self.store_dir)
        self.deployment_file = tmp / "deployment.json"
        dep.save(self.deployment_file)
        spec_cid, self.base = make_spec(self.store)
        self.pid, _ = owner.create_project(params(spec_cid, rounds=3, commit=10, reveal=10))
        for t in TRAINERS:
            owner.with_account(t).register(self.pid)
        self.records = run_rounds(owner, self.store, self.pid, TRAINERS, [0, 1], self.mine_to, base_cid=self.base,
                                  rejected={1: {TRAINERS[2].address: "outlier"}})

    def mine_to(self, block: int) -> None:
        gap = block - int(self.owner.w3.eth.block_number)
        if gap > 0:
            self.owner.w3.provider.ethereum_tester.mine_blocks(gap)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def history(embedded: tuple[MarketClient, Deployment], tmp_path_factory: pytest.TempPathFactory) -> History:
    owner, dep = embedded
    return History(owner, dep, tmp_path_factory.mktemp("dash"))


@pytest.fixture()
def dash(history: History, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dashboard]:
    d = Dashboard(DashboardConfig("embedded", history.deployment_file, f"embedded:{history.store_dir}"))
    # the embedded chain lives in this process: hand the dashboard the same Web3
    monkeypatch.setattr("dashboard.service.connect", lambda rpc, timeout=5.0: history.owner.w3)
    d.sync()
    yield d
    d.stop()


def test_log_reader_pages_and_resumes(history: History) -> None:
    w3 = history.owner.w3
    whole = LogReader(w3, history.dep.address, history.owner.abi, start_block=history.dep.block_number).poll()
    paged = LogReader(w3, history.dep.address, history.owner.abi, start_block=history.dep.block_number, page=3)
    first = paged.poll(to_block=paged.start_block + 10)
    rest = paged.poll()
    assert [(e.block_number, e.log_index) for e in first + rest] == [(e.block_number, e.log_index) for e in whole]
    assert paged.poll() == []  # nothing new: the cursor is at the head
    names = {e.name for e in whole}
    assert {"ProjectCreated", "TrainerRegistered", "UpdateCommitted", "UpdateRevealed", "RoundFinalized"} <= names
    created = next(e for e in whole if e.name == "ProjectCreated" and e.project_id == history.pid)
    assert created.args["budget"] == 3 * ETHER


def test_project_page_shows_rounds_trainers_and_phase(dash: Dashboard, history: History) -> None:
    rows = {r.project_id: r for r in projects_page(dash)}
    assert rows[history.pid].rounds_done == 2 and rows[history.pid].trainers == 3
    page = project_page(dash, history.pid)
    states = {r.round: r for r in page.rounds}
    assert states[0].state in ("settled", "challenge") and states[0].commits == 3 and states[0].reveals == 3
    assert states[1].accepted == 2 and states[1].rejected == 1
    assert states[2].state == "open" and states[2].opened_at is not None  # round 2 opened at round 1's finalize
    assert page.phase is not None and page.phase.name == "commit"
    assert [a for _, a in page.accuracy] == [0.3, 0.4]
    assert sum(page.rewards.values()) == 2 * ETHER
    bad = next(t for t in page.trainers if t.address == TRAINERS[2].address)
    assert bad.rejected == 1 and bad.reasons == {"outlier": 1}


def test_round_page_has_verdicts_with_reasons(dash: Dashboard, history: History) -> None:
    page = round_page(dash, history.pid, 1)
    v = {x.trainer: x for x in page.verdicts}
    assert not v[TRAINERS[2].address].accepted and v[TRAINERS[2].address].reason == "outlier"
    assert v[TRAINERS[2].address].reward_wei == 0
    assert sum(x.reward_wei for x in page.verdicts) == ETHER
    with pytest.raises(NotFound, match="has not opened"):
        round_page(dash, history.pid, 9)


def test_trainer_page_claimable_follows_settling_and_claims(dash: Dashboard, history: History) -> None:
    t = TRAINERS[0]
    page = trainer_page(dash, history.pid, t.address)
    assert page.earned_wei == history.records[-1].cumulative_rewards[t.address] > 0
    # claim against round 0 (settled: round 1 finalized after its challenge window)
    rec = history.records[0]
    proof = [bytes.fromhex(p[2:]) for p in rec.proofs[t.address]]
    history.owner.with_account(t).claim(history.pid, 0, t.address, rec.cumulative_rewards[t.address], proof)
    history.mine_to(int(history.owner.w3.eth.block_number) + 5)  # round 1 settles too
    dash.sync()
    page = trainer_page(dash, history.pid, t.address)
    assert page.claimed_wei == rec.cumulative_rewards[t.address]
    assert page.claimable_wei == history.records[-1].cumulative_rewards[t.address] - page.claimed_wei
    assert f"trainer claim {history.pid}" in page.claim_command
    assert [r.accepted for r in page.rounds if r.round < 2] == [True, True]


def test_unknown_project_and_missing_record(dash: Dashboard, history: History, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        project_page(dash, 999)
    # a store without the records: the page still renders, naming what is missing
    empty = Dashboard(DashboardConfig("embedded", history.deployment_file, f"embedded:{tmp_path / 'empty'}"))
    empty._conn, empty._reader = dash._conn, dash._reader  # same chain, fresh cursor below
    assert empty._reader is not None
    empty._reader = LogReader(history.owner.w3, history.dep.address, history.owner.abi,
                              start_block=history.dep.block_number)
    empty.sync()
    page = project_page(empty, history.pid)
    assert page.missing_records == 2 and all(r.record_error for r in page.rounds if r.finalized_at is not None)


def test_http_pages_status_and_outage(dash: Dashboard, history: History) -> None:
    app = create_app(dash, follow=False)
    with TestClient(app) as http:
        assert http.get("/").status_code == 200
        page = http.get(f"/p/{history.pid}")
        assert page.status_code == 200 and "<svg" in page.text and "accuracy per round" in page.text
        assert "outlier" in http.get(f"/p/{history.pid}/r/1").text
        assert http.get(f"/p/{history.pid}/t/{TRAINERS[1].address}").status_code == 200
        assert http.get("/p/999").status_code == 404
        frag = http.get("/p/999", headers={"HX-Request": "true"})  # htmx only swaps 2xx
        assert frag.status_code == 200 and "does not exist" in frag.text and "<html" not in frag.text
        record_cid = history.records[0].model_cid
        assert http.get(f"/cid/{record_cid}").status_code == 200
        assert http.get("/status").json()["ok"] is True
        # the chain goes away: the status says so, the pages keep the last state with a message
        dash._chain_down(NodeUnreachable("no Ethereum node answers at X"))
        status = http.get("/status")
        assert status.status_code == 503 and status.json()["chain"]["ok"] is False
        down = http.get(f"/p/{history.pid}")
        assert down.status_code == 503 and "Chain unavailable" in down.text and "round" in down.text
        dash.sync()  # the node answers again
        assert http.get("/status").status_code == 200
        assert "Chain unavailable" not in http.get(f"/p/{history.pid}").text


def test_the_dashboard_listens_on_loopback_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    check_host("127.0.0.1")
    check_host("::1")
    check_host("localhost")
    monkeypatch.delenv("MARKET_ALLOW_REMOTE", raising=False)
    # spelled through ipaddress: nothing here binds it, the point is that it is refused
    everywhere = str(ipaddress.IPv4Address(0))
    with pytest.raises(ConfigError, match="not a loopback address"):
        check_host(everywhere)
    monkeypatch.setenv("MARKET_ALLOW_REMOTE", "1")
    check_host(everywhere)


def test_disputes_and_rulings_show_on_the_round(dash: Dashboard, history: History) -> None:
    owner = history.owner
    spec_cid, base = make_spec(history.store)
    pid, _ = owner.create_project(params(spec_cid, rounds=1, commit=6, reveal=6, challenge=4))
    trainer = TRAINERS[0]
    owner.with_account(trainer).register(pid)
    run_rounds(owner, history.store, pid, [trainer], [0], history.mine_to, base_cid=base)
    owner.dispute(pid, 0, history.store.add(b"the scores look wrong"))
    dash.sync()
    assert round_page(dash, pid, 0).row.state == "disputed"
    owner.with_account(dev_account(2)).resolve_dispute(pid, 0, False, history.store.add(b"they are right"))
    dash.sync()
    page = round_page(dash, pid, 0)
    assert page.row.state == "dismissed"
    [d] = page.log.disputes
    assert d.outcome == "dismissed" and d.disputer == owner.account_address and d.reason_cid
    app = create_app(dash, follow=False)
    with TestClient(app) as http:
        assert 'data-outcome="dismissed"' in http.get(f"/p/{pid}/r/0").text


def test_log_reader_splits_a_page_the_node_refuses(history: History) -> None:
    w3 = history.owner.w3
    calls: list[tuple[int, int]] = []

    class Capped:
        """A node that refuses ranges over 20 blocks, as public nodes cap getLogs."""

        def __init__(self) -> None:
            self.provider = w3.provider

        @property
        def eth(self) -> Capped:
            return self

        @property
        def block_number(self) -> int:
            return int(w3.eth.block_number)

        def get_logs(self, query: dict[str, int]) -> list[object]:
            calls.append((query["fromBlock"], query["toBlock"]))
            if query["toBlock"] - query["fromBlock"] >= 20:
                raise ValueError("query returned more than 10000 results: exceed the limit, narrow the block range")
            return list(w3.eth.get_logs(query))  # type: ignore[arg-type]

    start = history.dep.block_number
    capped = LogReader(Capped(), history.dep.address, history.owner.abi, start_block=start)  # type: ignore[arg-type]
    whole = LogReader(w3, history.dep.address, history.owner.abi, start_block=start).poll()
    assert [(e.block_number, e.log_index) for e in capped.poll()] == [(e.block_number, e.log_index) for e in whole]
    assert any(b - a >= 20 for a, b in calls)  # it was refused, split, and read all the same


def test_market_dashboard_serves_and_reports_a_missing_deployment(tmp_path: Path) -> None:
    """`market dashboard` (the entry-point plugin) prints its address and says what is wrong."""
    argv = [sys.executable, "-m", "market.cli", "dashboard", "--port", "0", "--rpc", "http://127.0.0.1:9",
            "--deployment", str(tmp_path / "none.json"), "--ipfs", f"embedded:{tmp_path / 'store'}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"dashboard at (http://127\.0\.0\.1:\d+)", line)
        assert found, line
        url = found.group(1)
        deadline = time.monotonic() + 30
        while True:
            try:
                status = httpx.get(url + "/status", timeout=5)
                if status.json()["chain"]["error"] != "not connected yet":
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the dashboard did not answer"
            time.sleep(0.2)
        assert status.status_code == 503
        assert "no deployment file" in status.json()["chain"]["error"]
        assert status.json()["ipfs"]["ok"] is True
        assert "no deployment file" in httpx.get(url + "/", timeout=5).text
    finally:
        proc.terminate()
        proc.wait(timeout=15)

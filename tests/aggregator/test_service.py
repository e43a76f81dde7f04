"""The aggregator service on the real local stack: anvil (session fixture) and a js-ipfs node on
free loopback ports (stopped by PID). Trainers commit and reveal directly with MarketClient +
market.codec. Covers a full round served by `python -m aggregator.cli serve --once`, the
kill-and-restart test (SIGKILL-equivalent `os._exit(137)` injected after several stages), a
round where every update is rejected (its reward rolls over), and an IPFS outage."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.journal import Journal, Stage
from aggregator.service import AggregatorService, outage_kind, setup_logging
from aggregator.settings import AggregatorSettings
from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from market.chain import MarketClient, RoundStatus
from market.chain.accounts import dev_account
from market.errors import (
    ContentNotFound,
    ContractRevert,
    IntegrityError,
    NodeUnreachable,
    StorageError,
    StorageTimeout,
    StorageUnavailable,
)
from market.protocol.merkle import RewardTree
from market.protocol.reading import load_record
from market.storage import IpfsStore
from tests.aggregator.support import (
    AGGREGATOR,
    ETHER,
    VALIDATION,
    ChainProject,
    create_project,
    encode,
    honest_deltas,
    revert,
    snapshot,
    zero_delta,
)
from tests.conftest import needs_jsipfs

pytestmark = [
    pytest.mark.integration,
    # ipfshttpclient's urllib3 warning: IpfsStore silences it with warnings.catch_warnings, which
    # is not thread-safe, so parallel fetches let some through
    pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning"),
]

def serve(anvil: Anvil, deployment_file: Path, ipfs_node: IpfsNode, project_id: int, state: Path,
          *extra: str, crash_at: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AGGREGATOR_CRASH_AT"}
    if crash_at:
        env["AGGREGATOR_CRASH_AT"] = crash_at
    argv = [
        sys.executable, "-m", "aggregator.cli", "serve", str(project_id), "--once",
        "--dev-account", str(AGGREGATOR), "--rpc", anvil.url, "--deployment", str(deployment_file),
        "--ipfs", ipfs_node.api_multiaddr, "--state", str(state), "--validation", VALIDATION,
        "--poll", "0.2", *extra,
    ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def aggregator_client(market: MarketClient) -> MarketClient:
    return market.with_account(dev_account(AGGREGATOR))


def honest_round(p: ChainProject, round_: int, base_cid: str, n: int | None = None) -> dict[str, bytes]:
    deltas = honest_deltas()
    trainers = p.trainers[: n or len(p.trainers)]
    return {t.address: encode(deltas[i], p.project_id, round_, base_cid, t.address) for i, t in enumerate(trainers)}


@needs_jsipfs
def test_full_round_served_by_the_cli(anvil: Anvil, market: MarketClient, ipfs: IpfsStore, ipfs_node: IpfsNode,
                                      deployment_file: Path, tmp_path: Path) -> None:
    p = create_project(market, anvil.url, ipfs, trainers=5, rounds=2)
    updates = honest_round(p, 0, p.base_cid, n=4)
    attacker = p.trainers[4].address
    updates[attacker] = encode(honest_deltas()[0], p.project_id, 0, p.base_cid, attacker, scale=40.0)
    p.submit(0, updates)

    out = serve(anvil, deployment_file, ipfs_node, p.project_id, tmp_path / "state", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["finalized_now"] == 1
    events = [f for f in market.finalized(p.project_id) if f.round == 0]
    assert len(events) == 1
    record = load_record(ipfs, events[0].record_cid)
    verdicts = {v.trainer: v for v in record.verdicts}
    assert verdicts[attacker].reason == "outlier"
    assert all(verdicts[t.address].accepted for t in p.trainers[:4])
    assert events[0].allocation == record.allocation == ETHER
    assert sum(record.rewards.values()) == ETHER and record.rewards[attacker] == 0
    assert "0x" + events[0].rewards_root.hex() == record.rewards_root
    assert "round 0 finalized" in out.stderr
    assert summary["rounds"][0]["journal"] == "finalized" and summary["rounds"][0]["agree"] is True

    # a trainer claims its reward with the proof from the record, after the challenge window
    p.mine_to(events[0].block_number + p.params.challenge_window + 1)
    winner = max(record.rewards, key=lambda t: record.rewards[t])
    acct = next(a for a in p.trainers if a.address == winner)
    proof = [bytes.fromhex(x[2:]) for x in record.proofs[winner]]
    p.client_of(acct).claim(p.project_id, 0, winner, record.cumulative_rewards[winner], proof)
    assert market.claimed_by(p.project_id, winner) == record.rewards[winner] > 0

    # status: the journal agrees with the chain; nothing more to do until round 1 is revealed
    st = subprocess.run(
        [sys.executable, "-m", "aggregator.cli", "status", str(p.project_id), "--rpc", anvil.url,
         "--deployment", str(deployment_file), "--state", str(tmp_path / "state"), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert st.returncode == 0, st.stderr
    rows = json.loads(st.stdout)["rounds"]
    assert rows[0]["chain"] == "finalized" and rows[0]["journal"] == "finalized" and rows[0]["agree"] is True
    assert rows[1]["chain"] == "open" and rows[1]["journal"] is None


@needs_jsipfs
def test_kill_and_restart_finishes_the_round_exactly_once(
    anvil: Anvil, market: MarketClient, ipfs: IpfsStore, ipfs_node: IpfsNode, deployment_file: Path, tmp_path: Path
) -> None:
    p = create_project(market, anvil.url, ipfs, trainers=4, rounds=1)
    updates = honest_round(p, 0, p.base_cid, n=3)
    updates[p.trainers[3].address] = b"not an update at all"
    p.submit(0, updates)
    snap = snapshot(anvil.url)
    try:
        baseline = serve(anvil, deployment_file, ipfs_node, p.project_id, tmp_path / "baseline")
        assert baseline.returncode == 0, baseline.stderr
        [event] = [f for f in market.finalized(p.project_id) if f.round == 0]
        reference = event.record_cid

        for stage in ("fetch", "publish", "finalize_sent"):
            revert(anvil.url, snap)
            snap = snapshot(anvil.url)
            assert market.round(p.project_id, 0).status == RoundStatus.NONE
            state = tmp_path / f"crash-{stage}"
            crashed = serve(anvil, deployment_file, ipfs_node, p.project_id, state, crash_at=stage)
            assert crashed.returncode == 137, (stage, crashed.stderr)
            assert f"crash injected after stage {stage}" in crashed.stderr
            landed = [f for f in market.finalized(p.project_id) if f.round == 0]
            assert len(landed) == (1 if stage == "finalize_sent" else 0), stage

            restarted = serve(anvil, deployment_file, ipfs_node, p.project_id, state)
            assert restarted.returncode == 0, (stage, restarted.stderr)
            events = [f for f in market.finalized(p.project_id) if f.round == 0]
            assert len(events) == 1, stage  # exactly one RoundFinalized: no double finalize
            assert events[0].record_cid == reference, stage  # the same result as without the crash
            journal = Journal.for_project(state, 31337, market.address, p.project_id)
            entry = journal.load(p.project_id, 0)
            assert entry is not None and entry.stage == Stage.FINALIZED and entry.record_cid == reference
            if stage == "finalize_sent":
                assert "already finalized" in restarted.stderr
            else:
                assert "resuming from stage" in restarted.stderr
    finally:
        revert(anvil.url, snap)


@needs_jsipfs
def test_all_rejected_round_rolls_its_reward_over(anvil: Anvil, market: MarketClient, ipfs: IpfsStore,
                                                   tmp_path: Path) -> None:
    p = create_project(market, anvil.url, ipfs, trainers=3, rounds=2)
    t = [a.address for a in p.trainers]
    p.submit(0, {
        t[0]: b"garbage",
        t[1]: encode(zero_delta(), p.project_id, 0, p.base_cid, t[1]),
        t[2]: encode(honest_deltas()[2], p.project_id, 0, p.base_cid, t[2], scale=1e6),  # over max_norm
    })
    client = aggregator_client(market)
    journal = Journal.for_project(tmp_path, 31337, client.address, p.project_id)
    settings = AggregatorSettings(validation=VALIDATION, poll=0.01)
    service = AggregatorService(client, ipfs, p.project_id, settings, journal, sleep=lambda s: None)
    assert service.run(once=True) == 1
    [ev0] = market.finalized(p.project_id)
    record = load_record(ipfs, ev0.record_cid)
    assert [v.reason for v in record.verdicts] == ["malformed", "zero_update", "norm_too_large"]
    # the contract fixes the allocation: the round takes its share, the tree pays nobody, and the
    # unpaid share waits for the sweep after the claim window (it never goes to the aggregator)
    assert ev0.allocation == record.allocation == ETHER
    assert record.cumulative_rewards == {a: 0 for a in t}
    assert ev0.rewards_root == RewardTree.build({a: 0 for a in t}).root
    assert market.project(p.project_id).unallocated == ETHER

    p.settle_previous()
    base1 = ev0.model_cid
    p.submit(1, honest_round(p, 1, base1))
    assert service.run(once=True) == 1
    ev1 = next(f for f in market.finalized(p.project_id) if f.round == 1)
    rec1 = load_record(ipfs, ev1.record_cid)
    assert ev1.allocation == rec1.allocation == ETHER
    assert sum(rec1.rewards.values()) == ETHER
    assert all(v.accepted for v in rec1.verdicts)
    assert service.run(until_done=True) == 0  # no open round left


@needs_jsipfs
def test_upheld_dispute_corrects_the_round_and_claims_follow_the_corrected_root(
        anvil: Anvil, market: MarketClient, ipfs: IpfsStore, tmp_path: Path) -> None:
    """An upheld dispute replaces round 0's root with the arbiter's corrected one (no void: the
    allocation stays, honest trainers keep the round); claims then pay by the corrected root."""
    p = create_project(market, anvil.url, ipfs, trainers=3, rounds=2)
    p.submit(0, honest_round(p, 0, p.base_cid))
    client = aggregator_client(market)
    journal = Journal.for_project(tmp_path, 31337, client.address, p.project_id)
    service = AggregatorService(client, ipfs, p.project_id, AggregatorSettings(validation=VALIDATION, poll=0.01),
                                journal, sleep=lambda s: None)
    assert service.run(once=True) == 1
    ev0 = market.finalized(p.project_id)[0]
    evidence = ipfs.add(b"audit report: round 0 pays the wrong trainers")
    market.dispute(p.project_id, 0, evidence)
    corrected = {a.address: ETHER // 3 for a in p.trainers}
    corrected[p.trainers[0].address] += ETHER - sum(corrected.values())
    tree = RewardTree.build(corrected)
    market.with_account(dev_account(2)).resolve_dispute(p.project_id, 0, True, evidence, corrected_root=tree.root)
    r0 = market.round(p.project_id, 0)
    assert r0.status == RoundStatus.CORRECTED and r0.allocation == ev0.allocation == ETHER
    assert r0.rewards_root.lower() == "0x" + tree.root.hex()
    p.settle_previous()
    trainer = p.trainers[1]
    t = market.with_account(trainer)
    t.claim(p.project_id, 0, trainer.address, corrected[trainer.address], tree.proof(trainer.address))
    assert market.claimed_by(p.project_id, trainer.address) == corrected[trainer.address]


class _StaleView:
    """A client whose view of round statuses lags: it always says 'not finalized'."""

    def __init__(self, inner: MarketClient):
        self.inner = inner

    def round(self, project_id: int, round_: int):  # type: ignore[no-untyped-def]
        return dataclasses.replace(self.inner.round(project_id, round_), status=RoundStatus.NONE)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@needs_jsipfs
def test_finalize_reverting_because_it_already_landed_counts_as_done(
    anvil: Anvil, market: MarketClient, ipfs: IpfsStore, tmp_path: Path
) -> None:
    p = create_project(market, anvil.url, ipfs, trainers=2, rounds=2)
    p.submit(0, honest_round(p, 0, p.base_cid))
    client = aggregator_client(market)
    settings = AggregatorSettings(validation=VALIDATION, poll=0.01)
    first = AggregatorService(client, ipfs, p.project_id, settings,
                              Journal.for_project(tmp_path / "a", 31337, client.address, p.project_id), sleep=lambda s: None)
    assert first.run(once=True) == 1
    # a second instance that believes the round is still open computes, publishes, sends, and
    # gets RoundNotOpen: it must count the round as done, not fail or finalize again
    journal = Journal.for_project(tmp_path / "b", 31337, client.address, p.project_id)
    second = AggregatorService(_StaleView(client), ipfs, p.project_id, settings, journal, sleep=lambda s: None)  # type: ignore[arg-type]
    step = second.run_round(0)
    assert step.kind == "finalized" and step.message == "already finalized"
    [ev] = market.finalized(p.project_id)  # still exactly one RoundFinalized
    entry = journal.load(p.project_id, 0)
    assert entry is not None and entry.stage == Stage.FINALIZED
    # the round's allocation comes from the chain once it is finalized, so the second instance
    # rebuilt the very same record the chain holds
    assert entry.record_cid == ev.record_cid


class _FlakyStore:
    """An IpfsStore whose node 'goes down' for the first `failures` reads."""

    def __init__(self, inner: IpfsStore, failures: int):
        self.inner = inner
        self.failures = failures

    def cat(self, cid: str, **kw: object) -> bytes:
        if self.failures > 0:
            self.failures -= 1
            raise StorageUnavailable(f"IPFS node at {self.inner.api_url} does not answer: start it with `market stack up`")
        return self.inner.cat(cid, **kw)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@needs_jsipfs
def test_ipfs_outage_pauses_with_one_line_and_resumes_without_loss(
    anvil: Anvil, market: MarketClient, ipfs: IpfsStore, tmp_path: Path
) -> None:
    p = create_project(market, anvil.url, ipfs, trainers=3, rounds=1)
    p.submit(0, honest_round(p, 0, p.base_cid))
    client = aggregator_client(market)
    journal = Journal.for_project(tmp_path, 31337, client.address, p.project_id)
    setup_logging()
    lines = _Lines()
    logging.getLogger("aggregator").addHandler(lines)
    sleeps: list[float] = []
    flaky = _FlakyStore(ipfs, failures=4)
    settings = AggregatorSettings(validation=VALIDATION, poll=0.5, max_backoff=2.0)
    service = AggregatorService(client, flaky, p.project_id, settings, journal, sleep=sleeps.append)  # type: ignore[arg-type]
    try:
        assert service.run(once=True) == 1
    finally:
        logging.getLogger("aggregator").removeHandler(lines)
    paused = [line for line in lines.lines if line.startswith("paused:")]
    assert len(paused) == 1 and "IPFS node" in paused[0] and "does not answer" in paused[0]
    assert any(line.startswith("resumed:") for line in lines.lines)
    assert sleeps[:4] == [0.5, 1.0, 2.0, 2.0]  # exponential backoff, capped
    [ev] = market.finalized(p.project_id)
    record = load_record(ipfs, ev.record_cid)
    assert len(record.verdicts) == 3 and all(v.accepted for v in record.verdicts)  # no update lost


def test_outage_classification() -> None:
    assert outage_kind(StorageUnavailable("down")) == "ipfs"
    assert outage_kind(StorageTimeout("IPFS node at http://127.0.0.1:5001 did not deliver Qm.. within 30s")) == "ipfs"
    assert outage_kind(StorageError("IPFS node at http://127.0.0.1:5001 refused add: invalid")) is None
    assert outage_kind(StorageError("malformed project spec: model.seed: Extra inputs are not permitted")) is None
    assert outage_kind(ContentNotFound("no provider")) == "ipfs"
    assert outage_kind(NodeUnreachable("no node")) == "rpc"
    assert outage_kind(ConnectionError("refused")) == "rpc"
    assert outage_kind(IntegrityError("bad bytes")) is None
    assert outage_kind(ContractRevert("x reverted: NotAggregator", "NotAggregator")) is None
    assert outage_kind(ValueError("bug")) is None


@needs_jsipfs
def test_serve_refuses_an_account_that_is_not_the_aggregator(
    anvil: Anvil, market: MarketClient, ipfs: IpfsStore, ipfs_node: IpfsNode, deployment_file: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from aggregator.cli import app

    p = create_project(market, anvil.url, ipfs, trainers=1, rounds=1)
    argv = ["serve", str(p.project_id), "--once", "--dev-account", "5", "--rpc", anvil.url,
            "--deployment", str(deployment_file), "--ipfs", ipfs_node.api_multiaddr, "--state", str(tmp_path)]
    out = CliRunner().invoke(app, argv)
    assert out.exit_code == 20
    assert "is not the aggregator of project" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    bad = CliRunner().invoke(app, [*argv, "--rule", "nonsense"])
    assert bad.exit_code == 21 and "unknown aggregation rule" in bad.stderr
    worse = CliRunner().invoke(app, [*argv, "--server-lr", "-1"])
    assert worse.exit_code == 2 and "server_lr" in worse.stderr

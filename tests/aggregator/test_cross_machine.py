"""Audits that hold on any machine (real anvil + js-ipfs): a freshly served project passes the
audit under every PyTorch kernel variant this CPU runs (`ATEN_CPU_CAPABILITY` default / avx2 /
avx512) on 1 and 2 threads; a recorded evaluation altered beyond its tolerance fails the audit,
naming the coalition; values altered inside it pass and move no reward by more than the bound
the audit states (docs/audit.md, "Lying inside the tolerance")."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aggregator.journal import Journal
from aggregator.round import Computed, RoundConfig, compute_round, load_context
from aggregator.service import AggregatorService, available_for
from aggregator.settings import AggregatorSettings
from aggregator.valset import load_validation_set
from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from market.chain import MarketClient, connect
from market.chain.accounts import dev_account
from market.chain.deployment import Deployment
from market.protocol.documents import RoundRecord
from market.protocol.evaluations import CROSS_MACHINE_VERSION, RecordedEvaluation, tolerance_for
from market.protocol.reading import load_record
from market.storage import IpfsStore
from tests.aggregator.support import AGGREGATOR, MODEL, VALIDATION, ChainProject, create_project, encode, honest_deltas

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
#: The auditor's interpreter: another venv (e.g. build/venv-torch-2.14.1, made by
#: `benchmarks/audit_portability.py --other-torch`) audits with another PyTorch build.
AUDITOR = os.environ.get("MARKET_AUDIT_PYTHON", sys.executable)


@functools.cache
def _runs(capability: str) -> bool:
    """Whether PyTorch on this CPU dispatches to `capability` when asked to."""
    out = subprocess.run(
        [AUDITOR, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env={**os.environ, "ATEN_CPU_CAPABILITY": capability}, capture_output=True, text=True, timeout=120, check=True,
    )
    return out.stdout.strip().lower() == capability


@pytest.fixture(scope="module")
def deployment_path(anvil_deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cross") / "deployment.json"
    anvil_deployment.save(path)
    return path


@pytest.fixture(scope="module")
def served(anvil: Anvil, anvil_deployment: Deployment, ipfs: IpfsStore,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Two rounds of a 4-trainer digits project, served by the aggregator service."""
    market = anvil_deployment.client(connect(anvil.url), dev_account(0))
    p = create_project(market, anvil.url, ipfs, trainers=4, rounds=2)
    t = [a.address for a in p.trainers]
    d = honest_deltas()
    p.submit(0, {t[i]: encode(d[i], p.project_id, 0, p.base_cid, t[i], samples=200 + 50 * i) for i in range(4)})
    agg = market.with_account(dev_account(AGGREGATOR))
    journal = Journal.for_project(tmp_path_factory.mktemp("journal"), 31337, agg.address, p.project_id)
    service = AggregatorService(agg, ipfs, p.project_id, AggregatorSettings(validation=VALIDATION, poll=0.01),
                                journal, sleep=lambda s: None)
    assert service.run(once=True) == 1
    base1 = market.finalized(p.project_id)[0].model_cid
    p.settle_previous()
    p.submit(1, {t[i]: encode(d[i + 2], p.project_id, 1, base1, t[i]) for i in range(4)})
    assert service.run(once=True) == 1
    yield p.project_id


def _audit_json(project_id: int, anvil: Anvil, deployment: Path, node: IpfsNode, capability: str,
                threads: int) -> tuple[int, dict]:  # type: ignore[type-arg]
    out = subprocess.run(
        [AUDITOR, "-m", "aggregator.cli", "audit", str(project_id), "--rpc", anvil.url, "--deployment",
         str(deployment), "--ipfs", node.api_multiaddr, "--json", "--threads", str(threads)],
        env={**os.environ, "ATEN_CPU_CAPABILITY": capability, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else {"stderr": out.stderr}


def test_audit_passes_on_every_kernel_variant_and_thread_count(served: int, anvil: Anvil, ipfs: IpfsStore,
                                                               ipfs_node: IpfsNode, deployment_path: Path) -> None:
    market = Deployment.load(deployment_path).client(connect(anvil.url))
    records = [load_record(ipfs, f.record_cid) for f in sorted(market.finalized(served), key=lambda f: f.round)]
    assert all(r.version == CROSS_MACHINE_VERSION and r.evaluations for r in records)
    # every utility the scorer used, plus the base and new models' accuracy and loss
    assert sum(e.subject == "coalition" for e in records[0].evaluations) == 16
    variants = [(c, t) for c in ("default", "avx2", "avx512") if c == "default" or _runs(c) for t in (1, 2)]
    seen = {}
    for capability, threads in variants:
        code, doc = _audit_json(served, anvil, deployment_path, ipfs_node, capability, threads)
        assert code == 0, (capability, threads, [r.get("problems") for r in doc.get("rounds", [])], doc)
        assert doc["ok"] and doc["verified"] and [r["verdict"] for r in doc["rounds"]] == ["pass", "pass"]
        seen[(capability, threads)] = [r["evaluations"] for r in doc["rounds"]]
    assert len(variants) >= 2 and len({tuple(v) for v in seen.values()}) == 1


# ---------------------------------------------------------------------------------------------
# lying aggregators


def _one_round(market: MarketClient, anvil: Anvil, ipfs: IpfsStore) -> tuple[ChainProject, Computed, str]:
    p = create_project(market, anvil.url, ipfs, trainers=4, rounds=1)
    d = honest_deltas()
    p.submit(0, {a.address: encode(d[i], p.project_id, 0, p.base_cid, a.address, samples=150 + 100 * i)
                 for i, a in enumerate(p.trainers)})
    valset = load_validation_set(VALIDATION, MODEL)
    vcid = ipfs.add(valset.to_npz())
    ctx = load_context(market, ipfs, p.project_id, 0, available_for(market, market.project(p.project_id), 0))
    return p, compute_round(ctx, ipfs, RoundConfig(), valset, vcid), vcid


def _recompute(market: MarketClient, ipfs: IpfsStore, p: ChainProject, vcid: str,
               recorded: list[RecordedEvaluation]) -> Computed:
    """The round as an aggregator computes it when it uses `recorded` instead of what it measured:
    a self-consistent record (scores, rewards and root follow from the values it lists)."""
    ctx = load_context(market, ipfs, p.project_id, 0, available_for(market, market.project(p.project_id), 0))
    return compute_round(ctx, ipfs, RoundConfig(), load_validation_set(VALIDATION, MODEL), vcid, recorded=recorded)


def _finalize(p: ChainProject, computed: Computed, ipfs: IpfsStore) -> RoundRecord:
    model_cid = ipfs.add(computed.model_bytes)
    record = computed.record(model_cid)
    record_cid = ipfs.add(record.to_bytes())
    agg = p.owner.with_account(dev_account(AGGREGATOR))
    agg.finalize_round(p.project_id, 0, model_cid, record_cid, computed.root, record.allocation)
    return record


def _audit(project_id: int, anvil: Anvil, deployment: Path, node: IpfsNode, *extra: str):  # type: ignore[no-untyped-def]
    from aggregator.cli import app

    argv = ["audit", str(project_id), "--rpc", anvil.url, "--deployment", str(deployment), "--ipfs",
            node.api_multiaddr, *extra]
    return CliRunner().invoke(app, argv, terminal_width=80)


def test_evaluation_altered_beyond_tolerance_fails_naming_the_coalition(
        market: MarketClient, anvil: Anvil, ipfs: IpfsStore, ipfs_node: IpfsNode, deployment_path: Path) -> None:
    p, honest, vcid = _one_round(market, anvil, ipfs)
    evaluations = honest.fields["evaluations"]
    k = next(i for i, e in enumerate(evaluations) if e.subject == "coalition" and len(e.members) == 2)
    target = evaluations[k]
    lie = target.value + 50 * tolerance_for("neg_loss").allowed(target.value)
    altered = [*evaluations[:k], target.model_copy(update={"value": lie}), *evaluations[k + 1:]]
    _finalize(p, _recompute(market, ipfs, p, vcid, altered), ipfs)

    out = _audit(p.project_id, anvil, deployment_path, ipfs_node)
    assert out.exit_code == 1, out.output
    names = [p.trainers[i].address for i in target.members]
    assert f"neg_loss of coalition {{{names[0]}, {names[1]}}}: the record says {lie!r}" in out.stderr
    assert "off by" in out.stderr and "FAIL" in out.stdout
    assert all(len(line) <= 80 for line in out.stdout.splitlines())
    doc = json.loads(_audit(p.project_id, anvil, deployment_path, ipfs_node, "--json").stdout)
    (finding,) = [f for f in doc["rounds"][0]["findings"] if f["check"] == "evaluations"]
    assert finding["recorded"] == lie and finding["difference"] > finding["allowed"]


def test_evaluations_altered_inside_tolerance_move_rewards_by_at_most_the_bound(
        market: MarketClient, anvil: Anvil, ipfs: IpfsStore, ipfs_node: IpfsNode, deployment_path: Path) -> None:
    p, honest, vcid = _one_round(market, anvil, ipfs)
    favoured = 0  # the aggregator's own trainer: every coalition with it looks a little better
    altered = []
    for e in honest.fields["evaluations"]:
        if e.subject == "coalition":
            slack = 0.99 * tolerance_for(e.metric).allowed(e.value)
            e = e.model_copy(update={"value": e.value + (slack if favoured in e.members else -slack)})
        altered.append(e)
    lying = _recompute(market, ipfs, p, vcid, altered)
    record = _finalize(p, lying, ipfs)
    honest_rewards = honest.fields["rewards"]
    assert record.rewards != honest_rewards  # the lie moved something ...

    out = _audit(p.project_id, anvil, deployment_path, ipfs_node, "--json")
    assert out.exit_code == 0, out.output + out.stderr
    (result,) = json.loads(out.stdout)["rounds"]
    assert result["verdict"] == "pass"
    bound = result["tolerance_bound_wei"]
    assert bound is not None and bound < record.allocation // 100
    gain = record.rewards[p.trainers[favoured].address] - honest_rewards[p.trainers[favoured].address]
    assert 0 < gain <= bound  # ... by no more than the documented bound
    assert max(abs(record.rewards[a] - honest_rewards[a]) for a in record.rewards) <= bound

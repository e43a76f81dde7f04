"""The audit on the real local stack (anvil + js-ipfs): honest rounds reproduce exactly; a
dishonest finalize (a record with altered scores, a model whose bytes are not what the inputs
give, a root that does not match the record's cumulative amounts) is caught with a non-zero exit
and a message naming what mismatched."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from aggregator.journal import Journal
from aggregator.round import (
    Computed,
    RoundConfig,
    compute_round,
    load_context,
)
from aggregator.service import AggregatorService, available_for
from aggregator.settings import AggregatorSettings
from aggregator.valset import load_validation_set
from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from market.chain import MarketClient, RoundStatus
from market.chain.accounts import dev_account
from market.errors import ConfigError
from market.protocol.codec import ModelHeader, decode_model, encode_model
from market.protocol.documents import RoundRecord
from market.protocol.merkle import RewardTree
from market.protocol.reading import load_record
from market.storage import IpfsStore
from tests.aggregator.support import (
    AGGREGATOR,
    MODEL,
    VALIDATION,
    ChainProject,
    create_project,
    encode,
    honest_deltas,
)

pytestmark = [
    pytest.mark.integration,
    # ipfshttpclient's urllib3 warning: IpfsStore silences it with warnings.catch_warnings, which
    # is not thread-safe, so parallel fetches let some through
    pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning"),
]


def run_audit(project_id: int, anvil: Anvil, deployment_file: Path, ipfs_node: IpfsNode, *extra: str):  # type: ignore[no-untyped-def]
    """`aggregator audit ...`, in process."""
    from aggregator.cli import app

    argv = ["audit", str(project_id), "--rpc", anvil.url, "--deployment", str(deployment_file),
            "--ipfs", ipfs_node.api_multiaddr, *extra]
    return CliRunner().invoke(app, argv, terminal_width=200)


def one_round(market: MarketClient, anvil: Anvil, ipfs: IpfsStore) -> tuple[ChainProject, Computed, str]:
    """A one-round project whose four trainers submitted honest updates (one of them twice as
    much data as claimed by another), computed honestly but not yet finalized."""
    p = create_project(market, anvil.url, ipfs, trainers=4, rounds=1)
    deltas = honest_deltas()
    p.submit(0, {t.address: encode(deltas[i], p.project_id, 0, p.base_cid, t.address) for i, t in enumerate(p.trainers)})
    valset = load_validation_set(VALIDATION, MODEL)
    vcid = ipfs.add(valset.to_npz())
    info = market.project(p.project_id)
    ctx = load_context(market, ipfs, p.project_id, 0, available_for(market, info, 0))
    return p, compute_round(ctx, ipfs, RoundConfig(), valset, vcid), vcid


def finalize(p: ChainProject, record: RoundRecord, model_cid: str, root: bytes) -> None:
    record_cid = p.store.add(record.to_bytes())  # type: ignore[attr-defined]
    agg = p.owner.with_account(dev_account(AGGREGATOR))
    agg.finalize_round(p.project_id, 0, model_cid, record_cid, root, record.allocation)


def test_honest_rounds_reproduce_exactly(anvil: Anvil, market: MarketClient, ipfs: IpfsStore, ipfs_node: IpfsNode,
                                         deployment_file: Path, tmp_path: Path) -> None:
    """Two rounds served by the service (with a copy, a malformed update and, in round 1, a stale
    resend) pass the audit, through both `aggregator audit` and `market audit`."""
    p = create_project(market, anvil.url, ipfs, trainers=5, rounds=2)
    t = [a.address for a in p.trainers]
    d = honest_deltas()
    p.submit(0, {
        t[0]: encode(d[0], p.project_id, 0, p.base_cid, t[0]),
        t[1]: encode(d[1], p.project_id, 0, p.base_cid, t[1], samples=900),
        t[2]: encode(d[2], p.project_id, 0, p.base_cid, t[2]),
        t[3]: encode(d[0], p.project_id, 0, p.base_cid, t[3]),  # a copy of t[0], committed later
        t[4]: b"not a safetensors file",
    })
    agg = market.with_account(dev_account(AGGREGATOR))
    journal = Journal.for_project(tmp_path, 31337, agg.address, p.project_id)
    service = AggregatorService(agg, ipfs, p.project_id, AggregatorSettings(validation=VALIDATION, poll=0.01),
                                journal, sleep=lambda s: None)
    assert service.run(once=True) == 1
    base1 = market.finalized(p.project_id)[0].model_cid
    p.settle_previous()
    p.submit(1, {
        t[0]: encode(d[0], p.project_id, 1, base1, t[0]),  # resends its round-0 update: stale
        t[1]: encode(d[3], p.project_id, 1, base1, t[1]),
        t[2]: encode(d[4], p.project_id, 1, base1, t[2]),
    })
    assert service.run(once=True) == 1
    records = [load_record(ipfs, f.record_cid) for f in sorted(market.finalized(p.project_id), key=lambda f: f.round)]
    assert [v.reason for v in records[0].verdicts] == [None, None, None, f"copy_of:{t[0]}", "malformed"]
    assert [v.reason for v in records[1].verdicts] == ["stale_update", None, None]
    assert records[1].cumulative_rewards[t[3]] == 0 and records[1].allocation > 0

    out = run_audit(p.project_id, anvil, deployment_file, ipfs_node)
    assert out.exit_code == 0, out.output + out.stderr
    assert "all 2 round(s)" in out.stdout and out.stdout.count("PASS") == 2 and "MISMATCH" not in out.stdout
    # `market audit` (the market.commands entry point; market loads it only when invoked)
    viamarket = subprocess.run(
        [sys.executable, "-m", "market.cli", "audit", str(p.project_id), "--rpc", anvil.url,
         "--deployment", str(deployment_file), "--ipfs", ipfs_node.api_multiaddr, "--json"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert viamarket.returncode == 0, viamarket.stderr
    assert json.loads(viamarket.stdout)["ok"] is True


def test_altered_scores_are_caught(anvil: Anvil, market: MarketClient, ipfs: IpfsStore, ipfs_node: IpfsNode,
                                   deployment_file: Path) -> None:
    p, computed, _ = one_round(market, anvil, ipfs)
    model_cid = ipfs.add(computed.model_bytes)
    honest = computed.record(model_cid)
    victim = min(honest.scores)
    fields = honest.model_dump()
    fields["scores"] = dict(honest.scores) | {victim: honest.scores[victim] + 0.05}
    fields["cumulative_scores"] = dict(honest.cumulative_scores) | {victim: honest.cumulative_scores[victim] + 0.05}
    finalize(p, RoundRecord(**fields), model_cid, computed.root)

    out = run_audit(p.project_id, anvil, deployment_file, ipfs_node)
    assert out.exit_code == 1
    assert "scores: the record differs from the rebuild for " + victim in out.stderr
    assert "FAIL" in out.stdout


def test_model_not_from_the_inputs_is_caught(anvil: Anvil, market: MarketClient, ipfs: IpfsStore,
                                             ipfs_node: IpfsNode, deployment_file: Path) -> None:
    p, computed, _ = one_round(market, anvil, ipfs)
    _, weights = decode_model(computed.model_bytes)
    forged = {k: v.clone() for k, v in weights.items()}
    first = next(iter(forged))
    forged[first] = forged[first] + torch.full_like(forged[first], 0.01)  # a backdoor-ish nudge
    forged_bytes = encode_model(forged, ModelHeader(p.project_id, 0, MODEL.architecture))
    forged_cid = ipfs.add(forged_bytes)
    import hashlib

    fields = computed.record(forged_cid).model_dump()
    fields["model_digest"] = "0x" + hashlib.sha256(forged_bytes).hexdigest()  # consistent with its own bytes
    finalize(p, RoundRecord(**fields), forged_cid, computed.root)

    out = run_audit(p.project_id, anvil, deployment_file, ipfs_node)
    assert out.exit_code == 1
    assert f"model digest: the inputs give {computed.model_digest}, the record says {fields['model_digest']}" in out.stderr


def test_root_not_matching_the_record_is_caught(anvil: Anvil, market: MarketClient, ipfs: IpfsStore,
                                                ipfs_node: IpfsNode, deployment_file: Path) -> None:
    p, computed, _ = one_round(market, anvil, ipfs)
    model_cid = ipfs.add(computed.model_bytes)
    record = computed.record(model_cid)
    # the chain gets a root that pays everything to one trainer; the record stays honest
    greedy = {a: 0 for a in record.cumulative_rewards}
    greedy[p.trainers[0].address] = record.allocation
    forged_root = RewardTree.build(greedy).root
    assert forged_root != computed.root
    finalize(p, record, model_cid, forged_root)

    out = run_audit(p.project_id, anvil, deployment_file, ipfs_node, "--json")
    assert out.exit_code == 1
    assert "is not the root of the record's cumulative amounts" in out.stderr
    assert f"rewards root: the record says {record.rewards_root}, the chain 0x{forged_root.hex()}" in out.stderr
    assert '"ok": false' in out.stdout


def test_withholding_the_reward_is_refused_on_chain(anvil: Anvil, market: MarketClient, ipfs: IpfsStore) -> None:
    """The allocation is fixed by the project's terms: a record that pays out less than the round
    allocates cannot even be finalized (trust model v2), so there is nothing left for the audit to
    catch."""
    p, computed, _ = one_round(market, anvil, ipfs)
    model_cid = ipfs.add(computed.model_bytes)
    info = market.project(p.project_id)
    ctx0 = dataclasses.replace(load_context(market, ipfs, p.project_id, 0, available_for(market, info, 0)), available=1)
    valset = load_validation_set(VALIDATION, MODEL)
    stingy = compute_round(ctx0, ipfs, RoundConfig(), valset, computed.fields["validation_cid"])
    record = stingy.record(model_cid)
    assert record.allocation == 1
    with pytest.raises(ConfigError, match="allocates exactly"):
        finalize(p, record, model_cid, stingy.root)
    assert market.round(p.project_id, 0).status == RoundStatus.NONE


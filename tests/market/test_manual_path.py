"""The `market` side of the manual path (issue 10): keys that follow the stack's ports and state
directory, and `market withdraw` for credits (bonds, returned budget) as one JSON document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devnet.anvil import Anvil
from market.chain import MarketClient, ProjectParams
from market.chain.accounts import dev_account
from market.chain.deployment import Deployment
from market.cli.config import load_settings
from market.protocol.merkle import RewardTree

ETHER = 10**18
AGG, ARB = dev_account(1), dev_account(2)


def test_rpc_ipfs_and_files_follow_the_ports_and_state_of_the_file(tmp_path: Path) -> None:
    """A market.toml naming other ports or another state directory never leaves a tool on the defaults."""
    cfg = tmp_path / "market.toml"
    cfg.write_text('[market]\nanvil_port = 18545\nipfs_api_port = 15001\nstate = "st"\n')
    s = load_settings(cfg)
    assert (s.rpc, s.ipfs) == ("http://127.0.0.1:18545", "/ip4/127.0.0.1/tcp/15001/http")
    assert s.deployment == (tmp_path / "st" / "deployment.json").resolve()
    assert s.keystore == (tmp_path / "st" / "keystore").resolve()
    cfg.write_text('[market]\nanvil_port = 18545\nrpc = "http://127.0.0.1:9"\ndeployment = "d.json"\nstate = "st"\n')
    s = load_settings(cfg)
    assert s.rpc == "http://127.0.0.1:9" and s.deployment == (tmp_path / "d.json").resolve()  # a key set wins


def _market(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    return subprocess.run([sys.executable, "-m", "market.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.mark.integration
def test_withdraw_pays_a_credit_once_and_prints_one_json_document(
    market: MarketClient, anvil: Anvil, anvil_deployment: Deployment, tmp_path: Path,
) -> None:
    """The aggregator's bond is credited when the project ends; `market withdraw` takes it."""
    pid, _ = market.create_project(ProjectParams(
        aggregator=AGG.address, arbiter=ARB.address, num_rounds=1, reward_per_round=ETHER, commit_window=3,
        reveal_window=3, challenge_window=2, spec_cid="QmSpec", stake=ETHER // 100, dispute_bond=ETHER // 20,
    ))
    info = market.project(pid)
    anvil.mine(info.reveal_deadline - market.block_number + 1)
    market.with_account(AGG).finalize_round(pid, 0, "QmModel", "QmRecord", RewardTree.build({AGG.address: 0}).root)
    anvil.mine(market.settles_after(pid, 0) - market.block_number + 1)
    market.with_account(dev_account(5)).end_project(pid)
    credit = market.credit_of(pid, AGG.address)
    dep = tmp_path / "deployment.json"
    anvil_deployment.save(dep)
    common = ["--rpc", anvil.url, "--deployment", str(dep), "--dev-account", "1"]
    first = _market("withdraw", str(pid), *common, "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["credit"] == credit and (out["tx"] is not None) == (credit > 0)
    assert market.credit_of(pid, AGG.address) == 0
    again = _market("withdraw", str(pid), *common)
    assert again.returncode == 0 and "nothing to withdraw" in again.stdout, again.stderr

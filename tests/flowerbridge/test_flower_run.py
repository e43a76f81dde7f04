"""`flwr run examples/flower` on the real local stack, in Flower's simulation engine (3 supernodes on
Ray, loopback only): the run trains, every round settles on chain with rewards, the trainers claim,
and `market audit` reproduces every round.

The stack is what `market stack up` starts (anvil on a 1 s clock and js-ipfs, free loopback ports,
stopped by PID with `market stack down`); the Flower SuperLink is `flowerbridge.local.LocalSuperLink`
(a free loopback port, FLWR_HOME in the test's directory, telemetry and update checks off, stopped
by PID with every process under it). The ServerApp creates the project of
examples/flower/project.toml (2 rounds, 3 trainers) once its three nodes have answered the warm-up
(see flowerbridge.config for why).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_jsipfs

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "flower"
MARKET = ROOT / ".venv" / "bin" / "market"
TRAINERS = 3


def _market(config: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MARKET), *args, "--config", str(config)], check=False, capture_output=True,
                          text=True, timeout=timeout, cwd=config.parent)


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[Path]:
    """`market stack up` + `market deploy` on free ports; yields the market.toml; `market stack down` after."""
    from devnet.ports import free_port, pick_ipfs_api_port

    config = tmp_path / "market.toml"
    config.write_text(
        f'[market]\nanvil_port = {free_port()}\nipfs_api_port = {pick_ipfs_api_port()}\nstate = ".market"\n\n'
        "[aggregator]\npoll = 0.5\n\n[trainer]\npoll_interval = 0.5\n"
    )
    up = _market(config, "stack", "up")
    try:
        assert up.returncode == 0, up.stderr
        deployed = _market(config, "deploy", "--dev-account", "0")
        assert deployed.returncode == 0, deployed.stderr
        yield config
    finally:
        down = _market(config, "stack", "down")
        assert down.returncode == 0, down.stderr


@needs_jsipfs
@pytest.mark.integration
def test_flwr_run_trains_settles_and_passes_the_audit(stack: Path, tmp_path: Path) -> None:
    from flowerbridge.local import LocalSuperLink, flwr_bin
    from market.chain import RoundStatus, connect
    from market.chain.accounts import dev_account
    from market.chain.deployment import Deployment
    from market.cli.config import load_settings
    from market.protocol.reading import load_record
    from market.storage import open_store

    link = LocalSuperLink(tmp_path / "flwr-home")
    link.start()
    try:
        link.write_connection(TRAINERS)
        run_config = (f"market-project-file='{APP / 'project.toml'}' market-owner='dev:0' market-config='{stack}'"
                      " market-aggregator='dev:1' market-dev-trainers=3")
        done = subprocess.run(
            [flwr_bin("flwr"), "run", str(APP), "market-local", "--stream", "--run-config", run_config,
             "--federation-config", link.federation_config],
            check=False, capture_output=True, text=True, timeout=900, env=link.env(), cwd=tmp_path,
        )
    finally:
        link.stop()
    out = done.stdout + done.stderr
    (tmp_path / "flwr-run.log").write_text(out)
    assert done.returncode == 0, out[-4000:]
    results = [json.loads(line.split("MARKETFLOWER_RESULT", 1)[1]) for line in out.splitlines() if "MARKETFLOWER_RESULT" in line]
    assert results and results[-1]["rounds"] == 2, out[-4000:]
    assert "nodes ready" in out and "created project 1" in out

    audit = _market(stack, "audit", "1", timeout=300)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "PASS" in audit.stdout

    s = load_settings(stack)
    client = Deployment.load(s.deployment).client(connect(s.rpc))
    finalized = {f.round: f for f in client.finalized(1)}
    assert sorted(finalized) == [0, 1]
    assert all(client.round(1, r).status == RoundStatus.FINALIZED for r in (0, 1))
    trainers = {dev_account(3 + k).address.lower() for k in range(TRAINERS)}
    store = open_store(s.ipfs)
    try:
        for r, event in finalized.items():
            record = load_record(store, event.record_cid)
            rewarded = {a.lower() for a, amount in record.rewards.items() if int(amount) > 0}
            assert rewarded == trainers, f"round {r} rewarded {rewarded}"
            assert all(v.accepted for v in record.verdicts) and len(record.verdicts) == TRAINERS
    finally:
        store.close()
    # the clients claimed after the last round settled: everything allocated was paid out
    assert sum(client.claimed_by(1, a) for a in trainers) == sum(int(f.allocation) for f in finalized.values()) > 0

"""Chain profiles: chosen by name with did-you-mean, overridden from market.toml strictly, fees by
policy, dev keys refused off local chains, chain ids checked, and reorgs noticed by the reader.
Every chain here is anvil on loopback, some started with a public chain's id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devnet.anvil import Anvil, rpc_call
from devnet.ports import free_port
from market.chain import MarketClient, ProjectParams, connect
from market.chain.accounts import Keystore, dev_account
from market.chain.deployment import Deployment, deploy
from market.chain.finality import ReorgAwareReader
from market.chain.profiles import PROFILES, dev_keys_allowed, for_chain, profile, refuse_dev_key
from market.cli.config import load_settings
from market.errors import ChainMismatch, ConfigError, DevKeyRefused, ExitCode, TransactionError

BASE_SEPOLIA = 84532
GWEI = 10**9
ETHER = 10**18
MARKET = [sys.executable, "-m", "market.cli"]


# ---------------------------------------------------------------------- registry and config


def test_profiles_are_chosen_by_name_with_did_you_mean_and_spec_overrides() -> None:
    assert profile("base-sepolia").chain_id == BASE_SEPOLIA and profile("base_sepolia").name == "base-sepolia"
    assert profile("base-sepolia:confirmations=3,log_page_size=500").confirmations == 3
    with pytest.raises(ConfigError, match="did you mean 'base_sepolia'"):
        profile("base-sepoila")
    with pytest.raises(ConfigError, match="did you mean 'confirmations'"):
        profile("sepolia:confirmation=3")
    local = profile("local")
    assert local.dev_keys and local.confirmations == 0 and local.chain_id == 31337
    assert all(not PROFILES.create(n).dev_keys for n in PROFILES if n not in ("local", "embedded"))
    assert for_chain(BASE_SEPOLIA).name == "base-sepolia"
    unknown = for_chain(999_999)
    assert not unknown.dev_keys and unknown.confirmations > 0


def test_dev_keys_follow_a_chain_never_a_public_one() -> None:
    # a new chain id drops dev keys unless they are asked for again, and never on a public chain
    assert not profile("local:chain_id=1337").dev_keys
    assert profile("local:chain_id=1337,dev_keys=true").dev_keys
    with pytest.raises(ConfigError, match="public chain"):
        profile("local:chain_id=84532,dev_keys=true")
    assert dev_keys_allowed(31337) and not dev_keys_allowed(BASE_SEPOLIA)
    with pytest.raises(DevKeyRefused, match="keystore"):
        refuse_dev_key(BASE_SEPOLIA, "--dev-account")
    refuse_dev_key(BASE_SEPOLIA, "signing", address="0x" + "12" * 20)  # not a dev key: fine
    with pytest.raises(DevKeyRefused, match="base-sepolia"):
        refuse_dev_key(BASE_SEPOLIA, "signing", address=dev_account(3).address)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "market.toml"
    path.write_text(text)
    return path


def test_market_toml_names_a_profile_and_overrides_it_strictly(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, '[market]\nprofile = "base-sepolia"\n[profile]\nconfirmations = 5\n'
                                      'max_fee_wei = "3 gwei"\npriority_fee_wei = 1000\nfee_policy = "legacy"\n'))
    assert s.profile is not None
    assert (s.profile.name, s.profile.chain_id, s.profile.confirmations) == ("base-sepolia", BASE_SEPOLIA, 5)
    assert (s.profile.max_fee_wei, s.profile.priority_fee_wei, s.profile.fee_policy) == (3 * GWEI, 1000, "legacy")
    custom = load_settings(write(tmp_path, '[profile]\nname = "my-l2"\nchain_id = 424242\nconfirmations = 4\n')).profile
    assert custom is not None and (custom.name, custom.chain_id, custom.dev_keys) == ("my-l2", 424242, False)
    assert load_settings(write(tmp_path, "[market]\n")).profile is None  # none named: the deployment's / the chain's
    with pytest.raises(ConfigError, match=r"\[profile\]: unknown key 'confirmation' \(did you mean 'confirmations'\?\)"):
        load_settings(write(tmp_path, '[market]\nprofile = "sepolia"\n[profile]\nconfirmation = 5\n'))
    with pytest.raises(ConfigError, match="did you mean 'arbitrum_sepolia'"):
        load_settings(write(tmp_path, '[market]\nprofile = "arbitrum-sepolia-x"\n'))
    with pytest.raises(ConfigError, match="must be an integer"):
        load_settings(write(tmp_path, '[market]\nprofile = "sepolia"\n[profile]\nconfirmations = 1.5\n'))
    with pytest.raises(ConfigError, match="public chain"):
        load_settings(write(tmp_path, '[market]\nprofile = "base"\n[profile]\ndev_keys = true\n'))


# ---------------------------------------------------------------------- fees


def fake_node(base_fee: int, tip: int, gas_price: int) -> Any:
    eth = SimpleNamespace(get_block=lambda _: {"baseFeePerGas": base_fee}, max_priority_fee=tip, gas_price=gas_price)
    return SimpleNamespace(eth=eth)


def test_fee_policy_eip1559_legacy_and_the_cap() -> None:
    node = fake_node(base_fee=10 * GWEI, tip=2 * GWEI, gas_price=12 * GWEI)
    assert profile("base").fees(node) == {"type": 2, "maxFeePerGas": 22 * GWEI, "maxPriorityFeePerGas": 2 * GWEI}
    assert profile("arbitrum-one").fees(node)["maxPriorityFeePerGas"] == 0  # no tips on Arbitrum
    assert profile("sepolia:base_fee_multiplier=1.5,priority_fee_wei=1").fees(node)["maxFeePerGas"] == 15 * GWEI + 1
    assert profile("sepolia:fee_policy=legacy,gas_price_multiplier=1.5").fees(node) == {"type": 0, "gasPrice": 18 * GWEI}
    # a cap holds the max fee down while the chain's price fits under it, and refuses to send once it does not
    assert profile(f"base:max_fee_wei={15 * GWEI}").fees(node)["maxFeePerGas"] == 15 * GWEI
    with pytest.raises(TransactionError, match="over profile 'base'.s cap"):
        profile(f"base:max_fee_wei={11 * GWEI}").fees(node)


def test_deadlines_count_l1_blocks_on_arbitrum() -> None:
    l2 = SimpleNamespace(eth=SimpleNamespace(block_number=300_000_000, get_block=lambda _: {"l1BlockNumber": "0x1406f40"}))
    assert profile("arbitrum-one").contract_block(l2) == 0x1406F40  # what block.number says in the contract
    assert profile("base").contract_block(l2) == 300_000_000
    with pytest.raises(ChainMismatch, match="no l1BlockNumber"):
        profile("arbitrum-sepolia").contract_block(fake_node(1, 1, 1))


def test_market_profiles_lists_every_built_in_profile_without_an_rpc_url() -> None:
    from typer.testing import CliRunner

    from market.cli.app import app

    out = CliRunner().invoke(app, ["profiles", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert {r["name"] for r in rows} >= {"local", "sepolia", "base-sepolia", "arbitrum-sepolia", "optimism-sepolia",
                                         "base", "arbitrum-one"}
    assert not any("rpc" in key for r in rows for key in r)


# ---------------------------------------------------------------------- on a "public" chain (anvil, chain id 84532)


@pytest.fixture(scope="module")
def public_anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    node = Anvil(tmp_path_factory.mktemp("anvil84532"), port=free_port(), accounts=10, chain_id=BASE_SEPOLIA)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        assert node.process.pid is None


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MARKET, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=120, check=False)


def one_error_line(p: subprocess.CompletedProcess[str], code: int) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == code and len(lines) == 1 and "Traceback" not in p.stderr, (p.returncode, p.stderr)
    return lines[0]


def funded_keystore(anvil: Anvil, directory: Path, name: str, key: str) -> str:
    address = Keystore(directory).import_key(name, key, "pw").address
    rpc_call(anvil.url, "anvil_setBalance", [address, hex(100 * ETHER)])
    return address


@pytest.mark.integration
def test_dev_keys_and_market_fund_are_refused_and_a_keystore_deploys(public_anvil: Anvil, tmp_path: Path) -> None:
    dep = str(tmp_path / "deployment.json")
    common = ["--rpc", public_anvil.url, "--deployment", dep]
    for extra in ([], ["--profile", "base-sepolia"]):  # by the node's chain id, or by the profile named
        line = one_error_line(run("deploy", *common, "--dev-account", "0", *extra), ExitCode.CONFIG)
        assert "refused on base-sepolia (chain 84532)" in line and "keystore" in line
    line = one_error_line(run("fund", dev_account(5).address, "--rpc", public_anvil.url), ExitCode.CONFIG)
    assert "`market fund`" in line and "faucet" in line
    line = one_error_line(run("deploy", *common, "--dev-account", "0", "--profile", "local"), ExitCode.WRONG_CHAIN)
    assert "chain 84532 (profile 'base-sepolia')" in line and "profile 'local' is chain 31337" in line

    keystore = tmp_path / "keystore"
    key0 = "0x" + bytes(dev_account(0).key).hex()  # anvil's key 0, imported as if it were the user's own
    funded_keystore(public_anvil, keystore, "leaked", key0)
    cfg = tmp_path / "market.toml"
    cfg.write_text(f'[market]\nkeystore = "{keystore}"\nprofile = "base-sepolia"\n[profile]\nconfirmations = 2\n')
    env = {"MARKET_PASSWORD": "pw"}
    line = one_error_line(run("deploy", *common, "--config", str(cfg), "--account", "leaked", env=env), ExitCode.CONFIG)
    assert "account 'leaked' uses one of anvil's public dev keys" in line

    address = funded_keystore(public_anvil, keystore, "deployer", "0x" + os.urandom(32).hex())
    p = run("deploy", *common, "--config", str(cfg), "--account", "deployer", "--json", env=env)
    assert p.returncode == 0, p.stderr
    written = json.loads(Path(dep).read_text())
    assert written["deployer"] == address and written["chain_id"] == BASE_SEPOLIA
    assert (written["profile"]["name"], written["profile"]["confirmations"]) == ("base-sepolia", 2)
    assert Deployment.load(Path(dep)).chain_profile.confirmations == 2

    project_toml = tmp_path / "project.toml"  # the templates' dev:1 / dev:2 roles, left in by mistake
    project_toml.write_text('spec_cid = "QmSpec"\n[project]\nrounds = 1\nreward_per_round = "0.01 ether"\n'
                            'commit_window = 50\nreveal_window = 50\nchallenge_window = 50\n'
                            'aggregator = "dev:1"\narbiter = "dev:2"\n')
    p = run("project", "create", str(project_toml), *common, "--config", str(cfg), "--account", "deployer", env=env)
    assert "the project's aggregator uses one of anvil's public dev keys" in one_error_line(p, ExitCode.CONFIG)


@pytest.mark.integration
def test_connect_checks_the_chain_id_and_the_sender_refuses_dev_keys(public_anvil: Anvil) -> None:
    with pytest.raises(ChainMismatch, match="profile 'local' is chain 31337"):
        connect(public_anvil.url, profile=profile("local"))
    w3 = connect(public_anvil.url, profile=profile("base-sepolia"))
    with pytest.raises(DevKeyRefused, match="signing as"):
        deploy(w3, dev_account(1), public_anvil.url)  # library code, no CLI: the sender itself refuses


# ---------------------------------------------------------------------- confirmations and reorgs


def project(owner: MarketClient, **kw: Any) -> int:
    params = ProjectParams(**{  # type: ignore[arg-type]
        "aggregator": dev_account(1).address, "arbiter": dev_account(2).address, "num_rounds": 1,
        "reward_per_round": ETHER // 100, "commit_window": 20, "reveal_window": 20, "challenge_window": 10,
        "spec_cid": "QmProfileTest", **kw})
    return owner.create_project(params)[0]


def created(events: list[Any]) -> list[int]:
    return [int(e.args["projectId"]) for e in events if e.name == "ProjectCreated"]


@pytest.mark.integration
def test_reader_holds_back_unconfirmed_blocks_and_rereads_after_a_reorg(public_anvil: Anvil, tmp_path: Path) -> None:
    chain = profile("base-sepolia:confirmations=3")
    w3 = connect(public_anvil.url, profile=chain)
    keystore = tmp_path / "ks"
    funded_keystore(public_anvil, keystore, "owner", "0x" + os.urandom(32).hex())
    me = Keystore(keystore).load("owner", "pw")
    dep = deploy(w3, me, public_anvil.url + "/v2/PROVIDER-API-KEY", chain)
    assert dep.rpc == public_anvil.url  # the shared deployment file never carries a provider's key
    owner = dep.client(w3, me)
    assert owner.sender is not None and owner.sender.profile == chain  # fees and headroom of the profile

    held_back = ReorgAwareReader.for_profile(w3, dep.address, owner.abi, chain, start_block=dep.block_number)
    first = project(owner)
    assert created(held_back.poll().events) == []  # its block is not 3 deep yet
    public_anvil.mine(3)
    assert created(held_back.poll().events) == [first]

    reader = ReorgAwareReader.for_profile(w3, dep.address, owner.abi, profile("base-sepolia:confirmations=0"),
                                          start_block=dep.block_number)
    assert created(reader.poll().events) == [first]
    snapshot = rpc_call(public_anvil.url, "evm_snapshot")
    fork_point = int(w3.eth.block_number)
    orphan = project(owner)
    public_anvil.mine(2)
    batch = reader.poll()
    assert created(batch.events) == [orphan] and batch.reorg_from is None
    # the chain forks: the block holding `orphan` is replaced by other blocks, with another project
    assert rpc_call(public_anvil.url, "evm_revert", [snapshot]) is True
    owner.sender._resync()  # type: ignore[union-attr]  # the nonce of the orphaned transaction is free again
    public_anvil.mine(1)
    replacement = project(owner, spec_cid="QmAfterTheFork")
    public_anvil.mine(3)
    batch = reader.poll()
    assert batch.reorg_from is not None and fork_point < batch.reorg_from <= fork_point + 1
    assert created(batch.events) == [replacement] and replacement == orphan  # same id, other block and content
    assert [e.args["specCID"] for e in batch.events if e.name == "ProjectCreated"] == ["QmAfterTheFork"]
    assert reader.poll() == type(batch)([])  # nothing new, no fork

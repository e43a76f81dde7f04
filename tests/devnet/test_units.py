"""Unit tests of the market library that need no running node: compiler cache, Merkle trees,
amount parsing, keystores, the embedded chain and revert decoding."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devnet import toolpaths
from devnet.compiler import compile_contracts
from market.chain import ProjectParams, commitment_of, connect
from market.chain.accounts import Keystore, dev_account
from market.cli.config import Settings, load_settings, parse_amount
from market.errors import CompileError, ConfigError, ContractRevert, DeploymentError, NodeUnreachable
from market.protocol.merkle import RewardTree, leaf_hash, verify


def test_compiler_cache_rebuilds_only_on_change(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(toolpaths.CONTRACT_SOURCES, src)
    build = tmp_path / "build"
    first = compile_contracts(src, build)
    assert "LearningMarket" in first
    manifest = build / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = compile_contracts(src, build)
    assert manifest.stat().st_mtime_ns == stamp  # served from the cache
    assert again["LearningMarket"].bytecode == first["LearningMarket"].bytecode
    (src / "LearningMarket.sol").write_text((src / "LearningMarket.sol").read_text() + "\n// touched\n")
    compile_contracts(src, build)
    assert manifest.stat().st_mtime_ns != stamp


def test_compiler_reports_errors_in_one_message(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Bad.sol").write_text("pragma solidity ^0.8.24; contract Bad { function f() { x = 1; } }")
    with pytest.raises(CompileError) as e:
        compile_contracts(src, tmp_path / "build")
    assert "Bad.sol" in str(e.value)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.binary(min_size=20, max_size=20), st.integers(0, 2**128), min_size=1, max_size=40))
def test_every_merkle_proof_verifies_and_no_other_amount_does(amounts: dict[bytes, int]) -> None:
    acc = {"0x" + k.hex(): v for k, v in amounts.items()}
    tree = RewardTree.build(acc)
    for a, v in acc.items():
        assert verify(tree.proof(a), tree.root, leaf_hash(a, v))
        assert not verify(tree.proof(a), tree.root, leaf_hash(a, v + 1))


def test_merkle_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        RewardTree.build({})
    with pytest.raises(ValueError):
        leaf_hash(dev_account(0).address, -1)


@pytest.mark.parametrize(
    ("value", "wei"),
    [("1 ether", 10**18), ("0.5 ether", 5 * 10**17), ("20 gwei", 2 * 10**10), ("1000", 1000), (7, 7), ("1.5 tokens", 15 * 10**17)],
)
def test_parse_amount(value: object, wei: int) -> None:
    assert parse_amount(value) == wei


@pytest.mark.parametrize("value", ["1 banana", "-1", "0.1 wei", "abc", True, 1.5, -3, ""])
def test_parse_amount_refuses(value: object) -> None:
    with pytest.raises(ConfigError):
        parse_amount(value)


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text('[market]\nrpc = "http://127.0.0.1:9999"\ndeployment = "dep.json"\n')
    s = load_settings(cfg)
    assert s.rpc == "http://127.0.0.1:9999" and s.deployment == (tmp_path / "dep.json").resolve()
    assert s.merged(rpc="http://127.0.0.1:1").rpc == "http://127.0.0.1:1"
    assert s.merged(rpc=None).rpc == "http://127.0.0.1:9999"
    monkeypatch.chdir(tmp_path)
    assert load_settings() == Settings()
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    cfg.write_text("[market]\nbogus = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):  # strict: a typo is never a silent default
        load_settings(cfg)


def test_keystore_roundtrip_and_errors(tmp_path: Path) -> None:
    ks = Keystore(tmp_path)
    e = ks.new("alice", "s3cret")
    assert [x.name for x in ks.list()] == ["alice"] and ks.list()[0].address == e.address
    assert ks.load("alice", "s3cret").address == e.address
    assert oct((tmp_path / "alice.json").stat().st_mode)[-3:] == "600"
    with pytest.raises(ConfigError, match="wrong password"):
        ks.load("alice", "nope")
    with pytest.raises(ConfigError, match="already exists"):
        ks.new("alice", "x")
    with pytest.raises(ConfigError, match="no account named"):
        ks.load("bob", "x")
    with pytest.raises(ConfigError, match="bad account name"):
        ks.new("../evil", "x")
    with pytest.raises(ConfigError, match="empty password"):
        ks.new("carol", "")
    with pytest.raises(ConfigError, match="malformed private key"):
        ks.import_key("dave", "0x1234", "pw")
    imported = ks.import_key("erin", "0x" + "11" * 32, "pw")
    assert ks.load("erin", "pw").key.hex().endswith("11" * 32)
    assert imported.address == ks.load("erin", "pw").address


def test_dead_rpc_is_one_clear_error() -> None:
    with pytest.raises(NodeUnreachable, match="market stack up"):
        connect("http://127.0.0.1:1", timeout=1)
    with pytest.raises(ConfigError, match="loopback"):
        connect("http://8.8.8.8:8545")


def test_embedded_chain_decodes_custom_errors(embedded) -> None:  # type: ignore[no-untyped-def]
    client, _ = embedded
    with pytest.raises(ContractRevert) as e:
        client.project(12345)
    assert e.value.name == "UnknownProject" and e.value.error_args == {"projectId": 12345}
    params = ProjectParams(
        aggregator=dev_account(1).address, arbiter=dev_account(2).address, num_rounds=1, reward_per_round=10,
        commit_window=3, reveal_window=3, challenge_window=1, spec_cid="QmX",
    )
    with pytest.raises(ContractRevert) as e:
        client.create_project(params)
    assert e.value.name == "WindowTooShort" and e.value.error_args == {"window": 1, "minimum": 2}
    ok = ProjectParams(**{**params.__dict__, "challenge_window": 2})
    pid, _ = client.create_project(ok)
    assert client.project(pid).budget == 10
    cid, digest, salt = "QmU", os.urandom(32), os.urandom(32)
    trainer = dev_account(3).address
    assert client.contract.functions.commitmentOf(pid, 0, trainer, cid, digest, salt).call() == commitment_of(
        pid, 0, trainer, cid, digest, salt
    )


def test_deployment_file_errors(tmp_path: Path, embedded) -> None:  # type: ignore[no-untyped-def]
    from market.chain.deployment import Deployment

    client, dep = embedded
    with pytest.raises(DeploymentError, match="market deploy"):
        Deployment.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DeploymentError, match="malformed"):
        Deployment.load(bad)
    dep.save(tmp_path / "d.json")
    loaded = Deployment.load(tmp_path / "d.json")
    assert loaded == dep
    wrong_chain = Deployment(**{**dep.__dict__, "chain_id": 1})
    with pytest.raises(DeploymentError, match="chain"):
        wrong_chain.client(client.w3)
    no_code = Deployment(**{**dep.__dict__, "address": dev_account(9).address})
    with pytest.raises(DeploymentError, match="no contract"):
        no_code.client(client.w3)


def test_amounts_print_exactly_in_ether_or_token_units() -> None:
    from market.cli.kit import format_amount

    assert format_amount(1_500_000_000_000_000_000) == "1.5 ETH"
    assert format_amount(1) == "0.000000000000000001 ETH"
    assert format_amount(0) == "0 ETH"
    assert format_amount(10**24) == "1000000 ETH"
    assert format_amount(123_456, 6, "USDC") == "0.123456 USDC"

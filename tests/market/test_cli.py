"""The `market` CLI as a user runs it: real processes, a real anvil node, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devnet.ports import free_port

pytestmark = pytest.mark.integration
MARKET = [sys.executable, "-m", "market.cli"]


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MARKET, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=120,
        check=False,
    )


def one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`market stack up --no-ipfs` + `market deploy`, torn down with `market stack down`."""
    d = tmp_path_factory.mktemp("cli")
    port = str(free_port())
    from devnet.process import pid_alive

    up = run("stack", "up", "--state", str(d / "st"), "--no-ipfs", "--anvil-port", port, "--block-time", "0", "--json")
    try:
        assert up.returncode == 0, up.stderr
        status = json.loads(up.stdout)
        assert status["anvil"]["running"] and status["anvil"]["pid"]
        rpc = f"http://127.0.0.1:{port}"
        dep = str(d / "deployment.json")
        p = run("deploy", "--rpc", rpc, "--deployment", dep, "--dev-account", "0", "--json")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["chain_id"] == 31337
        yield {"rpc": rpc, "dep": dep, "dir": str(d), "state": str(d / "st"), "pid": str(status["anvil"]["pid"])}
    finally:  # stopped by PID even when the set-up above failed half way
        down = run("stack", "down", "--state", str(d / "st"), "--json")
    assert down.returncode == 0 and json.loads(down.stdout)["stopped"] == ["anvil"], down.stderr
    assert not pid_alive(int(status["anvil"]["pid"]))


def project_file(tmp: Path, **overrides: str) -> Path:
    lines = {
        "rounds": "2", "reward_per_round": '"1 ether"', "stake": '"0.1 ether"', "dispute_bond": '"0.01 ether"',
        "commit_window": "5", "reveal_window": "5", "challenge_window": "3",
        "aggregator": '"dev:1"', "arbiter": '"dev:2"',
    }
    lines.update(overrides)
    body = 'spec_cid = "QmSpecForCliTests"\n[project]\n' + "".join(f"{k} = {v}\n" for k, v in lines.items() if v)
    path = tmp / f"p{abs(hash(body))}.toml"
    path.write_text(body)
    return path


def test_create_status_end_json(chain: dict[str, str], tmp_path: Path) -> None:
    common = ["--rpc", chain["rpc"], "--deployment", chain["dep"]]
    p = run("project", "create", str(project_file(tmp_path)), *common, "--dev-account", "0", "--json")
    assert p.returncode == 0, p.stderr
    created = json.loads(p.stdout)
    assert created["budget"] == 2 * 10**18 and created["spec_cid"] == "QmSpecForCliTests"
    pid = str(created["project_id"])
    s = run("project", "status", pid, *common, "--json")
    assert s.returncode == 0, s.stderr
    st = json.loads(s.stdout)
    assert st["project"]["budget"] == 2 * 10**18 and st["project"]["unallocated"] == 2 * 10**18
    assert st["escrow_balance"] >= 2 * 10**18
    assert st["rounds"][0]["status"] == "none"
    # ending with rounds remaining is refused, with the custom error named
    e = run("project", "end", pid, *common, "--dev-account", "0")
    assert e.returncode == 6
    assert "RoundsRemaining" in one_error_line(e)
    # anyone may end a project (trust model v2), so a stranger meets the same check, not NotOwner
    e = run("project", "end", pid, *common, "--dev-account", "4")
    assert e.returncode == 6 and "RoundsRemaining" in one_error_line(e)
    # a dispute by an outsider, and a resolve by a non-arbiter
    e = run("dispute", pid, "0", "--evidence", "QmE", *common, "--dev-account", "7")
    assert e.returncode == 6 and "NotStakeholder" in one_error_line(e)
    e = run("resolve", pid, "0", "--uphold", "--reason", "QmR", "--root", "0x" + "11" * 32, *common, "--dev-account", "7")
    assert e.returncode == 6 and "NotArbiter" in one_error_line(e)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--rpc", "http://127.0.0.1:1"], 5, "no Ethereum node answers"),
        (["--rpc", "http://192.168.1.10:8545"], 2, "not on loopback"),
        (["--rpc", "ftp://x"], 2, "unsupported RPC URL"),
        (["--deployment", "/nonexistent/deployment.json"], 7, "run `market deploy` first"),
    ],
)
def test_bad_connection_inputs_give_one_line(chain: dict[str, str], args: list[str], code: int, needle: str) -> None:
    base = {"--rpc": chain["rpc"], "--deployment": chain["dep"]}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    p = run("project", "status", "1", *[x for kv in base.items() for x in kv])
    assert p.returncode == code
    assert needle in one_error_line(p)


def test_malformed_project_files(chain: dict[str, str], tmp_path: Path) -> None:
    common = ["--rpc", chain["rpc"], "--deployment", chain["dep"], "--dev-account", "0"]
    from market.chain import connect
    from market.chain.deployment import Deployment

    client = Deployment.load(Path(chain["dep"])).client(connect(chain["rpc"]))
    before_count = client.project_count()
    cases = [
        (project_file(tmp_path, aggregator='"0x1234"'), "malformed aggregator"),
        (project_file(tmp_path, reward_per_round='"1 banana"'), "unknown unit"),
        (project_file(tmp_path, rounds="0"), "project.rounds"),
        (project_file(tmp_path, challenge_window="50"), "challenge_window"),
        (project_file(tmp_path, arbiter=""), "project.arbiter"),
    ]
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[project\nrounds=")
    cases.append((bad_toml, "not valid TOML"))
    cases.append((tmp_path / "missing.toml", "does not exist"))
    for path, needle in cases:
        p = run("project", "create", str(path), *common)
        assert p.returncode == 2, (path.read_text() if path.exists() else path, p.stderr)
        assert needle in one_error_line(p)
    # nothing was created by any of them
    assert client.project_count() == before_count


def test_keystore_account_and_password_rules(chain: dict[str, str], tmp_path: Path) -> None:
    from market.chain.accounts import Keystore

    ks = tmp_path / "ks"
    entry = Keystore(ks).new("owner2", "pw-123")
    cfg = tmp_path / "market.toml"
    cfg.write_text(f'[market]\nrpc = "{chain["rpc"]}"\ndeployment = "{chain["dep"]}"\nkeystore = "{ks}"\n')
    # no password in a non-interactive run: refused with a hint
    env = {k: v for k, v in os.environ.items() if k != "MARKET_PASSWORD"}
    p = subprocess.run([*MARKET, "project", "end", "1", "--config", str(cfg), "--account", "owner2"],
                       capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120, check=False)
    assert p.returncode == 2 and "MARKET_PASSWORD" in one_error_line(p)
    p = run("project", "end", "1", "--config", str(cfg), "--account", "owner2", env={"MARKET_PASSWORD": "wrong"})
    assert p.returncode == 2 and "wrong password" in one_error_line(p)
    # the right password signs: the contract answers NotStakeholder, naming this fresh account
    # (funded first by its keystore name: a dispute posts a bond, which an empty account cannot)
    assert run("fund", "owner2", "--amount", "1 ether", "--config", str(cfg)).returncode == 0
    p = run("dispute", "1", "0", "--evidence", "QmE", "--config", str(cfg), "--account", "owner2",
            env={"MARKET_PASSWORD": "pw-123"})
    assert p.returncode == 6 and "NotStakeholder" in one_error_line(p)
    assert entry.address.lower() in p.stderr.lower()


def test_stack_status_reports_down(tmp_path: Path) -> None:
    p = run("stack", "status", "--state", str(tmp_path / "nothing"), "--json")
    assert p.returncode == 4
    assert json.loads(p.stdout)["anvil"]["running"] is False


def test_stack_up_is_idempotent_and_down_stops_by_pid(tmp_path: Path) -> None:
    from devnet.process import pid_alive

    port = str(free_port())
    state = str(tmp_path / "s")
    try:
        a = run("stack", "up", "--state", state, "--no-ipfs", "--anvil-port", port, "--json")
        b = run("stack", "up", "--state", state, "--no-ipfs", "--anvil-port", port, "--json")
        assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
        pid = json.loads(a.stdout)["anvil"]["pid"]
        assert json.loads(b.stdout)["anvil"]["pid"] == pid
        st = run("stack", "status", "--state", state, "--json")
        assert st.returncode == 0, st.stderr  # started with --no-ipfs: status remembers and checks anvil only
        assert json.loads(st.stdout)["anvil"]["pid"] == pid and "ipfs" not in json.loads(st.stdout)
    finally:
        assert run("stack", "down", "--state", state).returncode == 0
    assert not pid_alive(pid)


def test_stack_remembers_its_ports_and_refuses_conflicting_flags(tmp_path: Path) -> None:
    """`up` without flags brings back the recorded stack; asking a running stack for another block
    time or port is an error naming what runs, not a silent exit 0."""
    port = str(free_port())
    state = str(tmp_path / "s")
    try:
        a = run("stack", "up", "--state", state, "--no-ipfs", "--anvil-port", port, "--json")
        assert a.returncode == 0, a.stderr
        again = run("stack", "up", "--state", state, "--no-ipfs", "--json")  # no --anvil-port: the recorded one
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["anvil"]["url"].endswith(f":{port}")
        clash = run("stack", "up", "--state", state, "--no-ipfs", "--block-time", "0")
        assert clash.returncode == 4
        line = one_error_line(clash)
        assert "already runs" in line and "a block every 1 s" in line and "market stack down" in line
        other_port = run("stack", "up", "--state", state, "--no-ipfs", "--anvil-port", str(free_port()))
        assert other_port.returncode == 4 and "already runs" in one_error_line(other_port)
    finally:
        assert run("stack", "down", "--state", state).returncode == 0


def test_config_file_is_strict(chain: dict[str, str], tmp_path: Path) -> None:
    """A misspelled key or table is an error naming the closest valid one (exit 2), never ignored."""
    for text, needle in [
        ('[market]\nrcp = "http://127.0.0.1:1"\n', "unknown key 'rcp' (did you mean 'rpc'?)"),
        ('[markt]\nrpc = "http://127.0.0.1:1"\n', "unknown table [markt] (did you mean 'market'?)"),
        ('[trainer]\n[market]\nipfs_port = 5001\n', "(did you mean 'ipfs_api_port'?)"),
        ("market = 3\n", "must be a table"),
        ("[market\n", "not valid TOML"),
    ]:
        cfg = tmp_path / "market.toml"
        cfg.write_text(text)
        p = run("project", "status", "1", "--config", str(cfg))
        assert p.returncode == 2, (text, p.stderr)
        assert needle in one_error_line(p), (text, p.stderr)
    missing = run("project", "status", "1", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "does not exist" in one_error_line(missing)


def test_fund_pays_from_a_dev_account_in_ether(chain: dict[str, str], tmp_path: Path) -> None:
    target = "0x000000000000000000000000000000000000dEaD"
    p = run("fund", target, "--amount", "2.5 ether", "--rpc", chain["rpc"], "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["sent"] == 25 * 10**17 and out["balance"] >= 25 * 10**17
    text = run("fund", target, "--amount", "0.5 ether", "--rpc", chain["rpc"])
    assert text.returncode == 0 and "sent 0.5 ETH" in text.stdout
    unknown = run("fund", "alice", "--rpc", chain["rpc"], env={"MARKET_CONFIG": ""},)
    assert unknown.returncode == 2 and "no account named 'alice'" in one_error_line(unknown)
    bad = run("fund", target, "--amount", "lots", "--rpc", chain["rpc"])
    assert bad.returncode == 2 and "--amount" in one_error_line(bad)


def _client(chain: dict[str, str], who: int):  # type: ignore[no-untyped-def]
    from market.chain import connect
    from market.chain.accounts import dev_account
    from market.chain.deployment import Deployment

    return Deployment.load(Path(chain["dep"])).client(connect(chain["rpc"]), dev_account(who))


def _mine_past(chain: dict[str, str], block: int) -> None:
    from devnet.anvil import rpc_call
    from market.chain import connect

    gap = block - int(connect(chain["rpc"]).eth.block_number)
    if gap >= 0:
        rpc_call(chain["rpc"], "anvil_mine", [hex(gap + 1)], timeout=60.0)


def test_settlement_paths_without_the_silent_roles(chain: dict[str, str]) -> None:
    """Trust model from the CLI: a silent aggregator's round is expired by an outsider, the owner
    replaces the aggregator, an unrevealed commitment forfeits its deposit; a working arbiter cannot
    be replaced; bad ruling inputs are one-line config errors."""
    import os as _os

    from market.chain import CommitState, ProjectParams, RoundStatus, commitment_of
    from market.chain.accounts import dev_account

    owner = _client(chain, 0)
    pid, _ = owner.create_project(ProjectParams(
        aggregator=dev_account(1).address, arbiter=dev_account(2).address, num_rounds=2, reward_per_round=10**18,
        commit_window=4, reveal_window=4, challenge_window=2, spec_cid="QmSpec"))
    honest, lazy = _client(chain, 3), _client(chain, 4)
    honest.register(pid)
    lazy.register(pid)
    cid, digest, salt = "Qm" + _os.urandom(8).hex(), _os.urandom(32), _os.urandom(32)
    honest.commit(pid, 0, commitment_of(pid, 0, honest.account_address, cid, digest, salt))
    lazy.commit(pid, 0, commitment_of(pid, 0, lazy.account_address, "QmLazy", _os.urandom(32), salt))
    _mine_past(chain, owner.project(pid).commit_deadline)
    honest.reveal(pid, 0, cid, digest, salt)
    common = ["--rpc", chain["rpc"], "--deployment", chain["dep"], "--json"]

    too_early = run("expire", str(pid), "--dev-account", "6", *common)
    assert too_early.returncode == 6 and "expire" in one_error_line(too_early).lower()
    _mine_past(chain, owner.project(pid).finalize_deadline)
    expired = run("expire", str(pid), "--dev-account", "6", *common)  # an outsider: no role needed
    assert expired.returncode == 0, expired.stderr
    assert owner.round(pid, 0).status == RoundStatus.EXPIRED

    forfeited = run("forfeit", str(pid), "0", lazy.account_address, "--dev-account", "6", *common)
    assert forfeited.returncode == 0, forfeited.stderr
    assert owner.commitment_state(pid, 0, lazy.account_address) == CommitState.FORFEITED

    not_owner = run("replace", str(pid), "--aggregator", dev_account(7).address, "--dev-account", "5", *common)
    assert not_owner.returncode == 6 and "NotOwner" in one_error_line(not_owner)
    replaced = run("replace", str(pid), "--aggregator", dev_account(7).address, "--dev-account", "0", *common)
    assert replaced.returncode == 0, replaced.stderr
    assert owner.project(pid).aggregator == dev_account(7).address
    working = run("replace", str(pid), "--arbiter", dev_account(8).address, "--dev-account", "0", *common)
    assert working.returncode == 6, working.stderr  # the arbiter missed nothing: it stays
    both = run("replace", str(pid), "--arbiter", dev_account(8).address, "--aggregator", dev_account(8).address,
               "--dev-account", "0", *common)
    assert both.returncode == 2 and "exactly one" in one_error_line(both)

    no_root = run("resolve", str(pid), "0", "--uphold", "--reason", "QmWhy", "--dev-account", "2", *common)
    assert no_root.returncode == 2 and "--root" in one_error_line(no_root)
    bad_root = run("resolve", str(pid), "0", "--uphold", "--reason", "QmWhy", "--root", "0x12", "--dev-account", "2",
                   *common)
    assert bad_root.returncode == 2 and "64 hex digits" in one_error_line(bad_root)

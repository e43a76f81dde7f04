"""The `trainer` CLI as a data owner runs it: real processes (`python -m trainer.cli`), the
session's real anvil node, a real js-ipfs node started here, one-line errors with exit codes.

The aggregator's side (finalizing rounds with a round record and a rewards root) is played by
the test itself, from dev account 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
import torch
from typer.testing import CliRunner

from devnet import toolpaths
from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from devnet.process import pid_alive
from market.chain import CommitState, MarketClient, ProjectParams
from market.chain.accounts import dev_account
from market.chain.deployment import Deployment
from market.errors import ExitCode
from market.models import ModelSpec, init_model
from market.protocol.codec import (
    ModelHeader,
    UpdateHeader,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
)
from market.protocol.documents import ProjectSpec, RecordedVerdict, RoundRecord, UpdateInput, ValidationPolicy
from market.protocol.merkle import RewardTree
from market.protocol.validation import update_spec, validate_update
from market.storage import IpfsStore
from tests.conftest import free_port
from trainer.data import load_builtin
from trainer.partition import partition

ETHER = 10**18
OWNER, AGG, ARB = dev_account(0), dev_account(1), dev_account(2)
TRAINER = [sys.executable, "-m", "trainer.cli"]
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------- the stack


def _distinct_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


@pytest.fixture(scope="module")
def ipfs_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpfsNode]:
    """A real js-ipfs daemon, offline, on free loopback ports; stopped by PID at the end."""
    if shutil.which("node") is None or not toolpaths.JSIPFS_BIN.exists():
        pytest.skip("node or js-ipfs (npm ci) is missing")
    node = IpfsNode(tmp_path_factory.mktemp("trainer-ipfs") / "repo", *_distinct_ports(3))
    node.start(timeout=90)
    pid = node.status().pid
    try:
        yield node
    finally:
        node.stop()
        assert pid is not None and not pid_alive(pid)


@dataclass
class World:
    """The local stack as the tests use it, and the owner's and aggregator's moves."""

    anvil: Anvil
    market: MarketClient
    store: IpfsStore
    ipfs: str
    deployment: Path
    base: Path
    cumulative: dict[tuple[int, str], int] = field(default_factory=dict)
    specs: dict[int, tuple[ProjectSpec, str]] = field(default_factory=dict)

    @property
    def agg(self) -> MarketClient:
        return self.market.with_account(AGG)

    # -- the owner

    def project(self, *, rounds: int = 1, commit: int = 20, reveal: int = 20, challenge: int = 3,
                stake: int = ETHER // 10, model: ModelSpec | None = None, weights_for: ModelSpec | None = None,
                hyperparams: dict[str, Any] | None = None, max_norm: float = 1000.0) -> int:
        """A project on the `digits` task (logreg by default) with its spec and initial weights
        (from init_model + encode_model) published on IPFS."""
        ms = model or ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10, dataset="digits")
        w_spec = weights_for or ms
        weights = encode_model(init_model(w_spec, 0).state_dict(), ModelHeader(0, 0, w_spec.architecture))
        wcid = self.store.add(weights)
        spec = ProjectSpec(
            model=ms.model_copy(update={"initial_weights_cid": wcid}),
            validation=ValidationPolicy(max_norm=max_norm),
            hyperparams=hyperparams if hyperparams is not None else {"epochs": 1, "batch_size": 32},
        )
        scid = self.store.add(spec.to_bytes())
        pid, _ = self.market.create_project(ProjectParams(
            aggregator=AGG.address, arbiter=ARB.address, num_rounds=rounds, reward_per_round=ETHER,
            commit_window=commit, reveal_window=reveal, challenge_window=challenge, spec_cid=scid,
            stake=stake, dispute_bond=ETHER // 100,
        ))
        self.specs[pid] = (spec, scid)
        return pid

    def register(self, pid: int, index: int) -> str:
        acct = dev_account(index)
        self.market.with_account(acct).register(pid, self.market.project(pid).stake)
        return str(acct.address)

    # -- chain time

    def mine_past(self, block: int) -> None:
        gap = block - self.market.block_number
        if gap >= 0:
            self.anvil.mine(gap + 1)

    # -- the aggregator

    def global_state(self, pid: int, r: int) -> tuple[str, dict[str, torch.Tensor]]:
        spec, _ = self.specs[pid]
        finals = {f.round: f for f in self.market.finalized(pid)}
        cid = spec.model.initial_weights_cid if r == 0 else finals[r - 1].model_cid
        assert cid is not None
        return cid, decode_model(self.store.cat(cid))[1]

    def finalize(self, pid: int, r: int, rewards: dict[str, int], *, hyperparams: dict[str, Any] | None = None) -> None:
        """Average the revealed updates into the next model, publish it and a round record, and
        finalize with a cumulative rewards root (as the aggregator would)."""
        spec, scid = self.specs[pid]
        info = self.market.project(pid)
        self.mine_past(info.reveal_deadline)
        base_cid, state = self.global_state(pid, r)
        reveals = self.market.reveals(pid, r)
        commits = {c.trainer: c for c in self.market.commits(pid, r)}
        deltas = [decode_update(self.store.cat(rv.cid))[1] for rv in reveals]
        new = {k: v + sum((d[k] for d in deltas), torch.zeros_like(v)) / max(1, len(deltas)) for k, v in state.items()}
        model = encode_model(new, ModelHeader(pid, r + 1, spec.model.architecture))
        model_cid = self.store.add(model)
        for a, amount in rewards.items():
            self.cumulative[(pid, a)] = self.cumulative.get((pid, a), 0) + amount
        cumulative = {a: v for (p, a), v in self.cumulative.items() if p == pid} or {OWNER.address: 0}
        tree = RewardTree.build(cumulative)
        record = RoundRecord(
            project_id=pid, round=r, chain_id=31337, contract=self.market.address, code_version="test", seed=0,
            base_model_cid=base_cid, model_cid=model_cid, model_digest="0x" + hashlib.sha256(model).hexdigest(),
            validation_cid=scid, rule="mean", filters={}, scorer="none",
            hyperparams=hyperparams if hyperparams is not None else dict(spec.hyperparams),
            inputs=[UpdateInput(trainer=rv.trainer, cid=rv.cid, digest="0x" + rv.digest.hex(),
                                commit_block=commits[rv.trainer].block_number,
                                commit_log_index=commits[rv.trainer].log_index, reveal_block=rv.block_number)
                    for rv in reveals],
            verdicts=[RecordedVerdict(trainer=rv.trainer, accepted=True) for rv in reveals],
            scores={a: 1.0 for a in rewards}, cumulative_scores={a: 1.0 for a in rewards},
            rewards=rewards, cumulative_rewards=cumulative, allocation=sum(rewards.values()),
            rewards_root="0x" + tree.root.hex(), proofs=tree.proofs_hex(), metrics={},
        )
        record_cid = self.store.add(record.to_bytes())
        # every round allocates the project's fixed per-round reward; the tree may pay less of it
        self.agg.finalize_round(pid, r, model_cid, record_cid, tree.root, ETHER)

    # -- the trainer CLI

    def config(self, directory: Path, **extra: Any) -> Path:
        """A config file (its [trainer] table) for this stack (fast polling, few retries), plus `extra` keys."""
        directory.mkdir(parents=True, exist_ok=True)
        keys: dict[str, Any] = {
            "rpc": self.anvil.url, "deployment": str(self.deployment), "ipfs": self.ipfs,
            "keystore": str(directory / "keystore"), "state": str(directory / "state"),
            "poll_interval": 0.1, "wait_timeout": 120.0, "rpc_retries": 1, "ipfs_retries": 1, "threads": 1,
        }
        keys.update(extra)
        path = directory / "trainer.toml"
        path.write_text(tomli_w.dumps({"trainer": keys}))
        return path

    def cli(self, cfg: Path, *args: object, stdin: str | None = None, env: dict[str, str] | None = None,
            proc: bool = False, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """Run `trainer ARGS --config CFG`: in this process through Typer's runner (fast), or with
        `proc=True` as a real `python -m trainer.cli` process."""
        argv = [*map(str, args), "--config", str(cfg)]
        if proc:
            feed: dict[str, Any] = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
            return subprocess.run([*TRAINER, *argv], capture_output=True, text=True, cwd=cfg.parent, check=False,
                                  env=_env(env), timeout=timeout, **feed)
        from trainer.cli import app

        clean: dict[str, str | None] = {"MARKET_PASSWORD": None, "MARKET_CONFIG": None, "MARKET_DEBUG": None}
        result = CliRunner().invoke(app, argv, input=stdin, env={**clean, **(env or {})})
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr)

    def popen(self, cfg: Path, *args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*TRAINER, *map(str, args), "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True, cwd=cfg.parent, env=_env(env),
        )


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MARKET_PASSWORD", "MARKET_CONFIG", "MARKET_DEBUG")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


@pytest.fixture(scope="module")
def world(anvil: Anvil, anvil_deployment: Deployment, ipfs_node: IpfsNode,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from market.chain import connect

    base = tmp_path_factory.mktemp("trainer-cli")
    dep = base / "deployment.json"
    anvil_deployment.save(dep)
    market = anvil_deployment.client(connect(anvil.url), OWNER)
    store = IpfsStore(ipfs_node.api_multiaddr, find_timeout=2.0, timeout=30)
    try:
        yield World(anvil, market, store, ipfs_node.api_multiaddr, dep, base)
    finally:
        store.close()


def ok(p: subprocess.CompletedProcess[str]) -> Any:
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr}"
    return json.loads(p.stdout) if p.stdout.strip().startswith(("{", "[")) else p.stdout


def one_error_line(p: subprocess.CompletedProcess[str], code: int) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == code, f"exit {p.returncode} (wanted {code}): {p.stderr}"
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def wait_until(cond: Callable[[], bool], proc: subprocess.Popen[str] | None = None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the trainer exited with {proc.returncode} while waiting: {err}\n{out}")
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
                proc.wait()
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def finish(proc: subprocess.Popen[str], timeout: float = 180.0) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the trainer did not finish in {timeout} s: {err}") from None
    return proc.returncode, out, err


def nonce(world: World, address: str) -> int:
    return int(world.market.w3.eth.get_transaction_count(address))


# ---------------------------------------------------------------------- accounts


@pytest.mark.integration
def test_account_new_import_list_and_wrong_password(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    created = ok(world.cli(cfg, "account", "new", "alice", "--json", env={"MARKET_PASSWORD": "s3cret"}))
    assert created["address"].startswith("0x") and Path(created["path"]).is_file()
    assert oct(Path(created["path"]).stat().st_mode & 0o777) == "0o600"
    key = "0x" + dev_account(7).key.hex().removeprefix("0x")
    imported = ok(world.cli(cfg, "account", "import", "bob", "--json", stdin=key + "\n", env={"MARKET_PASSWORD": "pw-bob"},
                            proc=True))
    assert imported["address"] == dev_account(7).address
    assert key.removeprefix("0x") not in Path(imported["path"]).read_text()  # encrypted, not in clear
    listed = ok(world.cli(cfg, "account", "list", "--json"))
    assert {(a["name"], a["address"]) for a in listed} == {("alice", created["address"]), ("bob", dev_account(7).address)}
    # no password at all (no terminal, no $MARKET_PASSWORD): refused, never taken from a flag
    assert "MARKET_PASSWORD" in one_error_line(world.cli(cfg, "account", "new", "carol", proc=True), ExitCode.CONFIG)
    assert "already exists" in one_error_line(
        world.cli(cfg, "account", "import", "bob", stdin=key + "\n", env={"MARKET_PASSWORD": "x"}), ExitCode.CONFIG)
    assert "malformed private key" in one_error_line(
        world.cli(cfg, "account", "import", "dave", stdin="0x1234\n", env={"MARKET_PASSWORD": "x"}), ExitCode.CONFIG)

    # a wrong password: one line, exit 2, and no transaction from that account
    pid = world.project()
    before = nonce(world, dev_account(7).address)
    line = one_error_line(world.cli(cfg, "join", pid, "--account", "bob", "--json", env={"MARKET_PASSWORD": "wrong"},
                                    proc=True), ExitCode.CONFIG)
    assert "wrong password" in line
    assert nonce(world, dev_account(7).address) == before
    # the right one joins, paying the stake
    joined = ok(world.cli(cfg, "join", pid, "--account", "bob", "--json", env={"MARKET_PASSWORD": "pw-bob"}))
    assert joined["joined"] and joined["stake"] == ETHER // 10
    assert world.market.registration(pid, dev_account(7).address) == (True, ETHER // 10)
    again = ok(world.cli(cfg, "join", pid, "--account", "bob", "--json", env={"MARKET_PASSWORD": "pw-bob"}))
    assert again["already_registered"] and not again["joined"]
    # status and train need no password: the address comes from the keystore file
    st = ok(world.cli(cfg, "status", pid, "--account", "bob", "--json"))
    assert st["trainer"] == dev_account(7).address and st["registered"]


# ---------------------------------------------------------------------- one round by hand


@pytest.mark.integration
def test_join_train_submit_status_rewards_claim(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    pid = world.project(rounds=1, challenge=3)
    me = dev_account(3).address
    spec, _ = world.specs[pid]

    st = ok(world.cli(cfg, "status", pid, "--dev-account", 3, "--json"))
    assert st["phase"] == "commit" and not st["registered"] and st["commit_state"] == "none"
    joined = ok(world.cli(cfg, "join", pid, "--dev-account", 3, "--json"))
    assert joined["joined"] and world.market.registration(pid, me)[0]

    trained = ok(world.cli(cfg, "train", pid, "--dev-account", 3, "--data", "digits", "--shard", "0/4", "--json"))
    data = Path(trained["path"]).read_bytes()
    header, _ = decode_update(data)
    assert (header.project_id, header.round, header.trainer) == (pid, 0, me)
    assert header.base_model_cid == spec.model.initial_weights_cid
    n = len(partition(load_builtin("digits").y, 4, "iid", seed=0)[0])
    assert header.num_samples == trained["num_samples"] == n
    assert trained["sha256"] == "0x" + hashlib.sha256(data).hexdigest()
    template = init_model(spec.model, 0)
    verdict = validate_update(
        data, expected_digest=None, project_id=pid, round=0, base_model_cid=header.base_model_cid, trainer=me,
        spec=update_spec(template.state_dict()), max_bytes=10**8, max_norm=1000.0,
    )
    assert verdict.accepted, verdict.detail
    assert verdict.norm is not None and verdict.norm > 0

    st = ok(world.cli(cfg, "status", pid, "--dev-account", 3, "--json"))
    assert st["registered"] and st["update_file"] == trained["path"] and st["local_state"] is None

    proc = world.popen(cfg, "submit", pid, "--dev-account", 3, "--json")
    wait_until(lambda: world.market.commitment_state(pid, 0, me) == CommitState.COMMITTED, proc)
    assert not world.market.reveals(pid, 0)  # nothing revealed before the commit deadline
    world.mine_past(world.market.project(pid).commit_deadline)
    code, out, err = finish(proc)
    assert code == 0, err
    # progress and waiting lines are left out under --json; only warnings (here: the test chain has
    # no clock) reach stderr
    assert all(line.startswith("warning:") for line in err.splitlines() if line.strip()), err
    result = json.loads(out)
    assert result["stage"] == "revealed" and result["steps"] == ["upload", "commit", "reveal"]
    [rev] = world.market.reveals(pid, 0)
    assert rev.trainer == me and rev.digest == hashlib.sha256(data).digest() and rev.cid == result["cid"]
    assert world.store.cat(rev.cid) == data

    st = ok(world.cli(cfg, "status", pid, "--dev-account", 3, "--json"))
    assert st["commit_state"] == "revealed" and st["local_state"]["stage"] == "revealed"
    # submitting again is a no-op: the round is done, no second commit
    again = ok(world.cli(cfg, "submit", pid, "--dev-account", 3, "--json"))
    assert again["stage"] == "revealed" and again["steps"] == []
    assert len(world.market.commits(pid, 0)) == 1

    world.finalize(pid, 0, {me: 3 * ETHER // 4})
    rw = ok(world.cli(cfg, "rewards", pid, "--dev-account", 3, "--json"))
    assert rw["rounds"][0]["reward"] == 3 * ETHER // 4 and rw["rounds"][0]["accepted"] is True
    assert rw["rounds"][0]["settled"] is False and rw["claimable"] == 0
    early = ok(world.cli(cfg, "claim", pid, "--dev-account", 3, "--json"))
    assert early["amount"] == 0 and early["tx"] is None
    world.anvil.mine(4)  # past the challenge window
    rw = ok(world.cli(cfg, "rewards", pid, "--dev-account", 3, "--json"))
    assert rw["rounds"][0]["settled"] and rw["claimable"] == 3 * ETHER // 4 and rw["claimed"] == 0
    claimed = ok(world.cli(cfg, "claim", pid, "--dev-account", 3, "--json"))
    assert claimed["amount"] == 3 * ETHER // 4 and claimed["round"] == 0
    assert world.market.claimed_by(pid, me) == 3 * ETHER // 4
    rw = ok(world.cli(cfg, "rewards", pid, "--dev-account", 3, "--json"))
    assert rw["claimed"] == 3 * ETHER // 4 and rw["claimable"] == 0 and rw["cumulative"] == 3 * ETHER // 4
    # human-readable views print without error
    human = world.cli(cfg, "rewards", pid, "--dev-account", 3)
    assert human.returncode == 0 and "claimed" in human.stdout
    st = ok(world.cli(cfg, "status", pid, "--dev-account", 3, "--json"))
    assert st["phase"] == "finished" and st["claimed"] == 3 * ETHER // 4


# ---------------------------------------------------------------------- unattended


@pytest.mark.integration
def test_run_all_rounds_with_record_hyperparams_and_claim(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path, data="digits", shard="1/4", partition="dirichlet:0.5", train={"epochs": 1})
    pid = world.project(rounds=2, challenge=3)
    me = dev_account(4).address
    proc = world.popen(cfg, "run", pid, "--dev-account", 4, "--join", "--claim", "--json")
    for r in range(2):
        wait_until(lambda: any(c.trainer == me for c in world.market.commits(pid, r)), proc)  # noqa: B023
        world.mine_past(world.market.project(pid).commit_deadline)
        wait_until(lambda: any(rv.trainer == me for rv in world.market.reveals(pid, r)), proc)  # noqa: B023
        # round 0's record asks round 1 for 2 epochs at lr 0.1, plus a key this trainer does not know
        world.finalize(pid, r, {me: ETHER // 2}, hyperparams={"epochs": 2, "lr": 0.1, "server_lr": 1.0})
    # the trainer now waits for the last round's challenge window, then claims
    time.sleep(0.5)
    world.anvil.mine(5)
    code, out, err = finish(proc)
    assert code == 0, err
    result = json.loads(out)
    assert [e["stage"] for e in result["rounds"]] == ["revealed", "revealed"]
    assert result["claim"]["amount"] == ETHER and world.market.claimed_by(pid, me) == ETHER
    assert world.market.registration(pid, me)[0]
    # round 1 trained from round 0's model with the record's hyper-parameters (over the config's)
    summary = json.loads((tmp_path / "state" / "updates" / f"p{pid}" / f"{me.lower()}-r1.json").read_text())
    assert summary["config"]["epochs"] == 2 and summary["config"]["lr"] == 0.1
    assert summary["ignored_hyperparams"] == ["server_lr"]
    header, _ = decode_update((tmp_path / "state" / "updates" / f"p{pid}" / f"{me.lower()}-r1.safetensors").read_bytes())
    assert header.base_model_cid == world.market.finalized(pid)[0].model_cid
    labels = load_builtin("digits").y
    assert header.num_samples == len(partition(labels, 4, "dirichlet", seed=0, alpha=0.5)[1])
    # the project has no open round any more: run returns at once, nothing to do
    again = ok(world.cli(cfg, "run", pid, "--dev-account", 4, "--json"))
    assert again["rounds"] == [] and again["claim"] is None


# ---------------------------------------------------------------------- data options and behaviours


@pytest.mark.integration
def test_train_options_and_behaviours_produce_what_they_claim(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    pid = world.project()
    common = ("--dev-account", 5, "--data", "digits", "--shard", "2/3", "--partition", "dirichlet:0.5", "--label-noise", "0.2")
    honest = ok(world.cli(cfg, "train", pid, *common, "--json"))
    h_header, h_delta = decode_update(Path(honest["path"]).read_bytes())
    labels = load_builtin("digits").y
    assert h_header.num_samples == len(partition(labels, 3, "dirichlet", seed=0, alpha=0.5)[2])
    flipped = ok(world.cli(cfg, "train", pid, *common, "--behaviour", "sign_flip:k=2", "--json"))
    _, f_delta = decode_update(Path(flipped["path"]).read_bytes())
    for k in h_delta:
        torch.testing.assert_close(f_delta[k], -2 * h_delta[k], rtol=0, atol=0)
    liar = ok(world.cli(cfg, "train", pid, *common, "--behaviour", "sample_liar:factor=3", "--encoding", "q8", "--json"))
    l_header, l_delta = decode_update(Path(liar["path"]).read_bytes())
    assert l_header.num_samples == 3 * h_header.num_samples and l_header.encoding == "q8"
    for k, h in h_delta.items():  # q8 of the honest delta, within the codec's documented bound
        clip = 4 * float(h.abs().double().mean())
        step = min(float(h.abs().max()), clip) / 127
        bound = (h.abs() - clip).clamp(min=0) + step / 2 + 1e-6
        assert bool(((l_delta[k] - h).abs() <= bound).all()), k
    free = ok(world.cli(cfg, "train", pid, "--dev-account", 5, "--behaviour", "free_rider", "--json"))
    _, z = decode_update(Path(free["path"]).read_bytes())
    assert all(float(v.abs().max()) == 0.0 for v in z.values()) and free["steps"] == 0
    assert "unknown behaviour" in one_error_line(world.cli(cfg, "train", pid, "--dev-account", 5, "--behaviour", "evil", "--json"), ExitCode.CONFIG)


@pytest.mark.integration
def test_train_from_own_files(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    pid = world.project()
    ds = load_builtin("digits")
    npz = tmp_path / "mine.npz"
    np.savez(npz, x=ds.x[:200].numpy(), y=ds.y[:200].numpy())
    csv = tmp_path / "mine.csv"
    np.savetxt(csv, np.hstack([ds.x[:150].numpy(), ds.y[:150].numpy()[:, None]]), delimiter=",", fmt="%.5f")
    folder = tmp_path / "images"
    from PIL import Image

    for i in range(30):
        d = folder / str(int(ds.y[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((ds.x[i].reshape(8, 8).numpy() * 255).astype(np.uint8)).save(d / f"{i}.png")
    assert ok(world.cli(cfg, "train", pid, "--dev-account", 5, "--data", npz, "--json"))["num_samples"] == 200
    assert ok(world.cli(cfg, "train", pid, "--dev-account", 5, "--data", csv, "--json"))["num_samples"] == 150
    assert ok(world.cli(cfg, "train", pid, "--dev-account", 5, "--data", folder, "--json"))["num_samples"] == 30


# ---------------------------------------------------------------------- bad input


@pytest.mark.integration
def test_bad_data_each_one_line(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    pid = world.project()
    t = ("train", pid, "--dev-account", 5, "--json")
    assert "does not exist" in one_error_line(world.cli(cfg, *t, "--data", tmp_path / "nope.npz"), ExitCode.DATA)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(os.urandom(300))
    assert "cannot be read" in one_error_line(world.cli(cfg, *t, "--data", garbage), ExitCode.DATA)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("1,2,3\n4,five,6\n")
    one_error_line(world.cli(cfg, *t, "--data", bad_csv), ExitCode.DATA)
    labels = tmp_path / "labels.npz"
    np.savez(labels, x=np.zeros((20, 64), np.float32), y=np.full(20, 12))
    assert "label" in one_error_line(world.cli(cfg, *t, "--data", labels), ExitCode.DATA)
    shape = tmp_path / "shape.npz"
    np.savez(shape, x=np.zeros((20, 10), np.float32), y=np.zeros(20, np.int64))
    assert "shape" in one_error_line(world.cli(cfg, *t, "--data", shape), ExitCode.DATA)
    assert "shard" in one_error_line(world.cli(cfg, *t, "--shard", "4/4"), ExitCode.CONFIG)
    assert "partition" in one_error_line(world.cli(cfg, *t, "--shard", "0/2", "--partition", "zipf"), ExitCode.CONFIG)
    assert not (tmp_path / "state" / "updates").exists()  # nothing was written


@pytest.mark.integration
def test_model_spec_mismatch(world: World, tmp_path: Path) -> None:
    """The published initial weights do not fit the spec's model: refused before training."""
    cfg = world.config(tmp_path)
    spec = ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10, dataset="digits")
    pid = world.project(model=spec, weights_for=spec.model_copy(update={"input_shape": (32,)}))
    line = one_error_line(world.cli(cfg, "train", pid, "--dev-account", 5, "--json"), ExitCode.MODEL_SPEC)
    assert "spec" in line
    other = world.project(model=spec, weights_for=ModelSpec(architecture="digits_mlp", input_shape=(64,), num_classes=10))
    assert "digits_mlp" in one_error_line(world.cli(cfg, "train", other, "--dev-account", 5, "--json"), ExitCode.MODEL_SPEC)


@pytest.mark.integration
def test_user_model_code_runs_only_when_allowed(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    spec = ModelSpec(architecture="tests.user_models.tiny:make_tiny", arch_kwargs={"hidden": 8}, input_shape=(64,),
                     num_classes=10, dataset="digits")
    pid = world.project(model=spec)
    assert "--allow-user-models" in one_error_line(world.cli(cfg, "train", pid, "--dev-account", 5, "--json"), ExitCode.MODEL_SPEC)
    trained = ok(world.cli(cfg, "train", pid, "--dev-account", 5, "--allow-model-code", "--json"))
    _, delta = decode_update(Path(trained["path"]).read_bytes())
    assert set(delta) == set(init_model(spec, 0).state_dict())


@pytest.mark.integration
def test_unknown_project_unreachable_rpc_and_ipfs(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    missing = world.market.project_count() + 10
    assert f"no project {missing}" in one_error_line(world.cli(cfg, "status", missing, "--json", proc=True), ExitCode.UNKNOWN_PROJECT)
    for cmd in ("join", "train", "submit", "run", "rewards", "claim"):
        assert f"no project {missing}" in one_error_line(world.cli(cfg, cmd, missing, "--dev-account", 5, "--json"), ExitCode.UNKNOWN_PROJECT)
    dead = f"http://127.0.0.1:{free_port()}"
    assert "no Ethereum node answers" in one_error_line(world.cli(cfg, "status", 1, "--rpc", dead, "--json", proc=True), ExitCode.CHAIN)
    pid = world.project()
    dead_ipfs = f"/ip4/127.0.0.1/tcp/{free_port()}/http"
    line = one_error_line(world.cli(cfg, "train", pid, "--dev-account", 5, "--ipfs", dead_ipfs, "--json", proc=True), ExitCode.STORAGE)
    assert "does not answer" in line


@pytest.mark.integration
def test_not_registered_deadline_passed_and_bad_payload_send_nothing(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    pid = world.project(commit=30)
    stranger = dev_account(6).address
    ok(world.cli(cfg, "train", pid, "--dev-account", 6, "--json"))
    before = nonce(world, stranger)
    line = one_error_line(world.cli(cfg, "submit", pid, "--dev-account", 6, "--json"), ExitCode.SUBMISSION)
    assert "not registered" in line and "trainer join" in line
    assert nonce(world, stranger) == before and not world.market.commits(pid, 0)

    me = world.register(pid, 5)
    ok(world.cli(cfg, "train", pid, "--dev-account", 5, "--json"))
    _, global_state = world.global_state(pid, 0)
    spec, _ = world.specs[pid]
    base = spec.model.initial_weights_cid
    assert base is not None

    def write(name: str, tensors: dict[str, torch.Tensor], header: UpdateHeader) -> Path:
        p = tmp_path / name
        p.write_bytes(encode_update(tensors, header))
        return p

    zeros = {k: torch.zeros_like(v) for k, v in global_state.items()}
    nan = dict(zeros)
    first = next(iter(nan))
    nan[first] = torch.full_like(nan[first], float("nan"))
    huge = {k: torch.full_like(v, 1e4) for k, v in global_state.items()}
    wrong_keys = {"weight": torch.zeros(3)}
    cases = {
        "non_finite": write("nan.st", nan, UpdateHeader(pid, 0, base, me, 10)),
        "norm_too_large": write("huge.st", huge, UpdateHeader(pid, 0, base, me, 10)),
        "wrong_keys": write("keys.st", wrong_keys, UpdateHeader(pid, 0, base, me, 10)),
        "wrong_trainer": write("who.st", zeros, UpdateHeader(pid, 0, base, stranger, 10)),
        "bad_sample_count": write("zero.st", zeros, UpdateHeader(pid, 0, base, me, 0)),
        "wrong_base_model": write("base.st", zeros, UpdateHeader(pid, 0, world.specs[pid][1], me, 10)),
    }
    random_bytes = tmp_path / "random.st"
    random_bytes.write_bytes(os.urandom(2000))
    before = nonce(world, me)
    for reason, path in cases.items():
        line = one_error_line(world.cli(cfg, "submit", pid, "--dev-account", 5, "--update", path, "--json"), ExitCode.UPDATE_REJECTED)
        assert reason in line, line
    assert "not an update" in one_error_line(world.cli(cfg, "submit", pid, "--dev-account", 5, "--update", random_bytes, "--json"), ExitCode.UPDATE_REJECTED)
    stale = write("stale.st", zeros, UpdateHeader(pid, 3, base, me, 10))
    assert "round 3" in one_error_line(world.cli(cfg, "submit", pid, "--dev-account", 5, "--update", stale, "--json"), ExitCode.SUBMISSION)
    assert "no update file" in one_error_line(
        world.cli(cfg, "submit", pid, "--dev-account", 5, "--update", tmp_path / "none.st", "--json"), ExitCode.UPDATE_REJECTED)
    assert nonce(world, me) == before and not world.market.commits(pid, 0)
    assert not (tmp_path / "state" / f"p{pid}").exists()  # no submission state: nothing uploaded

    # the commit deadline passes: a good update is refused with exit 13 and nothing is sent
    world.mine_past(world.market.project(pid).commit_deadline)
    line = one_error_line(world.cli(cfg, "submit", pid, "--dev-account", 5, "--json"), ExitCode.DEADLINE_PASSED)
    assert "deadline" in line
    assert nonce(world, me) == before and not world.market.commits(pid, 0)
    # once every round is finalized there is no open round: train says so
    world.finalize(pid, 0, {me: 1})
    assert "no open round" in one_error_line(world.cli(cfg, "train", pid, "--dev-account", 5, "--json"), ExitCode.SUBMISSION)


# ---------------------------------------------------------------------- the manual path (issue 10)


@pytest.mark.integration
def test_a_new_account_is_told_how_to_get_funds_and_stakes_stay_until_the_end(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    pw = {"MARKET_PASSWORD": "pw-carol"}
    made = world.cli(cfg, "account", "new", "carol", env=pw)
    assert made.returncode == 0 and "market fund carol" in made.stdout, made.stdout
    pid = world.project()
    line = one_error_line(world.cli(cfg, "join", pid, "--account", "carol", "--json", env=pw), ExitCode.CHAIN)
    assert "market fund carol" in line and "0 ETH" in line and "0.1 ETH" in line
    joined = world.cli(cfg, "join", pid, "--dev-account", 9)
    assert joined.returncode == 0 and "staking 0.1 ETH" in joined.stdout, joined.stdout
    line = one_error_line(world.cli(cfg, "withdraw", pid, "--dev-account", 9, "--json"), ExitCode.SUBMISSION)
    assert "locked until project" in line and "market project end" in line


@pytest.mark.integration
def test_a_closed_round_is_not_trained_for(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    pid = world.project(commit=2)
    world.mine_past(world.market.project(pid).commit_deadline)
    line = one_error_line(world.cli(cfg, "train", pid, "--dev-account", 9, "--json"), ExitCode.DEADLINE_PASSED)
    assert "closed at block" in line and "last round" in line
    assert not (tmp_path / "state" / "updates").exists()


@pytest.mark.integration
def test_waiting_on_a_chain_without_a_clock_says_what_to_do_at_once(world: World, tmp_path: Path) -> None:
    """The test chain mines only on transactions: `submit` says so at its first wait (not after
    its timeout), and finishes once blocks come."""
    cfg = world.config(tmp_path)
    pid = world.project(commit=30)
    world.register(pid, 8)
    ok(world.cli(cfg, "train", pid, "--dev-account", 8, "--json"))
    proc = world.popen(cfg, "submit", pid, "--dev-account", 8, "--json")
    assert proc.stderr is not None
    seen: list[str] = []
    while not any("market stack up --block-time 1" in line for line in seen):
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"the trainer ended without the hint: {seen}")
        seen.append(line)
    assert world.market.commitment_state(pid, 0, dev_account(8).address) == CommitState.COMMITTED
    world.mine_past(world.market.project(pid).commit_deadline)
    code, out, err = finish(proc)
    assert code == 0, err
    assert json.loads(out)["stage"] == "revealed"


# ---------------------------------------------------------------------- configuration (no stack)


def test_config_file_flags_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.config import TrainerSettings, load_settings, parse_partition, parse_shard
    from trainer.errors import ConfigError

    (tmp_path / "data.npz").write_bytes(b"")
    (tmp_path / "market.toml").write_text(
        '[trainer]\nrpc = "http://127.0.0.1:9999"\nstate = "st"\nkeystore = "ks"\ndata = "data.npz"\n'
        'ipfs = "embedded:blobs"\nlabel_noise = 0\n[trainer.train]\nepochs = 3\nlr = 0.2\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MARKET_CONFIG", raising=False)
    s = load_settings()
    assert s.rpc == "http://127.0.0.1:9999" and s.state == tmp_path / "st" and s.keystore == tmp_path / "ks"
    assert s.data == str(tmp_path / "data.npz") and s.ipfs == f"embedded:{tmp_path / 'blobs'}"
    assert s.train_config().epochs == 3 and s.train_config().lr == 0.2 and s.label_noise == 0.0
    flagged = s.merged(rpc="http://127.0.0.1:1", train={"epochs": 5}).validate()
    assert flagged.rpc == "http://127.0.0.1:1" and flagged.train == {"epochs": 5, "lr": 0.2}
    monkeypatch.chdir(tmp_path / "..")
    assert load_settings() == TrainerSettings()  # no ./market.toml: defaults
    monkeypatch.setenv("MARKET_CONFIG", str(tmp_path / "market.toml"))
    assert load_settings().rpc == "http://127.0.0.1:9999"
    bad = tmp_path / "bad.toml"
    for body, words in (
        ("[trainer]\nrcp = 1\n", "unknown key"),
        ('[trainer]\nthreads = "2"\n', "wrong type"),
        ("[trainer\n", "not valid TOML"),
        ("[trainer.train]\nepochs = 0\n", "epochs"),
        ("[trainer.train]\nmomentum_x = 1\n", "unknown hyper-parameter"),
        ("[trainer]\nlabel_noise = 2\n", "label_noise"),
    ):
        bad.write_text(body)
        with pytest.raises(ConfigError, match=words):
            load_settings(bad).validate()
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    assert parse_shard("2/5") == (2, 5)
    for text in ("5/5", "a/b", "1"):
        with pytest.raises(ConfigError):
            parse_shard(text)
    assert parse_partition("dirichlet:0.3") == ("dirichlet", {"alpha": 0.3})
    assert parse_partition("pathological:2") == ("pathological", {"classes_per_trainer": 2})
    assert parse_partition("quantity_skew:exponent=1.5") == ("quantity_skew", {"exponent": 1.5})
    assert parse_partition("iid") == ("iid", {})
    for text in ("zipf:1", "dirichlet:x", "iid:3"):
        with pytest.raises(ConfigError):
            parse_partition(text)

"""Crash safety of a submission on the real stack: a trainer killed between commit and reveal
reveals the same (cid, digest, salt) after a restart, and a restart never commits twice.

anvil (the session fixture) mines only on transactions, so a trainer that has committed blocks
waiting for the commit deadline until the test mines: a reliable moment to SIGKILL it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from market.chain import CommitState, commitment_of
from market.chain.accounts import dev_account
from market.protocol.codec import UpdateHeader, encode_update
from tests.trainer import test_cli as cli_tests
from tests.trainer.test_cli import World, finish, ok, wait_until
from trainer.errors import SubmissionError
from trainer.participant import Participant
from trainer.state import RoundState, Stage, StateStore

# the CLI tests' stack fixtures (a js-ipfs node and the World around the session's anvil)
ipfs_node = cli_tests.ipfs_node
world = cli_tests.world

pytestmark = pytest.mark.integration


def _state_file(state_dir: Path, pid: int, r: int, trainer: str) -> Path:
    return state_dir / f"p{pid}" / f"{trainer.lower()}-r{r}.json"


def _stage(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["stage"])
    except (OSError, ValueError, KeyError):
        return None


def _assert_one_commit_and_matching_reveal(world: World, pid: int, r: int, trainer: str, saved: RoundState) -> None:
    commits = [c for c in world.market.commits(pid, r) if c.trainer == trainer]
    assert len(commits) == 1, commits
    salt, digest = bytes.fromhex(saved.salt[2:]), bytes.fromhex(saved.digest[2:])
    assert commits[0].commitment == commitment_of(pid, r, trainer, saved.cid, digest, salt)
    [rev] = [x for x in world.market.reveals(pid, r) if x.trainer == trainer]
    assert (rev.cid, rev.digest) == (saved.cid, digest)
    assert world.market.commitment_state(pid, r, trainer) == CommitState.REVEALED


def test_sigkill_between_commit_and_reveal_then_restart_reveals_the_same_secret(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    pid = world.project(commit=20, reveal=20)
    me = world.register(pid, 8)
    ok(world.cli(cfg, "train", pid, "--dev-account", 8, "--json"))
    state_file = _state_file(tmp_path / "state", pid, 0, me)

    first = world.popen(cfg, "submit", pid, "--dev-account", 8)
    wait_until(lambda: _stage(state_file) == "committed", first)
    assert world.market.commitment_state(pid, 0, me) == CommitState.COMMITTED
    time.sleep(0.3)  # it is now polling for the commit deadline, which nobody mines
    assert first.poll() is None
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    first.communicate()
    saved = StateStore(tmp_path / "state").load(pid, 0, me)
    assert saved is not None and saved.stage == Stage.COMMITTED and saved.reveal_tx is None
    assert not world.market.reveals(pid, 0)

    second = world.popen(cfg, "submit", pid, "--dev-account", 8, "--json")
    time.sleep(0.5)
    world.mine_past(world.market.project(pid).commit_deadline)
    code, out, err = finish(second)
    assert code == 0, err
    result = json.loads(out)
    assert result["resumed_from"] == "committed" and result["steps"] == ["reveal"]
    assert (result["cid"], result["digest"], result["salt"]) == (saved.cid, saved.digest, saved.salt)
    _assert_one_commit_and_matching_reveal(world, pid, 0, me, saved)


def _prepared(world: World, pid: int, trainer_index: int, state_dir: Path) -> tuple[Participant, RoundState]:
    """A participant (in this process) whose update is uploaded and whose salt is on disk."""
    acct = dev_account(trainer_index)
    client = world.market.with_account(acct)
    spec, _ = world.specs[pid]
    _, global_state = world.global_state(pid, 0)
    gen = torch.Generator().manual_seed(trainer_index)
    delta = {k: torch.randn(v.shape, generator=gen) * 0.01 for k, v in global_state.items()}
    assert spec.model.initial_weights_cid is not None
    data = encode_update(delta, UpdateHeader(pid, 0, spec.model.initial_weights_cid, acct.address, 100))
    participant = Participant(client, world.store, state_dir, poll_interval=0.1)
    return participant, participant.prepare(pid, 0, data)


def test_restart_after_commit_sent_but_before_it_was_recorded_never_commits_again(world: World, tmp_path: Path) -> None:
    """Killed after the commit transaction went out but before `committed` was written: the state
    says `committing`; `trainer run` finds the commitment on chain, checks it is its own, reveals."""
    cfg = world.config(tmp_path)
    pid = world.project(commit=20, reveal=20)
    me = world.register(pid, 9)
    participant, state = _prepared(world, pid, 9, tmp_path / "state")
    committing = participant.states.save(state.at(Stage.COMMITTING))
    digest, salt = bytes.fromhex(state.digest[2:]), bytes.fromhex(state.salt[2:])
    participant.client.commit(pid, 0, commitment_of(pid, 0, me, state.cid, digest, salt))  # ... and the crash

    proc = world.popen(cfg, "run", pid, "--dev-account", 9, "--max-rounds", 1, "--json")
    wait_until(lambda: _stage(_state_file(tmp_path / "state", pid, 0, me)) == "committed", proc)
    world.mine_past(world.market.project(pid).commit_deadline)
    code, out, err = finish(proc)
    assert code == 0, err
    result = json.loads(out)
    assert result["rounds"] == [{"round": 0, "stage": "revealed", "cid": state.cid, "resumed": True}]
    _assert_one_commit_and_matching_reveal(world, pid, 0, me, committing)


def test_restart_after_committing_was_recorded_but_nothing_sent_commits_once(world: World, tmp_path: Path) -> None:
    """Killed after writing `committing` but before sending: the restart commits (once) and reveals."""
    cfg = world.config(tmp_path)
    pid = world.project(commit=20, reveal=20)
    me = world.register(pid, 10)
    participant, state = _prepared(world, pid, 10, tmp_path / "state")
    committing = participant.states.save(state.at(Stage.COMMITTING))
    assert world.market.commitment_state(pid, 0, me) == CommitState.NONE

    proc = world.popen(cfg, "submit", pid, "--dev-account", 10, "--json")
    wait_until(lambda: world.market.commitment_state(pid, 0, me) == CommitState.COMMITTED, proc)
    world.mine_past(world.market.project(pid).commit_deadline)
    code, out, err = finish(proc)
    assert code == 0, err
    assert json.loads(out)["steps"] == ["commit", "reveal"]
    _assert_one_commit_and_matching_reveal(world, pid, 0, me, committing)


def test_a_commitment_that_is_not_ours_is_never_revealed_over(world: World, tmp_path: Path) -> None:
    """The state directory was lost after a commit: a fresh state (new salt) must not be taken for
    the commitment on chain (its reveal would revert); the participant says so instead."""
    pid = world.project(commit=20, reveal=20)
    world.register(pid, 11)
    lost_dir, fresh_dir = tmp_path / "lost", tmp_path / "fresh"
    participant, state = _prepared(world, pid, 11, lost_dir)
    participant.commit(state)
    fresh, fresh_state = _prepared(world, pid, 11, fresh_dir)
    assert fresh_state.salt != state.salt
    with pytest.raises(SubmissionError, match="already committed another update"):
        fresh.commit(fresh_state)
    assert len(world.market.commits(pid, 0)) == 1


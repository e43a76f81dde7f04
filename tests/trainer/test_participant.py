"""trainer.participant: the one submission state machine, on the embedded chain and an
EmbeddedStore: each step reported in order with its timings, a stored commitment kept over new
bytes, nothing uploaded once the commit deadline has passed, and `resume` finishing a submission."""

from __future__ import annotations

from pathlib import Path

import pytest

from market.chain import CommitState, MarketClient, ProjectParams
from market.chain.accounts import dev_account
from market.chain.deployment import Deployment
from market.models import ModelSpec
from market.protocol.documents import ProjectSpec
from market.storage import EmbeddedStore
from trainer.errors import DeadlinePassed, RoundMismatch
from trainer.participant import Participant, SubmitTimings
from trainer.state import RoundState, Stage

ETHER = 10**18
#: A plaintext project (no recipients): the participant reads the spec to know whether to seal.
_SPEC = ProjectSpec(model=ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10, dataset="digits"))


def _mine(client: MarketClient, n: int) -> None:
    client.w3.provider.ethereum_tester.mine_blocks(max(n, 1))  # type: ignore[attr-defined]


def _setup(embedded: tuple[MarketClient, Deployment], tmp_path: Path, trainer: int) -> tuple[Participant, int]:
    owner, _ = embedded
    store = EmbeddedStore(tmp_path / "store")
    pid, _ = owner.create_project(ProjectParams(
        aggregator=dev_account(1).address, arbiter=dev_account(2).address, num_rounds=1, reward_per_round=ETHER,
        commit_window=6, reveal_window=10, challenge_window=2, spec_cid=store.add(_SPEC.to_bytes()),
    ))
    client = owner.with_account(dev_account(trainer))
    client.register(pid)
    p = Participant(client, store, tmp_path / "state", poll_interval=0.01,
                    on_wait=lambda _what, now, target: _mine(client, target - now))
    return p, pid


def test_submit_reports_each_step_and_times_it(embedded: tuple[MarketClient, Deployment], tmp_path: Path) -> None:
    p, pid = _setup(embedded, tmp_path, 3)
    events: list[tuple[str, Stage]] = []
    checked: list[bytes] = []
    t = SubmitTimings()
    final = p.submit(pid, 0, b"update-bytes", check=checked.append, timings=t,
                     notify=lambda e, s: events.append((e, s.stage)))
    assert final.stage == Stage.REVEALED and checked == [b"update-bytes"]
    assert events == [("uploaded", Stage.PREPARED), ("committed", Stage.COMMITTED), ("revealed", Stage.REVEALED)]
    assert t.steps == ["upload", "commit", "reveal"] and t.resumed_from is None
    assert p.client.commitment_state(pid, 0, p.address) == CommitState.REVEALED
    assert p.store.cat(final.cid) == b"update-bytes"
    # again: nothing left to do, nothing sent
    again = SubmitTimings()
    assert p.submit(pid, 0, None, timings=again) == final and again.steps == [] and again.resumed_from == "revealed"


def test_a_stored_commitment_wins_over_new_bytes(embedded: tuple[MarketClient, Deployment], tmp_path: Path) -> None:
    p, pid = _setup(embedded, tmp_path, 4)
    committed = p.commit(p.prepare(pid, 0, b"first"))
    events: list[str] = []
    t = SubmitTimings()
    final = p.submit(pid, 0, b"second", check=lambda _b: pytest.fail("kept bytes are not re-checked"),
                     notify=lambda e, _s: events.append(e), timings=t)
    assert events == ["kept", "revealed"] and t.resumed_from == "committed" and t.steps == ["reveal"]
    assert (final.cid, final.salt) == (committed.cid, committed.salt)


def test_nothing_is_uploaded_after_the_commit_deadline(embedded: tuple[MarketClient, Deployment], tmp_path: Path) -> None:
    p, pid = _setup(embedded, tmp_path, 5)
    _mine(p.client, p.client.project(pid).commit_deadline - p.client.block_number)
    with pytest.raises(DeadlinePassed, match="commit deadline"):
        p.submit(pid, 0, b"late")
    assert p.states.load(pid, 0, p.address) is None
    with pytest.raises(RoundMismatch, match="nothing to submit"):
        p.submit(pid, 0, None)
    with pytest.raises(RoundMismatch, match="not open"):
        p.submit(pid, 1, b"next round")


def test_resume_finishes_an_interrupted_submission(embedded: tuple[MarketClient, Deployment], tmp_path: Path) -> None:
    p, pid = _setup(embedded, tmp_path, 6)
    prepared: RoundState = p.prepare(pid, 0, b"interrupted")
    p.states.save(prepared.at(Stage.COMMITTING))  # crashed before sending the commit
    done = p.resume(pid)
    assert done is not None and done.stage == Stage.REVEALED and done.salt == prepared.salt
    assert len([c for c in p.client.commits(pid, 0) if c.trainer == p.address]) == 1


def test_an_encrypted_project_gets_only_envelopes(embedded: tuple[MarketClient, Deployment], tmp_path: Path) -> None:
    from market.protocol.documents import Recipient
    from market.protocol.envelope import EnvelopeContext, generate_key, open_update, public_key_hex

    key = generate_key()
    recipients = {"agg": Recipient(role="aggregator", public_key=public_key_hex(key))}
    owner, _ = embedded
    store = EmbeddedStore(tmp_path / "store")
    pid, _ = owner.create_project(ProjectParams(
        aggregator=dev_account(1).address, arbiter=dev_account(2).address, num_rounds=1, reward_per_round=ETHER,
        commit_window=6, reveal_window=10, challenge_window=2,
        spec_cid=store.add(_SPEC.model_copy(update={"recipients": recipients}).to_bytes()),
    ))
    client = owner.with_account(dev_account(7))
    client.register(pid)
    p = Participant(client, store, tmp_path / "state", poll_interval=0.01,
                    on_wait=lambda _what, now, target: _mine(client, target - now))
    prepared = p.prepare(pid, 0, b"plain-update")
    assert p.prepare(pid, 0, b"plain-update") == prepared  # not sealed and uploaded twice
    events: list[str] = []
    final = p.submit(pid, 0, b"plain-update", notify=lambda e, _s: events.append(e))
    assert events == ["uploaded", "committed", "revealed"] and final.cid == prepared.cid  # the envelope of the first call
    blob = store.cat(final.cid)
    assert b"plain-update" not in blob
    ctx = EnvelopeContext(pid, 0, p.address)
    assert open_update(blob, key, ctx, {"agg": public_key_hex(key)}) == b"plain-update"

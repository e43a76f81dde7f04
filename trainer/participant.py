"""Taking part in a project: join, get the round's global model, submit an update with
commit-reveal (crash-safe), and claim rewards.

The update bytes are produced elsewhere (training + codec); this module only moves them: upload to
the content store, commit `hash(projectId, round, trainer, cid, digest, salt)` before the commit
deadline, reveal after it. Every transaction is preceded by a state write, so a restart after a
crash resumes where it stopped: never a second commit, always the same salt at reveal.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from market.chain import CommitState, MarketClient, checksum, commitment_of
from market.protocol.documents import ProjectSpec
from market.protocol.reading import is_settled, load_record, load_spec, round_base
from trainer.errors import DeadlinePassed, NotRegistered, RoundMismatch, SubmissionError, WaitTimeout
from trainer.state import RoundState, Stage, StateStore


class Store(Protocol):
    def add(self, data: bytes) -> str: ...
    def cat(self, cid: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes: ...


@dataclass(frozen=True)
class RoundContext:
    """What a trainer needs to train round `round`."""

    project_id: int
    round: int
    base_model_cid: str
    hyperparams: dict[str, Any]
    spec: ProjectSpec
    commit_deadline: int
    reveal_deadline: int


@dataclass(frozen=True)
class Claimable:
    round: int
    cumulative: int
    claimed: int
    proof: list[bytes]

    @property
    def amount(self) -> int:
        return max(0, self.cumulative - self.claimed)


class Participant:
    """One trainer account acting on one deployment."""

    def __init__(
        self,
        client: MarketClient,
        store: Store,
        state_dir: Path,
        *,
        poll_interval: float = 0.5,
        on_wait: Callable[[str, int, int], None] | None = None,
        address: str | None = None,
    ):
        """`address` lets a client without an account read this trainer's view (status, rewards);
        every method that sends a transaction needs the client's account to be that address."""
        self.client = client
        self.store = store
        self.states = StateStore(state_dir)
        self.poll_interval = poll_interval
        self.on_wait = on_wait
        self.address = checksum(address, "trainer address") if address else client.account_address

    # ------------------------------------------------------------------ joining

    def join(self, project_id: int) -> bool:
        """Register (with the project's stake); False if already registered."""
        registered, _ = self.client.registration(project_id, self.address)
        if registered:
            return False
        self.client.register(project_id)
        return True

    # ------------------------------------------------------------------ the round's inputs

    def spec(self, project_id: int) -> ProjectSpec:
        return load_spec(self.client, self.store, project_id)

    def context(self, project_id: int) -> RoundContext:
        """The open round, its global model and its hyper-parameters."""
        info = self.client.project(project_id)
        if info.ended or info.current_round >= info.num_rounds:
            raise RoundMismatch(f"project {project_id} has no open round (all {info.num_rounds} finalized): nothing to train")
        spec = self.spec(project_id)
        base = round_base(self.client, self.store, project_id, info.current_round, spec)
        return RoundContext(
            project_id, info.current_round, base.model_cid, base.hyperparams, spec, info.commit_deadline, info.reveal_deadline
        )

    # ------------------------------------------------------------------ submitting

    def prepare(self, project_id: int, round_: int, update: bytes) -> RoundState:
        """Upload the update and choose the salt; idempotent for a round already prepared.

        Once a commit may have been sent (stage COMMITTING or later) the stored state wins, whatever
        `update` is: the chain holds that commitment. A state that was only PREPARED (nothing sent)
        is replaced when `update` differs, so a retrained update is not silently dropped.
        """
        existing = self.states.load(project_id, round_, self.address)
        digest = "0x" + hashlib.sha256(update).hexdigest()
        if existing is not None and (existing.stage != Stage.PREPARED or existing.digest == digest):
            return existing
        cid = self.store.add(update)
        state = RoundState(
            project_id=project_id,
            round=round_,
            trainer=self.address,
            cid=cid,
            digest=digest,
            salt="0x" + os.urandom(32).hex(),
            stage=Stage.PREPARED,
        )
        return self.states.save(state)

    def commit(self, state: RoundState) -> RoundState:
        """Commit unless the chain already holds our commitment (after a crash)."""
        pid, r = state.project_id, state.round
        on_chain = self.client.commitment_state(pid, r, self.address)
        if on_chain != CommitState.NONE:
            if state.stage not in (Stage.PREPARED, Stage.COMMITTING):
                return state
            self._check_commitment_is_ours(state)
            return self.states.save(state.at(Stage.COMMITTED))
        info = self.client.project(pid)
        if info.current_round != r:
            raise RoundMismatch(f"round {r} is not open (the open round is {info.current_round}): train on the current model")
        if self.client.block_number >= info.commit_deadline:
            raise DeadlinePassed(f"the commit deadline of round {r} (block {info.commit_deadline}) has passed: wait for the next round")
        registered, _ = self.client.registration(pid, self.address)
        if not registered:
            raise NotRegistered(f"{self.address} is not registered in project {pid}: run `trainer join {pid}` first")
        self.states.save(state.at(Stage.COMMITTING))
        commitment = commitment_of(pid, r, self.address, state.cid, _b(state.digest), _b(state.salt))
        rcpt = self.client.commit(pid, r, commitment)
        return self.states.save(state.at(Stage.COMMITTED, commit_tx=rcpt.tx_hash))

    def _check_commitment_is_ours(self, state: RoundState) -> None:
        """The commitment on chain is this state's (a crash after sending), not another one's."""
        pid, r = state.project_id, state.round
        ours = commitment_of(pid, r, self.address, state.cid, _b(state.digest), _b(state.salt))
        mine = [c for c in self.client.commits(pid, r) if c.trainer.lower() == self.address.lower()]
        if mine and mine[0].commitment != ours:
            raise SubmissionError(
                f"{self.address} already committed another update to round {r} of project {pid}"
                f" (its salt is not in {self.states.directory}): it cannot be revealed from here; wait for the next round"
            )

    def reveal(self, state: RoundState, *, timeout: float = 600.0) -> RoundState:
        """Wait for the commit deadline to pass, then reveal (once)."""
        pid, r = state.project_id, state.round
        on_chain = self.client.commitment_state(pid, r, self.address)
        if on_chain == CommitState.REVEALED:
            return self.states.save(state.at(Stage.REVEALED)) if state.stage != Stage.REVEALED else state
        if on_chain == CommitState.NONE:
            raise SubmissionError(f"no commitment on chain for round {r}: commit first")
        info = self.client.project(pid)
        if info.current_round != r:
            raise DeadlinePassed(f"round {r} was finalized before this update was revealed: it is lost")
        self.wait_for_block(info.commit_deadline + 1, "commit deadline", timeout)
        if self.client.block_number >= info.reveal_deadline:
            raise DeadlinePassed(f"the reveal deadline of round {r} (block {info.reveal_deadline}) has passed: the update is lost")
        self.states.save(state.at(Stage.REVEALING))
        rcpt = self.client.reveal(pid, r, state.cid, _b(state.digest), _b(state.salt))
        return self.states.save(state.at(Stage.REVEALED, reveal_tx=rcpt.tx_hash))

    def submit(self, project_id: int, round_: int, update: bytes, *, timeout: float = 600.0) -> RoundState:
        """prepare + commit + reveal; safe to call again after a crash at any point."""
        state = self.prepare(project_id, round_, update)
        if state.stage in (Stage.PREPARED, Stage.COMMITTING):
            state = self.commit(state)
        if state.stage != Stage.REVEALED:
            state = self.reveal(state, timeout=timeout)
        return state

    def resume(self, project_id: int, *, timeout: float = 600.0) -> RoundState | None:
        """Finish a submission interrupted in the open round, if any."""
        info = self.client.project(project_id)
        state = self.states.load(project_id, info.current_round, self.address)
        if state is None or state.stage == Stage.REVEALED:
            return state
        if state.stage in (Stage.PREPARED, Stage.COMMITTING):
            state = self.commit(state)
        return self.reveal(state, timeout=timeout)

    def wait_for_block(self, block: int, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            now = self.client.block_number
            if now >= block:
                return
            if self.on_wait:
                self.on_wait(what, now, block)
            if time.monotonic() > deadline:
                raise WaitTimeout(
                    f"waited {timeout:.0f} s for block {block} ({what}); the chain is at {now}: is it mining?"
                )
            time.sleep(self.poll_interval)

    # ------------------------------------------------------------------ rewards

    def claimable(self, project_id: int) -> Claimable | None:
        """The newest settled round's cumulative entitlement for this trainer, with its proof."""
        info = self.client.project(project_id)
        now = self.client.block_number
        for f in sorted(self.client.finalized(project_id), key=lambda f: -f.round):
            if not is_settled(self.client, project_id, f.round, info.challenge_window, now):
                continue
            record = load_record(self.store, f.record_cid)
            key = next((k for k in record.cumulative_rewards if k.lower() == self.address.lower()), None)
            cumulative = record.cumulative_rewards.get(key, 0) if key else 0
            proof = [_b(p) for p in record.proofs.get(key, [])] if key else []
            return Claimable(f.round, cumulative, self.client.claimed_by(project_id, self.address), proof)
        return None

    def claim(self, project_id: int) -> int:
        """Claim what is claimable; returns the amount paid (0 if nothing)."""
        c = self.claimable(project_id)
        if c is None or c.amount == 0:
            return 0
        self.client.claim(project_id, c.round, self.address, c.cumulative, c.proof)
        return c.amount


def _b(hexstr: str) -> bytes:
    return bytes.fromhex(hexstr.removeprefix("0x"))

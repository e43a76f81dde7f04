"""Taking part in a project: join, submit an update with commit-reveal (crash-safe), and claim
rewards.

The update bytes are produced elsewhere (`trainer.update`); this module only moves them: upload to
the content store, commit `hash(projectId, round, trainer, cid, digest, salt)` before the commit
deadline, reveal after it. Every transaction is preceded by a state write, so a restart after a
crash resumes where it stopped: never a second commit, always the same salt at reveal.

`Participant.submit` is the one submission state machine (the CLI's `submit` and `run`, the
benchmarks and simulations all use it):

    (nothing) --upload--> PREPARED --commit--> COMMITTING -> COMMITTED --reveal--> REVEALING -> REVEALED

It starts from whatever state is stored for the round, reports each step to `notify(event,
state)` ("kept": a stored commitment wins over the bytes given; "uploaded", "committed",
"revealed") and records its durations in `SubmitTimings`.

Private by default: when the project's spec names recipients, the update is sealed for exactly
them (`market.protocol.envelope.seal`) before it is uploaded, so no plaintext update leaves the
machine; the CID and digest committed are the envelope's. The plaintext's sha256 is kept beside
the state (`sealed/<envelope digest>.plain`) so a resubmission of the same update is recognised.
A project under differential privacy (or a trainer with its own DP policy) gets each trainer's
spent epsilon from chain data (`privacy_spent`), stored after every reveal in `privacy/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from market._text import first_pydantic_error
from market.chain import CommitState, MarketClient, ProjectInfo, checksum, commitment_of
from market.chain.client import TrainerView
from market.errors import StorageError
from market.files import atomic_write
from market.protocol.documents import ProjectSpec
from market.protocol.privacy import DpPolicy, epsilon_spent, rounds_within_budget
from market.protocol.reading import is_settled, load_spec
from trainer.errors import (
    ConfigError,
    DeadlinePassed,
    NotRegistered,
    RoundMismatch,
    StaleReceipt,
    SubmissionError,
    WaitTimeout,
)
from trainer.receipts import Receipts
from trainer.state import RoundState, Stage, StateStore

__all__ = ["Claimable", "Claimed", "Notify", "Participant", "PrivacySpent", "SubmitTimings", "effective_privacy", "own_privacy"]

#: `notify(event, state)` after each step of a submission.
Notify = Callable[[str, RoundState], None]


class Store(Protocol):
    def add(self, data: bytes) -> str: ...
    def cat(self, cid: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes: ...


@dataclass
class SubmitTimings:
    """Seconds spent in each step of a submission (0 for steps a resumed submission skipped)."""

    upload: float = 0.0
    commit: float = 0.0
    wait: float = 0.0
    reveal: float = 0.0
    resumed_from: str | None = None
    steps: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Claimable:
    round: int
    cumulative: int
    claimed: int
    proof: list[bytes]

    @property
    def amount(self) -> int:
        return max(0, self.cumulative - self.claimed)


@dataclass(frozen=True)
class Claimed:
    """What a claim paid (`amount` 0 and `tx` None when there was nothing to claim)."""

    amount: int
    round: int | None
    cumulative: int
    claimed_before: int
    tx: str | None


def own_privacy(table: Mapping[str, Any]) -> DpPolicy | None:
    """A trainer's own DP policy from its `[trainer.dp]` table (None when empty)."""
    if not table:
        return None
    try:
        return DpPolicy.model_validate(dict(table))
    except ValidationError as exc:
        raise ConfigError(f"[trainer] {first_pydantic_error(exc, 'dp')}: see market.protocol.privacy.DpPolicy") from None


def effective_privacy(spec: ProjectSpec, own: DpPolicy | None) -> DpPolicy | None:
    """The DP a trainer applies: the project's policy when its spec sets one, else its own."""
    return spec.privacy if spec.privacy is not None else own


@dataclass(frozen=True)
class PrivacySpent:
    """A trainer's privacy loss in a project: the rounds it revealed an update in (chain data, so
    anyone can recompute it) and the epsilon they cost at the policy's delta."""

    policy: DpPolicy
    source: str  # "project" (the spec's policy) or "trainer" (its own)
    rounds: tuple[int, ...]
    epsilon: float
    rounds_left: int

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source, "rounds": list(self.rounds), "epsilon": self.epsilon, "delta": self.policy.delta,
            "max_epsilon": self.policy.max_epsilon, "rounds_left": self.rounds_left,
            "policy": self.policy.model_dump(mode="json"),
        }


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
        privacy: DpPolicy | None = None,
    ):
        """`address` lets a client without an account read this trainer's view (status, rewards);
        every method that sends a transaction needs the client's account to be that address.
        `privacy`: the trainer's own DP policy (applied where the spec sets none)."""
        self.client = client
        self.store = store
        self.states = StateStore(state_dir)
        self.receipts = Receipts(state_dir)
        self.poll_interval = poll_interval
        self.on_wait = on_wait
        self.address = checksum(address, "trainer address") if address else client.account_address
        self.privacy = privacy
        self._specs: dict[int, ProjectSpec] = {}

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
        """The project's spec (read once: its CID is fixed on chain)."""
        if project_id not in self._specs:
            self._specs[project_id] = load_spec(self.client, self.store, project_id)
        return self._specs[project_id]

    # ------------------------------------------------------------------ privacy

    def seal(self, project_id: int, round_: int, update: bytes) -> bytes:
        """The bytes that leave the machine for `update`: an envelope for exactly the spec's
        recipients, bound to (project, round, this trainer); `update` itself for a plaintext project."""
        spec = self.spec(project_id)
        if not spec.encrypted:
            return update
        from market.protocol.envelope import EnvelopeContext, seal

        return seal(update, spec.recipient_keys(), EnvelopeContext(project_id, round_, self.address))

    def privacy_spent(self, project_id: int) -> PrivacySpent | None:
        """The epsilon this trainer has spent in the project (None when it applies no DP): one
        accountant step per round it revealed an update in, read from the chain."""
        spec = self.spec(project_id)
        policy = effective_privacy(spec, self.privacy)
        if policy is None:
            return None
        last = self.client.project(project_id).current_round
        me = self.address.lower()
        rounds = tuple(
            r for r in range(last + 1) if any(rv.trainer.lower() == me for rv in self.client.reveals(project_id, r))
        )
        return PrivacySpent(
            policy, "project" if spec.privacy is not None else "trainer", rounds, epsilon_spent(policy, len(rounds)),
            max(0, rounds_within_budget(policy) - len(rounds)),
        )

    def _require_privacy_budget(self, project_id: int) -> None:
        spent = self.privacy_spent(project_id)
        if spent is not None and spent.rounds_left == 0:
            raise SubmissionError(
                f"another round would take {self.address}'s epsilon in project {project_id} over {spent.policy.max_epsilon}"
                f" (spent {spent.epsilon:.2f} in {len(spent.rounds)} rounds at delta {spent.policy.delta:g}): nothing was uploaded"
            )

    def _store_privacy(self, project_id: int) -> None:
        spent = self.privacy_spent(project_id)
        if spent is not None:
            path = self.states.directory / "privacy" / f"p{project_id}-{self.address.lower()}.json"
            atomic_write(path, json.dumps(spent.to_json(), indent=2).encode())

    # ------------------------------------------------------------------ submitting

    def _plain_path(self, digest: str) -> Path:
        return self.states.directory / "sealed" / f"{digest}.plain"

    def plain_digest(self, state: RoundState) -> str:
        """The sha256 of the plaintext update behind `state` (its own digest unless it was sealed)."""
        path = self._plain_path(state.digest)
        return path.read_text().strip() if path.is_file() else state.digest

    def prepare(self, project_id: int, round_: int, update: bytes) -> RoundState:
        """Seal (for an encrypted project) and upload the update and choose the salt; idempotent
        for a round already prepared.

        Once a commit may have been sent (stage COMMITTING or later) the stored state wins, whatever
        `update` is: the chain holds that commitment. A state that was only PREPARED (nothing sent)
        is replaced when `update` differs, so a retrained update is not silently dropped.
        """
        existing = self.states.load(project_id, round_, self.address)
        plain = "0x" + hashlib.sha256(update).hexdigest()
        if existing is not None and (existing.stage != Stage.PREPARED or self.plain_digest(existing) == plain):
            return existing
        return self.upload(project_id, round_, self.seal(project_id, round_, update), plain_digest=plain)

    def upload(self, project_id: int, round_: int, blob: bytes, *, plain_digest: str | None = None) -> RoundState:
        """Upload `blob` exactly as given (what the chain will commit to) and choose the salt: a new
        PREPARED state for the round. `plain_digest`: the sha256 of the update `blob` seals."""
        digest = "0x" + hashlib.sha256(blob).hexdigest()
        cid = self.store.add(blob)
        if plain_digest is not None and plain_digest != digest:
            atomic_write(self._plain_path(digest), plain_digest.encode())
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
        view = self.client.trainer_view(pid, r, self.address)
        if view.commit_state != CommitState.NONE:
            if state.stage not in (Stage.PREPARED, Stage.COMMITTING):
                return state
            self._check_commitment_is_ours(state)
            return self.states.save(state.at(Stage.COMMITTED))
        self._require_commit_open(pid, r, view)
        if not view.registered:
            raise NotRegistered(f"{self.address} is not registered in project {pid}: run `trainer join {pid}` first")
        self.states.save(state.at(Stage.COMMITTING))
        commitment = commitment_of(pid, r, self.address, state.cid, _b(state.digest), _b(state.salt))
        rcpt = self.client.commit(pid, r, commitment)
        return self.states.save(state.at(Stage.COMMITTED, commit_tx=rcpt.tx_hash))

    def _require_commit_open(self, project_id: int, round_: int, view: TrainerView | None = None) -> None:
        info = view.info if view is not None else self.client.project(project_id)
        if info.current_round != round_:
            raise RoundMismatch(f"round {round_} is not open (the open round is {info.current_round}): train on the current model")
        if (view.block_number if view is not None else self.client.block_number) >= info.commit_deadline:
            raise DeadlinePassed(
                f"the commit deadline of round {round_} (block {info.commit_deadline}) has passed: {_after(info, round_)}"
            )

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
        view = self.client.trainer_view(pid, r, self.address)
        if view.commit_state == CommitState.REVEALED:
            return self.states.save(state.at(Stage.REVEALED)) if state.stage != Stage.REVEALED else state
        if view.commit_state == CommitState.NONE:
            raise SubmissionError(f"no commitment on chain for round {r}: commit first")
        info, now = view.info, view.block_number
        if info.current_round != r:
            raise DeadlinePassed(f"round {r} was finalized before this update was revealed: it is lost")
        if now <= info.commit_deadline:
            self.wait_for_block(info.commit_deadline + 1, "commit deadline", timeout)
            now = self.client.block_number
        if now >= info.reveal_deadline:
            raise DeadlinePassed(f"the reveal deadline of round {r} (block {info.reveal_deadline}) has passed: the update is lost")
        self.states.save(state.at(Stage.REVEALING))
        rcpt = self.client.reveal(pid, r, state.cid, _b(state.digest), _b(state.salt))
        return self.states.save(state.at(Stage.REVEALED, reveal_tx=rcpt.tx_hash))

    def submit(
        self, project_id: int, round_: int, update: bytes | None, *, timeout: float = 600.0,
        check: Callable[[bytes], None] | None = None, notify: Notify | None = None,
        timings: SubmitTimings | None = None,
    ) -> RoundState:
        """Upload, commit, wait for the commit deadline and reveal `update` in round `round_`, or
        finish the submission stored for that round; safe to call again after a crash at any point.

        `update` None finishes the stored submission. Once a commit may have been sent the stored
        state wins over `update` (the chain holds that commitment; `notify("kept", ...)` says so
        when the bytes differ). New bytes are passed to `check` (which raises to refuse them), and
        refused without upload once the commit deadline has passed.
        """
        t = timings if timings is not None else SubmitTimings()
        say = notify or (lambda _event, _state: None)
        state = self.states.load(project_id, round_, self.address)
        if state is not None:
            t.resumed_from = state.stage.value
            if state.stage != Stage.PREPARED:
                if update is not None and self.plain_digest(state) != "0x" + hashlib.sha256(update).hexdigest():
                    say("kept", state)
                update = None
        if update is not None:
            if check is not None:
                check(update)
            self._require_commit_open(project_id, round_)
            self._require_privacy_budget(project_id)
            start = time.perf_counter()
            state = self.prepare(project_id, round_, update)
            t.upload = time.perf_counter() - start
            t.steps.append("upload")
            say("uploaded", state)
        if state is None:
            raise RoundMismatch(f"nothing to submit for round {round_}: run `trainer train {project_id}` first")
        if state.stage in (Stage.PREPARED, Stage.COMMITTING):
            start = time.perf_counter()
            state = self.commit(state)
            t.commit = time.perf_counter() - start
            t.steps.append("commit")
            say("committed", state)
        if state.stage != Stage.REVEALED:
            info = self.client.project(project_id)
            start = time.perf_counter()
            if info.current_round == round_:
                self.wait_for_block(info.commit_deadline + 1, "commit deadline", timeout)
            t.wait = time.perf_counter() - start
            start = time.perf_counter()
            state = self.reveal(state, timeout=timeout)
            t.reveal = time.perf_counter() - start
            t.steps.append("reveal")
            self._store_privacy(project_id)
            self._keep_settled(project_id)
            say("revealed", state)
        return state

    def resume(self, project_id: int, *, timeout: float = 600.0, notify: Notify | None = None) -> RoundState | None:
        """Finish a submission interrupted in the open round, if any."""
        r = self.client.project(project_id).current_round
        state = self.states.load(project_id, r, self.address)
        if state is None or state.stage == Stage.REVEALED:
            return state
        return self.submit(project_id, r, None, timeout=timeout, notify=notify)

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
        """The newest settled round's cumulative entitlement for this trainer, with its proof: from
        the copy kept in the state directory (checked against the chain's root), else from the
        round's record, which is kept then (`trainer.receipts`): a claim works once IPFS no longer
        serves the record."""
        self.client.project(project_id)  # an unknown project fails here, with its own message
        now = self.client.block_number
        for f in sorted(self.client.finalized(project_id), key=lambda f: -f.round):
            if not is_settled(self.client, project_id, f.round, now):
                continue
            kept = self.receipts.obtain(self.store, self.client, f, self.address)
            return Claimable(f.round, kept.cumulative, self.client.claimed_by(project_id, self.address), kept.proof_bytes)
        return None

    def _keep_settled(self, project_id: int) -> None:
        """Keep the newest settled round's record and proof while the store still serves them (a
        claim much later may find them unpinned); a miss here must not fail a submission."""
        with contextlib.suppress(StorageError, StaleReceipt):
            self.claimable(project_id)

    def claim(self, project_id: int, recipient: str | None = None) -> Claimed:
        """Claim what the newest settled round entitles this trainer to (nothing sent when that is
        0), paid to this trainer or to `recipient`."""
        c = self.claimable(project_id)
        if c is None or c.amount == 0:
            before = c.claimed if c else self.client.claimed_by(project_id, self.address)
            return Claimed(0, c.round if c else None, c.cumulative if c else 0, before, None)
        rcpt = self.client.claim(project_id, c.round, self.address, c.cumulative, c.proof, recipient=recipient)
        return Claimed(c.amount, c.round, c.cumulative, c.claimed, rcpt.tx_hash)


def _after(info: ProjectInfo, round_: int) -> str:
    """What a trainer who missed `round_` can do next."""
    if round_ + 1 >= info.num_rounds:
        return f"it was the project's last round (of {info.num_rounds}): nothing is left to submit to"
    return f"wait for round {round_ + 1}"


def _b(hexstr: str) -> bytes:
    return bytes.fromhex(hexstr.removeprefix("0x"))

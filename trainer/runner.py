"""A trainer's rounds on the real chain, as library calls the CLI commands are thin wrappers over:
train the open round (`train_round`), submit it (`submit_round`), take part in every remaining
round unattended (`run`), and claim once the last round is settled (`claim_after_settling`).

Nothing here prints: progress goes to a `Hooks` object (the CLI's is a rich reporter on stderr;
`Silent` drops it), so tests drive the loop without Typer. The chain- and IPFS-backed sources of
a behaviour's context (`chain_sources`) live here too: they are what `trainer.context` fills a
behaviour's declared needs from when it runs against a real deployment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from market._text import one_line
from market.chain import ProjectInfo, RoundStatus
from market.errors import UpdateRejected, is_transient
from market.protocol.codec import decode_update
from market.protocol.documents import ProjectSpec
from market.protocol.reading import load_spec, round_base
from trainer._session import Session
from trainer.context import ContextSources
from trainer.errors import DeadlinePassed, NotRegistered, RoundMismatch, WaitTimeout, WindowTooShort
from trainer.participant import Participant, SubmitTimings
from trainer.state import RoundState, Stage
from trainer.training import TrainProgress
from trainer.update import (
    TrainedUpdate,
    check_update,
    decode_own_update,
    fetch_global_model,
    load_trainer_data,
    model_template,
    train_update,
    update_path,
    write_update_file,
)

__all__ = [
    "Hooks",
    "RunResult",
    "Silent",
    "WindowGuard",
    "automine_hint",
    "chain_sources",
    "claim_after_settling",
    "do_claim",
    "is_automine",
    "open_round",
    "require_registered",
    "run",
    "seconds_per_block",
    "submit_round",
    "through_outages",
    "train_round",
    "wait_next_round",
    "waiter",
    "window_guard",
]


class Hooks(Protocol):
    """Where the runner reports progress. A hooks object may also have `warn(message)` for what
    must show even when progress is quiet (an outage being retried, a chain without a clock);
    without it, warnings go to `line`."""

    def line(self, message: str) -> None:
        """One progress line (the CLI prints it on stderr unless --json)."""

    def wait(self, what: str, now: int, target: int) -> None:
        """Called on every poll while waiting for block `target` (`what`: "commit deadline", ...)."""

    def training(self) -> contextlib.AbstractContextManager[Callable[[TrainProgress], None]]:
        """A context around local training that yields the per-step progress callback."""


class Silent:
    """Hooks that report nothing."""

    def line(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def wait(self, what: str, now: int, target: int) -> None:
        pass

    @contextlib.contextmanager
    def training(self) -> Iterator[Callable[[TrainProgress], None]]:
        yield lambda _progress: None


# ---------------------------------------------------------------------- checks


def open_round(session: Session, project_id: int) -> ProjectInfo:
    """The project (UnknownProject if there is none) with an open round, else RoundMismatch."""
    info = session.project(project_id)
    if info.ended or info.current_round >= info.num_rounds:
        raise RoundMismatch(
            f"project {project_id} has no open round ({'ended' if info.ended else f'all {info.num_rounds} rounds finalized'}): nothing to do"
        )
    return info


def require_registered(session: Session, project_id: int) -> None:
    registered, _ = session.client.registration(project_id, session.address)
    if not registered:
        raise NotRegistered(f"{session.address} is not registered in project {project_id}: run `trainer join {project_id}` first")


# ---------------------------------------------------------------------- training


def chain_sources(session: Session, spec: ProjectSpec, project_id: int, round_: int) -> ContextSources:
    """A behaviour's needs, read from the deployment and the store (each only when asked for).

    A lone trainer sees no colluding group, so `colluders` stays unavailable (ALIE and IPM fall
    back on the trainer's own honest delta).
    """
    s = session.settings

    def previous_global() -> dict[str, torch.Tensor] | None:
        if round_ == 0:
            return None
        return fetch_global_model(
            session.client, session.store, spec, project_id, round_ - 1, allow_model_code=s.allow_model_code,
            model_keys=session.model_keys(spec, project_id, round_ - 2),
        ).state

    def previous_delta() -> dict[str, torch.Tensor] | None:
        return decode_own_update(update_path(s.state, project_id, round_ - 1, session.address)) if round_ else None

    def revealed_updates() -> Sequence[dict[str, torch.Tensor]]:
        # another trainer's revealed update of this round; before the commit deadline there is
        # none (that is what commit-reveal is for)
        out = []
        for rev in session.client.reveals(project_id, round_):
            if rev.trainer.lower() == session.address.lower():
                continue
            try:
                out.append(decode_update(session.store.cat(rev.cid, max_bytes=spec.validation.max_update_bytes))[1])
            except UpdateRejected:
                continue
        return out

    return ContextSources(previous_global=previous_global, previous_delta=previous_delta, revealed_updates=revealed_updates)


def train_round(
    session: Session, project_id: int, spec: ProjectSpec, info: ProjectInfo, encoding: str, hooks: Hooks,
) -> tuple[TrainedUpdate, Path]:
    """Fetch, check, train, encode, self-validate and write the open round's update."""
    s = session.settings
    r = info.current_round
    template = model_template(spec, allow_model_code=s.allow_model_code)
    dataset = load_trainer_data(s, spec)  # data problems surface before any download
    model = fetch_global_model(session.client, session.store, spec, project_id, r, allow_model_code=s.allow_model_code,
                               model_keys=session.model_keys(spec, project_id, r - 1))
    guard = window_guard(session, info)  # a closed window, or one too short to train in, stops here
    hooks.line(f"round {r}: global model {model.cid} checked; training on {len(dataset)} samples ({dataset.name})")
    with hooks.training() as on_step:

        def progress(p: TrainProgress) -> None:
            guard(p)  # stops training as soon as its measured pace cannot make the commit window
            on_step(p)

        update = train_update(
            s, spec, model, dataset, project_id=project_id, trainer=session.address, encoding=encoding,
            progress=progress, sources=chain_sources(session, spec, project_id, r),
        )
    if update.ignored_hyperparams:
        hooks.line(f"ignored hyper-parameters this trainer does not know: {', '.join(update.ignored_hyperparams)}")
    check_update(update.data, spec, template, project_id=project_id, round_=r, base_model_cid=model.cid, trainer=session.address)
    return update, write_update_file(s.state, update)


# ---------------------------------------------------------------------- submitting


def submit_round(
    session: Session, participant: Participant, project_id: int, spec: ProjectSpec | None, data: bytes | None,
    hooks: Hooks, timings: SubmitTimings | None = None,
) -> RoundState:
    """`Participant.submit` for the open round, with new update bytes self-checked against the
    round's base model and the project's spec (read from the chain when `spec` is None) before upload."""
    info = open_round(session, project_id)
    r = info.current_round

    def check(update: bytes) -> None:
        sp = spec or load_spec(session.client, session.store, project_id)
        base = round_base(session.client, session.store, project_id, r, sp)
        template = model_template(sp, allow_model_code=session.settings.allow_model_code)
        check_update(update, sp, template, project_id=project_id, round_=r, base_model_cid=base.model_cid, trainer=session.address)

    def notify(event: str, st: RoundState) -> None:
        if event == "kept":
            hooks.line(f"round {r} already has a commitment to update {st.cid}: finishing that one (a second commit is never sent)")
        elif event == "uploaded":
            hooks.line(f"round {r}: update uploaded as {st.cid}")
        elif event == "committed":
            tx = f" (tx {st.commit_tx})" if st.commit_tx else ""
            hooks.line(f"round {r}: committed{tx}; reveals open after block {info.commit_deadline}")
        elif event == "revealed":
            hooks.line(f"round {r}: revealed{f' (tx {st.reveal_tx})' if st.reveal_tx else ''}")

    return through_outages(
        hooks, session.settings.reconnect_timeout, f"round {r}: submitting",
        lambda: participant.submit(
            project_id, r, data, timeout=session.settings.wait_timeout, check=check, notify=notify, timings=timings
        ),
    )


# ---------------------------------------------------------------------- the unattended loop


@dataclass
class RunResult:
    """What `run` did: one entry per round it saw, and the claim (if asked for)."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    claim: dict[str, Any] | None = None


def run(
    session: Session, project_id: int, *, encoding: str = "f32", join: bool = False, claim: bool = False,
    max_rounds: int | None = None, hooks: Hooks | None = None,
) -> RunResult:
    """Take part in every remaining round: finish an interrupted submission first, train and
    submit each open round (skipping one whose commit deadline has passed), wait for it to be
    finalized; stop when the project has no open round or after `max_rounds` submissions; then,
    with `claim`, wait for the last round's challenge window and claim."""
    hooks = hooks or Silent()
    result = RunResult()
    session.project(project_id)
    registered, _ = session.client.registration(project_id, session.address)
    if not registered:
        if not join:
            raise NotRegistered(
                f"{session.address} is not registered in project {project_id}: run `trainer join {project_id}` or pass --join"
            )
        session.participant().join(project_id)
        hooks.line(f"joined project {project_id}")
    participant = session.participant(on_wait=waiter(session, hooks))
    spec = load_spec(session.client, session.store, project_id)
    budget = session.settings.reconnect_timeout
    submitted = 0
    while True:
        info = through_outages(hooks, budget, "reading the project", lambda: session.client.project(project_id))
        if info.ended or info.current_round >= info.num_rounds:
            break
        r = info.current_round
        rs = participant.states.load(project_id, r, session.address)
        entry: dict[str, Any] = {"round": r}
        try:
            if rs is not None and rs.stage != Stage.PREPARED:
                if rs.stage != Stage.REVEALED:
                    hooks.line(f"round {r}: resuming the submission interrupted at stage {rs.stage.value}")
                    rs = submit_round(session, participant, project_id, spec, None, hooks)
                    submitted += 1
                entry |= {"stage": rs.stage.value, "cid": rs.cid, "resumed": True}
            elif session.client.block_number >= info.commit_deadline:
                hooks.line(f"round {r}: its commit deadline (block {info.commit_deadline}) has passed; skipping it")
                entry |= {"stage": "skipped", "reason": "commit deadline passed"}
            else:
                update, _path = through_outages(
                    hooks, budget, f"round {r}: training",
                    functools.partial(train_round, session, project_id, spec, info, encoding, hooks),
                )
                rs = submit_round(session, participant, project_id, spec, update.data, hooks)
                submitted += 1
                entry |= {"stage": rs.stage.value, "cid": rs.cid, "samples": update.num_samples,
                          "loss": update.loss, "behaviour": update.behaviour}
        except WindowTooShort as exc:
            hooks.line(str(exc))
            entry |= {"stage": "skipped", "reason": str(exc)}
        except (DeadlinePassed, RoundMismatch) as exc:
            hooks.line(f"round {r}: {exc}")
            entry |= {"stage": "lost", "reason": str(exc)}
        result.rounds.append(entry)
        if max_rounds is not None and submitted >= max_rounds:
            break
        through_outages(hooks, budget, f"round {r}: waiting for its finalization",
                        functools.partial(wait_next_round, session, project_id, r, hooks))
    if claim:
        result.claim = through_outages(hooks, budget, "claiming",
                                       lambda: claim_after_settling(session, participant, project_id, hooks))
    return result


def wait_next_round(session: Session, project_id: int, round_: int, hooks: Hooks) -> None:
    """Poll until round `round_` is finalized (or the project ends)."""
    s = session.settings
    deadline = time.monotonic() + s.wait_timeout
    said = False
    while True:
        info = session.client.project(project_id)
        if info.ended or info.current_round != round_:
            return
        if not said:
            hooks.line(f"round {round_}: waiting for the aggregator to finalize it (reveals close at block {info.reveal_deadline})")
            said = True
        if time.monotonic() > deadline:
            raise WaitTimeout(
                f"round {round_} of project {project_id} was not finalized within {s.wait_timeout:.0f} s: is the aggregator running?"
            )
        time.sleep(s.poll_interval)


# ---------------------------------------------------------------------- claiming


def claim_after_settling(session: Session, participant: Participant, project_id: int, hooks: Hooks) -> dict[str, Any]:
    """Wait for the newest finalized round's challenge window to close, then claim."""
    info = session.client.project(project_id)
    finals = session.client.finalized(project_id)
    if finals:
        last = max(finals, key=lambda f: f.round)
        r = session.client.round(project_id, last.round)
        if r.status == RoundStatus.FINALIZED:
            participant.wait_for_block(r.finalized_at + info.challenge_window + 1, "challenge window", session.settings.wait_timeout)
    return do_claim(participant, project_id, hooks)


def do_claim(participant: Participant, project_id: int, hooks: Hooks) -> dict[str, Any]:
    """`Participant.claim`, as the JSON the CLI prints."""
    claimed = participant.claim(project_id)
    if claimed.amount == 0:
        hooks.line("nothing to claim")
    return dataclasses.asdict(claimed)


# ---------------------------------------------------------------------- outages, clocks, deadlines

T = TypeVar("T")


def through_outages(hooks: Hooks, budget: float, what: str, fn: Callable[[], T], *,
                    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> T:
    """`fn()`, called again while it fails because the node or the IPFS API does not answer
    (`market.errors.is_transient`), for up to `budget` seconds of one outage; each attempt and the
    recovery are reported through `hooks.line` (the CLI prints them on stderr).

    Every step it wraps is resumable by construction: it re-reads the chain, and a submission
    restarts from the state written before each transaction, so a retry never commits twice and
    always reveals with the stored salt.
    """
    since: float | None = None
    said = -1e9
    attempt = 0
    while True:
        try:
            out = fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            now = clock()
            since = now if since is None else since
            if now - since > budget:
                _warn(hooks, f"gave up reconnecting after {now - since:.0f} s ({what}): {one_line(exc, 200)}")
                raise
            if now - said >= 15:
                said = now
                _warn(hooks, f"reconnecting ({what}): {one_line(exc, 200)}; retrying for up to {budget:.0f} s")
            sleep(min(5.0, 0.5 * 2**attempt))
            attempt += 1
            continue
        if since is not None:
            _warn(hooks, f"reconnected after {clock() - since:.0f} s; {what} goes on")
        return out


def _warn(hooks: Hooks, message: str) -> None:
    warn = getattr(hooks, "warn", None)
    (warn if callable(warn) else hooks.line)(message)


def is_automine(w3: Any) -> bool:
    """Whether the node mines a block only when a transaction arrives (anvil's automine, i.e.
    `market stack up --block-time 0`): then no deadline in blocks passes on its own."""
    from web3.providers.eth_tester import EthereumTesterProvider

    if isinstance(w3.provider, EthereumTesterProvider):
        return True  # the in-process chain mines one block per transaction, like automine
    try:
        reply = w3.provider.make_request("anvil_getAutomine", [])
    except Exception:  # noqa: BLE001 - not anvil (or it does not say): a real chain has a clock
        return False
    return isinstance(reply, dict) and reply.get("result") is True


def seconds_per_block(w3: Any, sample: int = 10) -> float | None:
    """The chain's block time, measured over its last `sample` blocks; None when it has no clock."""
    if is_automine(w3):
        return None
    latest = w3.eth.get_block("latest")
    k = min(sample, int(latest["number"]))
    if k < 1:
        return None
    older = w3.eth.get_block(int(latest["number"]) - k)
    step = (int(latest["timestamp"]) - int(older["timestamp"])) / k
    return step if step > 0 else None


def automine_hint(what: str, now: int, target: int) -> str:
    return (
        f"the chain mines a block only when a transaction arrives (automine), so block {target} ({what}; now {now})"
        " comes only if someone transacts: restart the stack with a clock (`market stack down`, then"
        " `market stack up --block-time 1`); waiting on"
    )


def waiter(session: Session, hooks: Hooks) -> Callable[[str, int, int], None]:
    """A participant's `on_wait`: `hooks.wait` on every poll, and at the first poll, when the chain
    has no clock, what to do about it (instead of a silent wait until the timeout)."""
    checked = False

    def on_wait(what: str, now: int, target: int) -> None:
        nonlocal checked
        if not checked:
            checked = True
            if is_automine(session.client.w3):
                _warn(hooks, automine_hint(what, now, target))
        hooks.wait(what, now, target)

    return on_wait


@dataclass
class WindowGuard:
    """Stops local training as soon as it cannot end inside the commit window.

    `seconds_left` is the blocks left times the chain's measured block time, as of `started`
    (None: the chain has no clock, so no guard). The pace is measured from the first batch on
    (model set-up excluded) and checked once `min_steps` more are done: when the batches still to
    run plus `after` (encode, upload, commit) need more than the time left, it raises."""

    round: int
    seconds_left: float | None
    after: float
    min_steps: int = 3
    started: float = field(default_factory=time.perf_counter)
    first: tuple[int, float] | None = None

    def __call__(self, p: TrainProgress) -> None:
        if self.seconds_left is None:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = (p.step, now)
            return
        step0, t0 = self.first
        done = p.step - step0
        if done < self.min_steps:
            return
        remaining = (now - t0) / done * (p.total_steps - p.step)
        left = self.seconds_left - (now - self.started)
        if remaining + self.after > left:
            raise WindowTooShort(
                f"round {self.round}: training needs ~{remaining:.0f} s more (measured over {done} batches) plus"
                f" ~{self.after:.0f} s to upload and commit, but its commit window closes in ~{max(0.0, left):.0f} s:"
                " skipping this round (fewer epochs or less data train faster)"
            )


def window_guard(session: Session, info: ProjectInfo) -> WindowGuard:
    """The guard for the open round, or WindowTooShort / DeadlinePassed when it is already too late."""
    r = info.current_round
    now = session.client.block_number
    if now >= info.commit_deadline:
        raise DeadlinePassed(f"the commit window of round {r} closed at block {info.commit_deadline}: {_next(info)}")
    step = seconds_per_block(session.client.w3)
    if step is None:
        return WindowGuard(r, None, 0.0)
    after = 3 * step + 2.0  # encode + upload, then the commit must be mined before the deadline block
    left = (info.commit_deadline - now - 1) * step
    if left <= after:
        raise WindowTooShort(
            f"round {r}: its commit window closes in ~{max(0.0, left):.0f} s (block {info.commit_deadline}),"
            f" too soon to train, upload and commit: skipping it; {_next(info)}"
        )
    return WindowGuard(r, left, after)


def _next(info: ProjectInfo) -> str:
    r = info.current_round
    if r + 1 >= info.num_rounds:
        return f"it was the project's last round ({info.num_rounds} rounds): nothing left to train for"
    return f"wait for round {r + 1} (`trainer run` does)"

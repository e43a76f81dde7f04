"""`trainer`: join a project, train on private data, submit with commit-reveal, collect rewards.

Every command reads `trainer.toml` (or --config, or $TRAINER_CONFIG; see `trainer.config`) with
flags on top, prints one line on error with a meaningful exit code, and takes --json for scripts
(JSON on stdout; progress and waiting lines go to stderr and are left out under --json).

Exit codes: 2 configuration or bad flag value, 4 stack, 5 chain unreachable or transaction failed,
6 contract revert, 7 deployment file, 8 storage (IPFS unreachable, content missing), 9 update
refused before upload, 10 model spec, 11 data, 12 submission (not registered, round mismatch),
13 deadline passed, 14 unknown project, 15 timed out waiting, 70 internal error, 130 interrupted.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from market.chain import ETH, RoundStatus
from market.chain.accounts import PASSWORD_ENV, Keystore
from market.cli.kit import (
    DeploymentOpt,
    DevAccountOpt,
    JsonOpt,
    RpcOpt,
    console,
    emit_json,
    err_console,
    handle_errors,
)
from market.errors import UpdateRejected
from market.protocol.codec import decode_update
from market.protocol.documents import ProjectSpec
from market.protocol.reading import is_settled, load_record, load_spec, round_base
from trainer._session import Session, open_session
from trainer.config import TrainerSettings, load_settings
from trainer.errors import ConfigError, DeadlinePassed, NotRegistered, RoundMismatch, WaitTimeout
from trainer.participant import Participant
from trainer.pipeline import (
    SubmitTimings,
    TrainedUpdate,
    check_update,
    decode_own_update,
    fetch_global_model,
    load_trainer_data,
    model_template,
    read_update_file,
    submit_update,
    train_update,
    update_path,
    write_update_file,
)
from trainer.state import RoundState, Stage
from trainer.training import TrainProgress

app = typer.Typer(
    name="trainer",
    help="Take part in learning projects: join, train on your own data, submit with commit-reveal, claim rewards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
account_app = typer.Typer(help="Encrypted keystore accounts (passwords from a prompt or $MARKET_PASSWORD).", no_args_is_help=True)
app.add_typer(account_app, name="account")

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config with a [trainer] table (default ./trainer.toml or $TRAINER_CONFIG).")
IpfsOpt = typer.Option(None, "--ipfs", help="IPFS RPC API (multiaddr or http://127.0.0.1:5001) or embedded:DIR.")
StateOpt = typer.Option(None, "--state", help="Directory for per-round submission state and update files.")
KeystoreOpt = typer.Option(None, "--keystore", help="Keystore directory (default .market/keystore).")
AccountOpt = typer.Option(None, "--account", "-a", help="Keystore account name (password from $MARKET_PASSWORD or a prompt).")
AddressOpt = typer.Option(None, "--address", help="Show this address's view (read-only; no password needed).")
TimeoutOpt = typer.Option(None, "--timeout", help="Seconds to wait for a deadline or the next round (default 3600).")
UpdateOpt = typer.Option(None, "--update", help="Update file (default: the open round's file `trainer train` wrote).")
ProjectArg = typer.Argument(..., metavar="PROJECT", help="Project id.")

# train options (shared by `train` and `run`)
DataOpt = typer.Option(None, "--data", help="mnist5k | digits | path.npz | path.csv | image folder (default: the spec's built-in dataset).")
ShardOpt = typer.Option(None, "--shard", help="Simulations: use part i of n of the data, e.g. 0/4.")
PartitionOpt = typer.Option(None, "--partition", help="How --shard deals the data: iid, dirichlet:0.5, pathological:2, quantity_skew:1.")
PartitionSeedOpt = typer.Option(None, "--partition-seed", help="Seed of the partition and label noise (same for all simulated trainers).")
NoiseOpt = typer.Option(None, "--label-noise", help="Simulations: fraction of labels flipped to another class.")
BehaviourOpt = typer.Option(None, "--behaviour", help="Scripted behaviour: honest (default), label_flip, sign_flip:k=1, scaling:factor=10, ...")
EncodingOpt = typer.Option("f32", "--encoding", help="Update encoding: f32 or q8 (8-bit, ~4x smaller).")
EpochsOpt = typer.Option(None, "--epochs", help="Default local epochs (the round record's hyper-parameters win).")
BatchOpt = typer.Option(None, "--batch-size", help="Default batch size.")
LrOpt = typer.Option(None, "--lr", help="Default learning rate.")
OptimizerOpt = typer.Option(None, "--optimizer", help="Default optimizer: sgd or adam.")
SeedOpt = typer.Option(None, "--seed", help="Training seed (default: derived from trainer, project and round).")
ThreadsOpt = typer.Option(None, "--threads", help="torch intra-op threads for training.")
ModelCodeOpt = typer.Option(None, "--allow-model-code/--no-model-code", help="Allow importing a spec's package.module:factory model code.")


# ---------------------------------------------------------------------- helpers


def _settings(config: Path | None, train: dict[str, Any] | None = None, **flags: Any) -> TrainerSettings:
    train = {k: v for k, v in (train or {}).items() if v is not None}
    return load_settings(config).merged(train=train or None, **flags).validate()


def _train_flags(epochs: int | None, batch_size: int | None, lr: float | None, optimizer: str | None, seed: int | None) -> dict[str, Any]:
    return {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer, "seed": seed}


class Reporter:
    """Progress and waiting lines on stderr (none under --json)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = err_console.is_terminal
        self._status: Any = None
        self._last: tuple[str, float] = ("", 0.0)

    def line(self, message: str) -> None:
        self._stop()
        if not self.quiet:
            err_console.print(message, highlight=False, soft_wrap=True)

    def wait(self, what: str, now: int, target: int) -> None:
        if self.quiet:
            return
        message = f"waiting for the {what}: block {now}, need {target} ({target - now} to go)"
        if self.tty:
            if self._status is None:
                self._status = err_console.status(message)
                self._status.start()
            else:
                self._status.update(message)
            return
        last_what, last_time = self._last
        if what != last_what or time.monotonic() - last_time > 15:
            self._last = (what, time.monotonic())
            err_console.print(message, highlight=False, soft_wrap=True)

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def close(self) -> None:
        self._stop()


def _require_registered(session: Session, project_id: int) -> None:
    registered, _ = session.client.registration(project_id, session.address)
    if not registered:
        raise NotRegistered(f"{session.address} is not registered in project {project_id}: run `trainer join {project_id}` first")


def _open_round(session: Session, project_id: int) -> Any:
    info = session.project(project_id)
    if info.ended or info.current_round >= info.num_rounds:
        raise RoundMismatch(
            f"project {project_id} has no open round ({'ended' if info.ended else f'all {info.num_rounds} rounds finalized'}): nothing to do"
        )
    return info


def _train(session: Session, project_id: int, spec: ProjectSpec, info: Any, encoding: str, reporter: Reporter, quiet: bool) -> tuple[TrainedUpdate, Path]:
    """Fetch, check, train, encode, self-validate and write this round's update."""
    s = session.settings
    r = info.current_round
    template = model_template(spec, allow_model_code=s.allow_model_code)
    dataset = load_trainer_data(s, spec)  # data problems surface before any download
    model = fetch_global_model(session.client, session.store, spec, project_id, r, allow_model_code=s.allow_model_code)
    reporter.line(f"round {r}: global model {model.cid} checked; training on {len(dataset)} samples ({dataset.name})")

    def previous_global() -> Any:
        if r == 0:
            return None
        return fetch_global_model(session.client, session.store, spec, project_id, r - 1, allow_model_code=s.allow_model_code).state

    def previous_delta() -> Any:
        return decode_own_update(update_path(s.state, project_id, r - 1, session.address)) if r else None

    def copy_source() -> Any:
        # a copycat takes another trainer's revealed update of this round; before the commit
        # deadline there is none (that is what commit-reveal is for)
        for rev in session.client.reveals(project_id, r):
            if rev.trainer.lower() != session.address.lower():
                try:
                    return decode_update(session.store.cat(rev.cid, max_bytes=spec.validation.max_update_bytes))[1]
                except UpdateRejected:
                    continue
        return None

    with Progress(
        SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=err_console, disable=quiet, transient=False,
    ) as progress:
        task = progress.add_task("training", total=None, loss="")

        def on_step(p: TrainProgress) -> None:
            loss = f"epoch {p.epoch}/{p.epochs} loss {p.epoch_loss:.4f}" if p.epoch_loss is not None else f"epoch {p.epoch}/{p.epochs}"
            progress.update(task, total=p.total_steps, completed=p.step, loss=loss)

        update = train_update(
            s, spec, model, dataset, project_id=project_id, trainer=session.address, encoding=encoding,
            progress=on_step, previous_global=previous_global, previous_delta=previous_delta, copy_source=copy_source,
        )
    if update.ignored_hyperparams:
        reporter.line(f"ignored hyper-parameters this trainer does not know: {', '.join(update.ignored_hyperparams)}")
    check_update(update.data, spec, template, project_id=project_id, round_=r, base_model_cid=model.cid, trainer=session.address)
    path = write_update_file(s.state, update)
    return update, path


def _submit(
    session: Session, participant: Participant, project_id: int, spec: ProjectSpec | None, data: bytes | None,
    reporter: Reporter, timings: SubmitTimings | None = None,
) -> RoundState:
    """Upload, commit, wait, reveal the open round's update (or finish the stored submission)."""
    info = _open_round(session, project_id)
    r = info.current_round
    state = participant.states.load(project_id, r, session.address)
    if state is not None and state.stage != Stage.PREPARED:
        if data is not None and state.digest != "0x" + hashlib.sha256(data).hexdigest():
            reporter.line(
                f"round {r} already has a commitment to update {state.cid}: finishing that one (a second commit is never sent)"
            )
        data = None
    elif data is not None:
        assert spec is not None
        base = round_base(session.client, session.store, project_id, r, spec)
        template = model_template(spec, allow_model_code=session.settings.allow_model_code)
        check_update(data, spec, template, project_id=project_id, round_=r, base_model_cid=base.model_cid, trainer=session.address)
        if session.client.block_number >= info.commit_deadline:
            raise DeadlinePassed(
                f"the commit deadline of round {r} (block {info.commit_deadline}) has passed: wait for round {r + 1}"
            )
    if state is None and data is None:
        raise RoundMismatch(f"nothing to submit for round {r}: run `trainer train {project_id}` first")

    def notify(what: str, st: RoundState) -> None:
        if what == "uploaded":
            reporter.line(f"round {r}: update uploaded as {st.cid}")
        elif what == "committed":
            reporter.line(f"round {r}: committed{' (tx ' + st.commit_tx + ')' if st.commit_tx else ''}; reveals open after block {info.commit_deadline}")
        elif what == "revealed":
            reporter.line(f"round {r}: revealed{' (tx ' + st.reveal_tx + ')' if st.reveal_tx else ''}")

    return submit_update(participant, project_id, r, data, timeout=session.settings.wait_timeout, notify=notify, timings=timings)


def _state_json(state: RoundState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    out: dict[str, Any] = {
        "round": state.round, "stage": state.stage.value, "cid": state.cid, "digest": state.digest,
        "commit_tx": state.commit_tx, "reveal_tx": state.reveal_tx,
    }
    if state.stage == Stage.REVEALED:
        out["salt"] = state.salt  # public once revealed; secret before
    return out


# ---------------------------------------------------------------------- accounts


def _new_password() -> str:
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise ConfigError(f"no password: set ${PASSWORD_ENV} or run in a terminal to be prompted")
    return str(typer.prompt("Password for the new account", hide_input=True, confirmation_prompt=True))


@account_app.command("new")
@handle_errors
def account_new(
    name: str = typer.Argument(..., help="A name for the account (letters, digits, . _ -)."),
    keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a fresh key, encrypted in the keystore."""
    s = _settings(config, keystore=keystore)
    entry = Keystore(s.keystore).new(name, _new_password())
    if as_json:
        emit_json({"name": entry.name, "address": entry.address, "path": entry.path})
    else:
        console.print(f"account [bold]{entry.name}[/] {entry.address} written to {entry.path}", highlight=False, soft_wrap=True)


@account_app.command("import")
@handle_errors
def account_import(
    name: str = typer.Argument(..., help="A name for the account."),
    keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Import a private key, read from a hidden prompt or from stdin (never from a flag)."""
    s = _settings(config, keystore=keystore)
    if sys.stdin.isatty():
        key = str(typer.prompt("Private key (hex)", hide_input=True))
    else:
        key = sys.stdin.readline().strip()
    if not key:
        raise ConfigError("no private key given: type it at the prompt or pipe it on stdin")
    entry = Keystore(s.keystore).import_key(name, key, _new_password())
    if as_json:
        emit_json({"name": entry.name, "address": entry.address, "path": entry.path})
    else:
        console.print(f"account [bold]{entry.name}[/] {entry.address} imported to {entry.path}", highlight=False, soft_wrap=True)


@account_app.command("list")
@handle_errors
def account_list(keystore: Path = KeystoreOpt, config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """The accounts in the keystore (names and addresses; no password needed)."""
    s = _settings(config, keystore=keystore)
    entries = Keystore(s.keystore).list()
    if as_json:
        emit_json([{"name": e.name, "address": e.address, "path": e.path} for e in entries])
        return
    if not entries:
        console.print(f"no accounts in {s.keystore}: create one with `trainer account new NAME`")
        return
    t = Table("name", "address", "file")
    for e in entries:
        t.add_row(e.name, e.address, str(e.path))
    console.print(t)


# ---------------------------------------------------------------------- join / train / submit / run


@app.command("join")
@handle_errors
def join_cmd(
    project_id: int = ProjectArg,
    account: str = AccountOpt, dev_account: int = DevAccountOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """Register as a trainer of a project, paying the stake it asks for."""
    s = _settings(config, rpc=rpc, deployment=deployment, ipfs=ipfs, state=state, keystore=keystore)
    session = open_session(s, account=account, dev=dev_account, sign=True)
    info = session.project(project_id)
    if info.ended:
        raise RoundMismatch(f"project {project_id} has ended: it takes no new trainers")
    joined = session.participant().join(project_id)
    out = {"project_id": project_id, "trainer": session.address, "joined": joined, "stake": info.stake,
           "token": info.token, "already_registered": not joined}
    if as_json:
        emit_json(out)
    elif joined:
        unit = "wei" if info.token == ETH else f"units of token {info.token}"
        console.print(f"{session.address} joined project {project_id}, staking {info.stake} {unit}", highlight=False, soft_wrap=True)
    else:
        console.print(f"{session.address} is already registered in project {project_id}", highlight=False, soft_wrap=True)


@app.command("train")
@handle_errors
def train_cmd(
    project_id: int = ProjectArg,
    data: str = DataOpt, shard: str = ShardOpt, partition: str = PartitionOpt, partition_seed: int = PartitionSeedOpt,
    label_noise: float = NoiseOpt, behaviour: str = BehaviourOpt, encoding: str = EncodingOpt,
    epochs: int = EpochsOpt, batch_size: int = BatchOpt, lr: float = LrOpt, optimizer: str = OptimizerOpt,
    seed: int = SeedOpt, threads: int = ThreadsOpt, allow_model_code: bool = ModelCodeOpt,
    account: str = AccountOpt, dev_account: int = DevAccountOpt, address: str = AddressOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """Train on your data from the open round's global model; write the encoded update to the state dir."""
    if encoding not in ("f32", "q8"):
        raise ConfigError(f"--encoding must be f32 or q8, got {encoding!r}")
    s = _settings(
        config, _train_flags(epochs, batch_size, lr, optimizer, seed), rpc=rpc, deployment=deployment, ipfs=ipfs,
        state=state, keystore=keystore, data=data, shard=shard, partition=partition, partition_seed=partition_seed,
        label_noise=label_noise, behaviour=behaviour, threads=threads, allow_model_code=allow_model_code,
    )
    reporter = Reporter(as_json)
    session = open_session(s, account=account, dev=dev_account, address=address)
    try:
        info = _open_round(session, project_id)
        spec = load_spec(session.client, session.store, project_id)
        update, path = _train(session, project_id, spec, info, encoding, reporter, as_json)
    finally:
        reporter.close()
        session.close()
    out = update.summary() | {"path": path}
    if as_json:
        emit_json(out)
        return
    loss = f", loss {update.loss:.4f}" if update.loss is not None else ""
    console.print(
        f"round {update.round} of project {project_id}: {update.behaviour} update from {update.num_samples} samples"
        f" ({update.steps} steps{loss}, norm {update.norm:.4g}); wrote {path} ({len(update.data)} bytes)",
        highlight=False, soft_wrap=True,
    )


@app.command("submit")
@handle_errors
def submit_cmd(
    project_id: int = ProjectArg,
    update: Path = UpdateOpt,
    timeout: float = TimeoutOpt,
    account: str = AccountOpt, dev_account: int = DevAccountOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """Upload the update, commit to it, wait for the commit deadline, reveal it.

    Safe to run again after a crash at any point: it finishes the stored submission, with the
    same salt, and never commits twice.
    """
    s = _settings(config, rpc=rpc, deployment=deployment, ipfs=ipfs, state=state, keystore=keystore, wait_timeout=timeout)
    reporter = Reporter(as_json)
    session = open_session(s, account=account, dev=dev_account, sign=True)
    try:
        info = _open_round(session, project_id)
        _require_registered(session, project_id)
        participant = session.participant(on_wait=reporter.wait)
        r = info.current_round
        existing = participant.states.load(project_id, r, session.address)
        path = update if update is not None else update_path(s.state, project_id, r, session.address)
        data: bytes | None = None
        if update is not None or existing is None or (existing.stage == Stage.PREPARED and path.is_file()):
            data = read_update_file(path)
        spec = load_spec(session.client, session.store, project_id) if data is not None else None
        timings = SubmitTimings()
        final = _submit(session, participant, project_id, spec, data, reporter, timings)
    finally:
        reporter.close()
        session.close()
    out = {"project_id": project_id, "trainer": session.address, **(_state_json(final) or {}),
           "resumed_from": timings.resumed_from, "steps": timings.steps,
           "seconds": {"upload": timings.upload, "commit": timings.commit, "wait": timings.wait, "reveal": timings.reveal}}
    if as_json:
        emit_json(out)
    else:
        console.print(f"round {final.round} of project {project_id}: update {final.cid} revealed", highlight=False, soft_wrap=True)


@app.command("run")
@handle_errors
def run_cmd(
    project_id: int = ProjectArg,
    claim: bool = typer.Option(False, "--claim", help="After the last round, wait for its challenge window and claim."),
    join: bool = typer.Option(False, "--join", help="Register first if not registered yet."),
    max_rounds: int = typer.Option(None, "--max-rounds", help="Stop after submitting this many rounds."),
    data: str = DataOpt, shard: str = ShardOpt, partition: str = PartitionOpt, partition_seed: int = PartitionSeedOpt,
    label_noise: float = NoiseOpt, behaviour: str = BehaviourOpt, encoding: str = EncodingOpt,
    epochs: int = EpochsOpt, batch_size: int = BatchOpt, lr: float = LrOpt, optimizer: str = OptimizerOpt,
    seed: int = SeedOpt, threads: int = ThreadsOpt, allow_model_code: bool = ModelCodeOpt, timeout: float = TimeoutOpt,
    account: str = AccountOpt, dev_account: int = DevAccountOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """Take part in every remaining round unattended: train, submit, wait for the next round;
    finish an interrupted submission first; stop when the project has no open round."""
    if encoding not in ("f32", "q8"):
        raise ConfigError(f"--encoding must be f32 or q8, got {encoding!r}")
    if max_rounds is not None and max_rounds < 1:
        raise ConfigError(f"--max-rounds must be at least 1, got {max_rounds}")
    s = _settings(
        config, _train_flags(epochs, batch_size, lr, optimizer, seed), rpc=rpc, deployment=deployment, ipfs=ipfs,
        state=state, keystore=keystore, data=data, shard=shard, partition=partition, partition_seed=partition_seed,
        label_noise=label_noise, behaviour=behaviour, threads=threads, allow_model_code=allow_model_code, wait_timeout=timeout,
    )
    reporter = Reporter(as_json)
    session = open_session(s, account=account, dev=dev_account, sign=True)
    rounds: list[dict[str, Any]] = []
    claimed: dict[str, Any] | None = None
    try:
        session.project(project_id)
        registered, _ = session.client.registration(project_id, session.address)
        if not registered:
            if not join:
                raise NotRegistered(
                    f"{session.address} is not registered in project {project_id}: run `trainer join {project_id}` or pass --join"
                )
            session.participant().join(project_id)
            reporter.line(f"joined project {project_id}")
        participant = session.participant(on_wait=reporter.wait)
        spec = load_spec(session.client, session.store, project_id)
        submitted = 0
        while True:
            info = session.client.project(project_id)
            if info.ended or info.current_round >= info.num_rounds:
                break
            r = info.current_round
            rs = participant.states.load(project_id, r, session.address)
            entry: dict[str, Any] = {"round": r}
            try:
                if rs is not None and rs.stage != Stage.PREPARED:
                    if rs.stage != Stage.REVEALED:
                        reporter.line(f"round {r}: resuming the submission interrupted at stage {rs.stage.value}")
                        rs = _submit(session, participant, project_id, spec, None, reporter)
                        submitted += 1
                    entry |= {"stage": rs.stage.value, "cid": rs.cid, "resumed": True}
                elif session.client.block_number >= info.commit_deadline:
                    reporter.line(f"round {r}: its commit deadline (block {info.commit_deadline}) has passed; skipping it")
                    entry |= {"stage": "skipped", "reason": "commit deadline passed"}
                else:
                    update, _path = _train(session, project_id, spec, info, encoding, reporter, as_json)
                    rs = _submit(session, participant, project_id, spec, update.data, reporter)
                    submitted += 1
                    entry |= {"stage": rs.stage.value, "cid": rs.cid, "samples": update.num_samples,
                              "loss": update.loss, "behaviour": update.behaviour}
            except (DeadlinePassed, RoundMismatch) as exc:
                reporter.line(f"round {r}: {exc}")
                entry |= {"stage": "lost", "reason": str(exc)}
            rounds.append(entry)
            if max_rounds is not None and submitted >= max_rounds:
                break
            _wait_next_round(session, project_id, r, reporter)
        if claim:
            claimed = _claim_after_settling(session, participant, project_id, reporter)
    finally:
        reporter.close()
        session.close()
    out = {"project_id": project_id, "trainer": session.address, "rounds": rounds, "claim": claimed}
    if as_json:
        emit_json(out)
        return
    done = sum(1 for e in rounds if e.get("stage") == "revealed")
    console.print(f"project {project_id}: revealed updates in {done} of {len(rounds)} round(s)" +
                  (f"; claimed {claimed['amount']}" if claimed else ""), highlight=False, soft_wrap=True)


def _wait_next_round(session: Session, project_id: int, round_: int, reporter: Reporter) -> None:
    """Poll until round `round_` is finalized (or the project ends)."""
    s = session.settings
    deadline = time.monotonic() + s.wait_timeout
    said = False
    while True:
        info = session.client.project(project_id)
        if info.ended or info.current_round != round_:
            return
        if not said:
            reporter.line(f"round {round_}: waiting for the aggregator to finalize it (reveals close at block {info.reveal_deadline})")
            said = True
        if time.monotonic() > deadline:
            raise WaitTimeout(
                f"round {round_} of project {project_id} was not finalized within {s.wait_timeout:.0f} s: is the aggregator running?"
            )
        time.sleep(s.poll_interval)


def _claim_after_settling(session: Session, participant: Participant, project_id: int, reporter: Reporter) -> dict[str, Any]:
    info = session.client.project(project_id)
    finals = session.client.finalized(project_id)
    if finals:
        last = max(finals, key=lambda f: f.round)
        r = session.client.round(project_id, last.round)
        if r.status == RoundStatus.FINALIZED:
            participant.wait_for_block(r.finalized_at + info.challenge_window + 1, "challenge window", session.settings.wait_timeout)
    return _do_claim(session, participant, project_id, reporter)


def _do_claim(session: Session, participant: Participant, project_id: int, reporter: Reporter) -> dict[str, Any]:
    c = participant.claimable(project_id)
    if c is None or c.amount == 0:
        reporter.line("nothing to claim")
        return {"amount": 0, "round": c.round if c else None, "cumulative": c.cumulative if c else 0,
                "claimed_before": c.claimed if c else session.client.claimed_by(project_id, session.address), "tx": None}
    rcpt = session.client.claim(project_id, c.round, session.address, c.cumulative, c.proof)
    return {"amount": c.amount, "round": c.round, "cumulative": c.cumulative, "claimed_before": c.claimed, "tx": rcpt.tx_hash}


# ---------------------------------------------------------------------- status / rewards / claim


def _phase(info: Any, block: int) -> str:
    if info.ended:
        return "ended"
    if info.current_round >= info.num_rounds:
        return "finished"
    if block < info.commit_deadline:
        return "commit"
    if block < info.reveal_deadline:
        return "reveal"
    return "finalize"


@app.command("status")
@handle_errors
def status_cmd(
    project_id: int = ProjectArg,
    account: str = AccountOpt, dev_account: int = DevAccountOpt, address: str = AddressOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """The open round, its deadlines, and where this trainer stands (registration, commitment).

    Without --account/--dev-account/--address (or `account` in the config) only the project's side.
    """
    s = _settings(config, rpc=rpc, deployment=deployment, ipfs=ipfs, state=state, keystore=keystore)
    session = open_session(s, account=account, dev=dev_account, address=address)
    info = session.project(project_id)
    block = session.client.block_number
    open_ = not info.ended and info.current_round < info.num_rounds
    r = info.current_round
    out: dict[str, Any] = {
        "project_id": project_id, "block": block, "round": r, "num_rounds": info.num_rounds, "ended": info.ended,
        "phase": _phase(info, block),
        "opened_at": info.opened_at if open_ else None,
        "commit_deadline": info.commit_deadline if open_ else None,
        "reveal_deadline": info.reveal_deadline if open_ else None,
        "stake_required": info.stake,
        "trainer": None,
    }
    if session.has_identity:
        me = session.address
        registered, stake = session.client.registration(project_id, me)
        chain_state = session.client.commitment_state(project_id, r, me) if open_ else None
        local = session.participant().states.load(project_id, r, me) if open_ else None
        ufile = update_path(s.state, project_id, r, me)
        out |= {
            "trainer": me, "registered": registered, "stake": stake,
            "commit_state": chain_state.name.lower() if chain_state is not None else None,
            "local_state": _state_json(local),
            "update_file": ufile if open_ and ufile.is_file() else None,
            "claimed": session.client.claimed_by(project_id, me),
        }
    if as_json:
        emit_json(out)
        return
    console.print(f"project {project_id}: round {r}/{info.num_rounds}, phase {out['phase']}, block {block}", highlight=False, soft_wrap=True)
    if open_:
        console.print(f"commits until block {info.commit_deadline}, reveals until block {info.reveal_deadline}", highlight=False, soft_wrap=True)
    if out["trainer"]:
        console.print(
            f"{out['trainer']}: {'registered (stake ' + str(out['stake']) + ')' if out['registered'] else 'not registered'};"
            f" this round: {out['commit_state'] or '-'} on chain,"
            f" {out['local_state']['stage'] if out['local_state'] else 'nothing'} locally"
            f"{'; update file ready' if out['update_file'] else ''}; claimed {out['claimed']}",
            highlight=False, soft_wrap=True,
        )


@app.command("rewards")
@handle_errors
def rewards_cmd(
    project_id: int = ProjectArg,
    account: str = AccountOpt, dev_account: int = DevAccountOpt, address: str = AddressOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """Per-round rewards and the cumulative total from the round records; claimed and claimable."""
    s = _settings(config, rpc=rpc, deployment=deployment, ipfs=ipfs, state=state, keystore=keystore)
    session = open_session(s, account=account, dev=dev_account, address=address)
    try:
        info = session.project(project_id)
        now = session.client.block_number
        me = session.address.lower()
        rows: list[dict[str, Any]] = []

        def pick(d: dict[str, Any]) -> Any:
            return next((v for k, v in d.items() if k.lower() == me), None)

        for f in sorted(session.client.finalized(project_id), key=lambda f: f.round):
            record = load_record(session.store, f.record_cid)
            rinfo = session.client.round(project_id, f.round)
            verdict = next((v for v in record.verdicts if v.trainer.lower() == me), None)
            rows.append({
                "round": f.round, "status": rinfo.status.name.lower(),
                "settled": is_settled(session.client, project_id, f.round, info.challenge_window, now),
                "reward": pick(record.rewards) or 0, "cumulative": pick(record.cumulative_rewards) or 0,
                "score": pick(record.scores), "accepted": verdict.accepted if verdict else None,
                "reason": verdict.reason if verdict else None, "record_cid": f.record_cid,
            })
        c = session.participant().claimable(project_id)
        claimed = session.client.claimed_by(project_id, session.address)
    finally:
        session.close()
    out = {"project_id": project_id, "trainer": session.address, "rounds": rows, "claimed": claimed,
           "claimable": c.amount if c else 0, "claimable_round": c.round if c else None,
           "cumulative": c.cumulative if c else 0}
    if as_json:
        emit_json(out)
        return
    t = Table("round", "status", "settled", "verdict", "reward", "cumulative")
    for row in rows:
        shown = "-" if row["accepted"] is None else ("accepted" if row["accepted"] else f"rejected: {row['reason']}")
        t.add_row(str(row["round"]), str(row["status"]), "yes" if row["settled"] else "no", shown, str(row["reward"]), str(row["cumulative"]))
    console.print(t)
    console.print(f"claimed {claimed}; claimable now {out['claimable']}", highlight=False, soft_wrap=True)


@app.command("claim")
@handle_errors
def claim_cmd(
    project_id: int = ProjectArg,
    account: str = AccountOpt, dev_account: int = DevAccountOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """Claim everything earned up to the newest settled round (Merkle proof from its record)."""
    s = _settings(config, rpc=rpc, deployment=deployment, ipfs=ipfs, state=state, keystore=keystore)
    reporter = Reporter(True)
    session = open_session(s, account=account, dev=dev_account, sign=True)
    try:
        session.project(project_id)
        out = {"project_id": project_id, "trainer": session.address} | _do_claim(session, session.participant(), project_id, reporter)
    finally:
        session.close()
    if as_json:
        emit_json(out)
    elif out["amount"]:
        console.print(f"claimed {out['amount']} (cumulative {out['cumulative']} as of round {out['round']})", highlight=False, soft_wrap=True)
    else:
        console.print("nothing to claim yet", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    app()

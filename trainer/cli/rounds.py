"""`trainer join | train | submit | run`: taking part in a project's rounds (thin over `trainer.runner`)."""

from __future__ import annotations

from pathlib import Path

import typer

from market.chain import ETH, checksum
from market.cli.kit import (
    DeploymentOpt,
    DevAccountOpt,
    JsonOpt,
    RpcOpt,
    console,
    emit_json,
    format_amount,
    handle_errors,
)
from market.errors import InsufficientFunds
from market.protocol.reading import load_spec
from trainer import runner
from trainer._session import open_session
from trainer.cli._options import (
    AccountOpt,
    AddressOpt,
    BatchOpt,
    BehaviourOpt,
    ConfigOpt,
    DataOpt,
    EncodingOpt,
    EpochsOpt,
    IpfsOpt,
    KeystoreOpt,
    LabelColumnOpt,
    LrOpt,
    ModelCodeOpt,
    NoiseOpt,
    OptimizerOpt,
    PartitionOpt,
    PartitionSeedOpt,
    ProjectArg,
    SeedOpt,
    ShardOpt,
    StateOpt,
    ThreadsOpt,
    TimeoutOpt,
    UpdateOpt,
    check_encoding,
    settings,
    state_json,
    train_flags,
)
from trainer.cli._progress import Reporter
from trainer.errors import ConfigError, RoundMismatch
from trainer.participant import SubmitTimings
from trainer.state import Stage
from trainer.update import read_update_file, update_path


@handle_errors
def join(
    project_id: int = ProjectArg,
    account: str = AccountOpt, dev_account: int = DevAccountOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """Register as a trainer of a project, paying the stake it asks for."""
    s = settings(config, rpc=rpc, deployment=deployment, ipfs=ipfs, state=state, keystore=keystore)
    session = open_session(s, account=account, dev=dev_account, sign=True)
    info = session.project(project_id)
    if info.ended:
        raise RoundMismatch(f"project {project_id} has ended: it takes no new trainers")
    registered, _ = session.client.registration(project_id, session.address)
    if not registered and info.token == ETH:
        balance = int(session.client.w3.eth.get_balance(checksum(session.address)))
        if balance <= info.stake:  # the stake and the gas to send it
            raise InsufficientFunds(
                f"{session.address} holds {format_amount(balance)}; joining project {project_id} stakes"
                f" {format_amount(info.stake)} plus gas: fund it first (on a local chain: `market fund"
                f" {account or session.address}`; elsewhere send it ether)"
            )
    joined = session.participant().join(project_id)
    out = {"project_id": project_id, "trainer": session.address, "joined": joined, "stake": info.stake,
           "token": info.token, "already_registered": not joined}
    if as_json:
        emit_json(out)
    elif joined:
        stake = format_amount(info.stake) if info.token == ETH else f"{info.stake} base units of token {info.token}"
        console.print(f"{session.address} joined project {project_id}, staking {stake}", highlight=False, soft_wrap=True)
    else:
        console.print(f"{session.address} is already registered in project {project_id}", highlight=False, soft_wrap=True)


@handle_errors
def train(
    project_id: int = ProjectArg,
    data: str = DataOpt, label_column: str = LabelColumnOpt, shard: str = ShardOpt, partition: str = PartitionOpt,
    partition_seed: int = PartitionSeedOpt, label_noise: float = NoiseOpt, behaviour: str = BehaviourOpt, encoding: str = EncodingOpt,
    epochs: int = EpochsOpt, batch_size: int = BatchOpt, lr: float = LrOpt, optimizer: str = OptimizerOpt,
    seed: int = SeedOpt, threads: int = ThreadsOpt, allow_model_code: bool = ModelCodeOpt,
    account: str = AccountOpt, dev_account: int = DevAccountOpt, address: str = AddressOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """Train on your data from the open round's global model; write the encoded update to the state dir."""
    check_encoding(encoding)
    s = settings(
        config, train_flags(epochs, batch_size, lr, optimizer, seed), rpc=rpc, deployment=deployment, ipfs=ipfs,
        state=state, keystore=keystore, data=data, label_column=label_column, shard=shard, partition=partition,
        partition_seed=partition_seed,
        label_noise=label_noise, behaviour=behaviour, threads=threads, allow_model_code=allow_model_code,
    )
    reporter = Reporter(as_json)
    session = open_session(s, account=account, dev=dev_account, address=address)
    try:
        info = runner.open_round(session, project_id)
        spec = load_spec(session.client, session.store, project_id)
        update, path = runner.train_round(session, project_id, spec, info, encoding, reporter)
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


@handle_errors
def submit(
    project_id: int = ProjectArg,
    update: Path = UpdateOpt,
    timeout: float = TimeoutOpt,
    allow_model_code: bool = ModelCodeOpt,
    account: str = AccountOpt, dev_account: int = DevAccountOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """Upload the update, commit to it, wait for the commit deadline, reveal it.

    Safe to run again after a crash at any point: it finishes the stored submission, with the
    same salt, and never commits twice.
    """
    s = settings(config, rpc=rpc, deployment=deployment, ipfs=ipfs, state=state, keystore=keystore, wait_timeout=timeout,
                 allow_model_code=allow_model_code)
    reporter = Reporter(as_json)
    session = open_session(s, account=account, dev=dev_account, sign=True)
    try:
        info = runner.open_round(session, project_id)
        runner.require_registered(session, project_id)
        participant = session.participant(on_wait=runner.waiter(session, reporter))
        r = info.current_round
        existing = participant.states.load(project_id, r, session.address)
        path = update if update is not None else update_path(s.state, project_id, r, session.address)
        data: bytes | None = None
        if update is not None or existing is None or (existing.stage == Stage.PREPARED and path.is_file()):
            data = read_update_file(path)
        spec = load_spec(session.client, session.store, project_id) if data is not None else None
        timings = SubmitTimings()
        final = runner.submit_round(session, participant, project_id, spec, data, reporter, timings)
    finally:
        reporter.close()
        session.close()
    out = {"project_id": project_id, "trainer": session.address, **(state_json(final) or {}),
           "resumed_from": timings.resumed_from, "steps": timings.steps,
           "seconds": {"upload": timings.upload, "commit": timings.commit, "wait": timings.wait, "reveal": timings.reveal}}
    if as_json:
        emit_json(out)
    else:
        console.print(f"round {final.round} of project {project_id}: update {final.cid} revealed", highlight=False, soft_wrap=True)


@handle_errors
def run(
    project_id: int = ProjectArg,
    claim: bool = typer.Option(False, "--claim", help="After the last round, wait for its challenge window and claim."),
    join: bool = typer.Option(False, "--join", help="Register first if not registered yet."),
    max_rounds: int = typer.Option(None, "--max-rounds", help="Stop after submitting this many rounds."),
    data: str = DataOpt, label_column: str = LabelColumnOpt, shard: str = ShardOpt, partition: str = PartitionOpt,
    partition_seed: int = PartitionSeedOpt, label_noise: float = NoiseOpt, behaviour: str = BehaviourOpt, encoding: str = EncodingOpt,
    epochs: int = EpochsOpt, batch_size: int = BatchOpt, lr: float = LrOpt, optimizer: str = OptimizerOpt,
    seed: int = SeedOpt, threads: int = ThreadsOpt, allow_model_code: bool = ModelCodeOpt, timeout: float = TimeoutOpt,
    account: str = AccountOpt, dev_account: int = DevAccountOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """Take part in every remaining round unattended: train, submit, wait for the next round;
    finish an interrupted submission first; stop when the project has no open round."""
    check_encoding(encoding)
    if max_rounds is not None and max_rounds < 1:
        raise ConfigError(f"--max-rounds must be at least 1, got {max_rounds}")
    s = settings(
        config, train_flags(epochs, batch_size, lr, optimizer, seed), rpc=rpc, deployment=deployment, ipfs=ipfs,
        state=state, keystore=keystore, data=data, label_column=label_column, shard=shard, partition=partition,
        partition_seed=partition_seed,
        label_noise=label_noise, behaviour=behaviour, threads=threads, allow_model_code=allow_model_code, wait_timeout=timeout,
    )
    reporter = Reporter(as_json)
    session = open_session(s, account=account, dev=dev_account, sign=True)
    try:
        result = runner.run(session, project_id, encoding=encoding, join=join, claim=claim, max_rounds=max_rounds, hooks=reporter)
    finally:
        reporter.close()
        session.close()
    out = {"project_id": project_id, "trainer": session.address, "rounds": result.rounds, "claim": result.claim}
    if as_json:
        emit_json(out)
        return
    done = sum(1 for e in result.rounds if e.get("stage") == "revealed")
    console.print(f"project {project_id}: revealed updates in {done} of {len(result.rounds)} round(s)" +
                  (f"; claimed {format_amount(result.claim['amount'])}" if result.claim else ""), highlight=False, soft_wrap=True)

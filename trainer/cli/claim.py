"""`trainer claim | withdraw`: collect rewards, then the stake and any credit once the project ends."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

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
from trainer._session import open_session
from trainer.cli._options import AccountOpt, ConfigOpt, IpfsOpt, KeystoreOpt, ProjectArg, StateOpt, settings
from trainer.errors import SubmissionError

ToOpt = typer.Option(
    None, "--to", metavar="ADDRESS", help="Pay to this address instead of the signer's (e.g. when the token blocks it).")


@handle_errors
def claim(
    project_id: int = ProjectArg,
    account: str = AccountOpt, dev_account: int = DevAccountOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, to: str = ToOpt, as_json: bool = JsonOpt,
) -> None:
    """Claim everything earned up to the newest settled round (Merkle proof from its record, or
    from the copy kept in the state directory when IPFS no longer serves the record)."""
    recipient = checksum(to, "--to") if to else None
    s = settings(config, rpc=rpc, deployment=deployment, ipfs=ipfs, state=state, keystore=keystore)
    session = open_session(s, account=account, dev=dev_account, sign=True)
    try:
        info = session.project(project_id)
        out: dict[str, Any] = {"project_id": project_id, "trainer": session.address}
        out |= dataclasses.asdict(session.participant().claim(project_id, recipient=recipient))
        out["recipient"] = recipient or session.address
    finally:
        session.close()
    if as_json:
        emit_json(out)
    elif out["amount"]:
        console.print(f"claimed {_amount(info.token, out['amount'])} (cumulative {_amount(info.token, out['cumulative'])}"
                      f" as of round {out['round']}) to {out['recipient']}", highlight=False, soft_wrap=True)
    else:
        console.print("nothing to claim yet", highlight=False, soft_wrap=True)


@handle_errors
def withdraw(
    project_id: int = ProjectArg,
    account: str = AccountOpt, dev_account: int = DevAccountOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, to: str = ToOpt, as_json: bool = JsonOpt,
) -> None:
    """Take back the stake once the project has ended, and any credit (a refunded dispute bond),
    to the signer or to --to."""
    recipient = checksum(to, "--to") if to else None
    s = settings(config, rpc=rpc, deployment=deployment, keystore=keystore)
    session = open_session(s, account=account, dev=dev_account, sign=True)
    client = session.client
    info = session.project(project_id)
    me = session.address
    _, stake = client.registration(project_id, me)
    credit = client.credit_of(project_id, me)
    if stake and not info.ended:
        raise SubmissionError(
            f"the stake of {format_amount(stake) if info.token == ETH else stake} stays locked until project {project_id}"
            f" ends (its owner runs `market project end {project_id}` after the last round settles): withdraw then"
        )
    stake_tx = client.withdraw_stake(project_id, recipient).tx_hash if stake else None
    credit_tx = client.withdraw_credit(project_id, recipient).tx_hash if credit else None
    to_ = recipient or me
    out = {"project_id": project_id, "trainer": me, "recipient": to_, "stake": stake, "credit": credit,
           "stake_tx": stake_tx, "credit_tx": credit_tx}
    if as_json:
        emit_json(out)
    elif stake or credit:
        parts = [f"stake {_amount(info.token, stake)}"] * bool(stake) + [f"credit {_amount(info.token, credit)}"] * bool(credit)
        console.print(f"withdrew {' and '.join(parts)} from project {project_id} to {to_}", highlight=False, soft_wrap=True)
    else:
        console.print(f"{me} has no stake or credit left in project {project_id}: nothing to withdraw", highlight=False, soft_wrap=True)


def _amount(token: str, value: int) -> str:
    return format_amount(value) if token == ETH else f"{value} base units of {token}"

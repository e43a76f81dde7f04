"""`trainer status | rewards`: read-only views of a project and of this trainer's standing in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from market.chain import ETH
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
from market.protocol.reading import is_settled, load_record
from trainer._session import open_session
from trainer.cli._options import (
    AccountOpt,
    AddressOpt,
    ConfigOpt,
    IpfsOpt,
    KeystoreOpt,
    ProjectArg,
    StateOpt,
    settings,
    state_json,
)
from trainer.update import update_path


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


@handle_errors
def status(
    project_id: int = ProjectArg,
    account: str = AccountOpt, dev_account: int = DevAccountOpt, address: str = AddressOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """The open round, its deadlines, and where this trainer stands (registration, commitment).

    Without --account/--dev-account/--address (or `account` in the config) only the project's side.
    """
    s = settings(config, rpc=rpc, deployment=deployment, ipfs=ipfs, state=state, keystore=keystore)
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
            "local_state": state_json(local),
            "update_file": ufile if open_ and ufile.is_file() else None,
            "claimed": session.client.claimed_by(project_id, me),
        }
        spent = session.participant().privacy_spent(project_id)
        out["privacy"] = spent.to_json() if spent is not None else None
    if as_json:
        emit_json(out)
        return
    console.print(f"project {project_id}: round {r}/{info.num_rounds}, phase {out['phase']}, block {block}", highlight=False, soft_wrap=True)
    if open_:
        console.print(f"commits until block {info.commit_deadline}, reveals until block {info.reveal_deadline}", highlight=False, soft_wrap=True)
    if out["trainer"]:
        amt = _amounts(info.token)
        console.print(
            f"{out['trainer']}: {'registered (stake ' + amt(out['stake']) + ')' if out['registered'] else 'not registered'};"
            f" this round: {out['commit_state'] or '-'} on chain,"
            f" {out['local_state']['stage'] if out['local_state'] else 'nothing'} locally"
            f"{'; update file ready' if out['update_file'] else ''}; claimed {amt(out['claimed'])}",
            highlight=False, soft_wrap=True,
        )
        if out["privacy"]:
            p = out["privacy"]
            console.print(f"privacy ({p['source']} DP): epsilon {p['epsilon']:.2f} spent at delta {p['delta']:g} over"
                          f" {len(p['rounds'])} round(s), max {p['max_epsilon']:g}; {p['rounds_left']} more round(s) allowed",
                          highlight=False, soft_wrap=True)


@handle_errors
def rewards(
    project_id: int = ProjectArg,
    account: str = AccountOpt, dev_account: int = DevAccountOpt, address: str = AddressOpt,
    rpc: str = RpcOpt, deployment: Path = DeploymentOpt, ipfs: str = IpfsOpt, state: Path = StateOpt, keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt, as_json: bool = JsonOpt,
) -> None:
    """Per-round rewards and the cumulative total from the round records; claimed and claimable."""
    s = settings(config, rpc=rpc, deployment=deployment, ipfs=ipfs, state=state, keystore=keystore)
    session = open_session(s, account=account, dev=dev_account, address=address)
    try:
        info = session.project(project_id)  # an unknown project fails here, with its own message
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
                "settled": is_settled(session.client, project_id, f.round, now),
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
    amt = _amounts(info.token)
    t = Table("round", "status", "settled", "verdict", "reward", "cumulative")
    for col in t.columns:
        col.no_wrap = col.header != "verdict"
    t.columns[3].overflow = "fold"  # a rejection reason wraps inside its cell; the rest stays on one line
    for row in rows:
        shown = "-" if row["accepted"] is None else ("accepted" if row["accepted"] else f"rejected: {row['reason']}")
        t.add_row(str(row["round"]), str(row["status"]), "yes" if row["settled"] else "no", shown,
                  amt(row["reward"]), amt(row["cumulative"]))
    console.print(t)
    console.print(f"claimed {amt(claimed)}; claimable now {amt(out['claimable'])}", highlight=False, soft_wrap=True)


def _amounts(token: str) -> Any:
    """How amounts of the project's token read: ether for ETH (to 6 decimals, "~" when rounded,
    so a table fits 80 columns; --json has the exact wei), base units for an ERC-20."""
    if token != ETH:
        return lambda v: f"{v} units"

    def ether(v: int) -> str:
        exact = format_amount(v)
        short = format_amount(round(v, -12))
        return exact if exact == short else "~" + short

    return ether

"""`aggregator`: serve a project as its aggregator, audit it, and show the service's progress.

Configuration: the TOML file `market.toml` (or --config, or $MARKET_CONFIG): its `[market]`
table says where the node, deployment, IPFS API and state directory are; its `[aggregator]`
table holds the aggregator's settings (see `aggregator.settings`); both are strict (an unknown key
names the closest valid one); flags go on top. Errors print one line and exit with a code of the
one table of all three CLIs (`market.errors.EXIT_CODES`; `audit` exits 1 on a mismatch). Amounts
print in ether, wei under --json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from aggregator.audit_cli import audit, open_settings_store
from market.cli.config import Settings, check_keys, load_settings, read_config
from market.cli.kit import (
    AccountOpt,
    ConfigOpt,
    DeploymentOpt,
    DevAccountOpt,
    JsonOpt,
    RpcOpt,
    console,
    emit_json,
    format_amount,
    handle_errors,
    pick_account,
)

app = typer.Typer(
    name="aggregator",
    help="The aggregator of an audited learning market: serve a project's rounds, audit them, show progress.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

StateOpt = typer.Option(None, "--state", help="State directory (the journal lives in STATE/aggregator/).")
IpfsOpt = typer.Option(None, "--ipfs", help="IPFS API (multiaddr or URL) or embedded:DIR; default from the config.")


def _settings(config: Path | None, **flags: Any) -> tuple[Settings, Any]:
    """The `[market]` table with the flags on top, and the `[aggregator]` table (strict)."""
    from aggregator.settings import AggregatorSettings, load_aggregator_settings

    market = load_settings(config).merged(**flags)
    found, tables = read_config(config)
    table = tables.get("aggregator")
    if found is not None and table is not None:
        check_keys(table, AggregatorSettings.model_fields, f"{found} [aggregator]")
    return market, load_aggregator_settings(table, found or "defaults")


def _journal(s: Settings, client: Any, project_id: int) -> Any:
    from aggregator.journal import Journal

    return Journal.for_project(s.state, int(client.w3.eth.chain_id), client.address, project_id)


@app.command("serve")
@handle_errors
def serve(
    project_id: int = typer.Argument(..., help="Project id."),
    rule: str = typer.Option(None, "--rule", help="Aggregation rule spec, e.g. trimmed_mean:beta=0.2 or krum:f=1,clip=median."),
    scorer: str = typer.Option(None, "--scorer", help="Contribution scorer: auto, exact_shapley, gtg_shapley[:eps=..], leave_one_out."),
    server_lr: float = typer.Option(None, "--server-lr", help="Server learning rate of round 0 (adapted on plateau)."),
    validation: str = typer.Option(None, "--validation", help="Validation set: digits|mnist5k[:size=N,seed=S] or a .npz path."),
    validation_key: Path = typer.Option(
        None, "--validation-key",
        help="The owner's key file of the spec's secret validation parts (<project file>.valkey.json)."),
    poll: float = typer.Option(None, "--poll", help="Seconds between chain polls."),
    once: bool = typer.Option(False, "--once", help="Finish at most one round (waiting for it if needed), then exit."),
    until_done: bool = typer.Option(False, "--until-done", help="Exit when the project has no open round."),
    allow_user_models: bool = typer.Option(
        None, "--allow-user-models/--no-user-models",
        help="Build the spec's `package.module:factory` architecture (runs that code; only for code you trust)."),
    json_log: bool = typer.Option(False, "--json-log", help="Log JSON objects, one per line, on stderr."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    ipfs: str = IpfsOpt,
    state: Path = StateOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Follow a project as its aggregator: run each round (fetch, validate, filter, aggregate,
    score, reward, adapt, publish) and finalize it on chain exactly once. Restartable.

    The project's spec fixes the aggregation policy (rule, filters, scorer, server learning rate,
    validation set): --rule, --scorer, --server-lr and --validation only apply to projects whose
    spec fixes none, and one that contradicts the spec is refused."""
    from aggregator.service import AggregatorService, KeySource, setup_logging
    from market.chain import connect
    from market.chain.deployment import Deployment

    s, agg = _settings(config, rpc=rpc, deployment=deployment, ipfs=ipfs, state=state)
    agg = agg.merged(rule=rule, scorer=scorer, server_lr=server_lr, validation=validation, poll=poll,
                     allow_user_models=allow_user_models,
                     validation_key=None if validation_key is None else str(validation_key))
    setup_logging(json_log)
    dep = Deployment.load(s.deployment)
    w3 = connect(s.rpc, profile=s.profile or dep.chain_profile)
    acct = pick_account(account, dev_account, s.keystore, int(w3.eth.chain_id), s.profile or dep.chain_profile)
    client = dep.client(w3, acct, s.profile)
    store = open_settings_store(s)
    try:
        keys = KeySource(s.keystore, s.state, account=account, dev=dev_account)
        service = AggregatorService(client, store, project_id, agg, _journal(s, client, project_id), keys=keys)
        service.check_role()
        n = service.run(once=once, until_done=until_done)
        rows = service.status()
    finally:
        store.close()
    if as_json:
        emit_json({"project_id": project_id, "finalized_now": n, "rounds": rows})
    else:
        console.print(f"finalized {n} round(s) of project {project_id}")


@app.command("status")
@handle_errors
def status(
    project_id: int = typer.Argument(..., help="Project id."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    state: Path = StateOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Rounds done per the local journal beside the chain's view."""
    from aggregator.journal import Journal
    from aggregator.service import round_status
    from market.chain import connect
    from market.chain.deployment import Deployment

    s, _ = _settings(config, rpc=rpc, deployment=deployment, state=state)
    dep = Deployment.load(s.deployment)
    client = dep.client(connect(s.rpc, profile=s.profile or dep.chain_profile), profile=s.profile)
    journal: Journal = _journal(s, client, project_id)
    rows = round_status(client, journal, project_id)
    if as_json:
        emit_json({"project_id": project_id, "journal": str(journal.directory), "rounds": rows})
        return
    done_chain = sum(1 for r in rows if r["chain_record_cid"])
    done_journal = sum(1 for r in rows if r["journal"] == "finalized")
    console.print(f"project {project_id}: {done_chain} round(s) finalized on chain, {done_journal} per the journal ({journal.directory})")
    t = Table("round", "chain", "allocation", "journal", "record (chain)", "same")
    for col in t.columns:
        col.no_wrap = True
    for r in rows:
        same = "-" if r["agree"] is None else ("[green]yes[/]" if r["agree"] else "[red]no[/]")
        cid = r["chain_record_cid"]
        t.add_row(str(r["round"]), r["chain"], "-" if r["allocation"] is None else format_amount(r["allocation"]),
                  r["journal"] or "-", f"{cid[:8]}…{cid[-4:]}" if cid else "-", same)
    console.print(t)


app.command("audit")(handle_errors(audit))


if __name__ == "__main__":
    app()

"""`market`: run the local stack, deploy, and act as a project owner, arbiter or auditor.

Every command reads `market.toml` (or --config) with flags on top, prints one line on error with a
meaningful exit code, and takes --json for scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from devnet.stack import DEFAULT_BLOCK_TIME, Stack
from market.chain import ETH, MarketClient, checksum, connect
from market.chain.deployment import Deployment, deploy
from market.chain.profiles import PROFILES, for_chain, refuse_dev_key
from market.cli.config import Settings, load_settings, parse_amount
from market.cli.kit import (
    AccountOpt,
    ConfigOpt,
    DeploymentOpt,
    DevAccountOpt,
    JsonOpt,
    ProfileOpt,
    RpcOpt,
    console,
    emit_json,
    err_console,
    format_amount,
    handle_errors,
    pick_account,
    read_password,
)
from market.cli.project_file import ProjectFile
from market.errors import ConfigError, ExitCode

app = typer.Typer(
    name="market",
    help="Blockchain-audited collaborative learning marketplace: local stack, deployment, projects, disputes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
stack_app = typer.Typer(
    help="Start, stop and inspect the local stack (anvil + IPFS daemon).", no_args_is_help=True, rich_markup_mode="markdown"
)
project_app = typer.Typer(
    help="Create, inspect and end projects (the owner's commands).", no_args_is_help=True, rich_markup_mode="markdown"
)
app.add_typer(stack_app, name="stack")
app.add_typer(project_app, name="project")


def _settings(config: Path | None, **flags: Any) -> Settings:
    return load_settings(config).merged(**flags)


def _client(s: Settings, account: str | None = None, dev: int | None = None, need_account: bool = False) -> MarketClient:
    w3 = connect(s.rpc, profile=s.profile)
    dep = Deployment.load(s.deployment)
    profile = s.profile or dep.chain_profile
    acct = pick_account(account, dev, s.keystore, int(w3.eth.chain_id), profile) if need_account else None
    return dep.client(w3, acct, profile)


def open_settings_store(s: Settings) -> Any:
    """The content store named by the settings (`ipfs` key): an IPFS API multiaddr/URL or embedded:DIR."""
    from market.storage import open_store

    return open_store(s.ipfs)


# ---------------------------------------------------------------------- stack


def _stack(s: Settings, explicit: dict[str, Any]) -> Stack:
    """The stack to bring up: what the state directory recorded (or the settings, for a new one),
    with the flags given on top."""
    defaults = {"anvil_port": s.anvil_port, "ipfs_api_port": s.ipfs_api_port,
                "block_time": DEFAULT_BLOCK_TIME if s.block_time is None else (s.block_time or None)}
    st = Stack.from_state(s.state, **defaults)
    for key, value in explicit.items():
        if value is not None:
            setattr(st, key, value)
    return st


@stack_app.command("up")
@handle_errors
def stack_up(
    state: Path = typer.Option(None, "--state", help="Directory for chain state, IPFS repo, PIDs and logs (default .market)."),
    anvil_port: int = typer.Option(None, help="anvil's port on 127.0.0.1."),
    ipfs_port: int = typer.Option(None, help="The IPFS RPC API port on 127.0.0.1."),
    block_time: float = typer.Option(
        None, min=0, help=f"Mine a block every N seconds (default {DEFAULT_BLOCK_TIME:g}, so block deadlines pass on"
        " their own; 0 mines one block per transaction)."),
    no_ipfs: bool = typer.Option(False, "--no-ipfs", help="Start only the chain."),
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Start anvil (and the IPFS daemon) on loopback; idempotent; state survives `down`/`up`.

    A state directory remembers its ports and block time: `up` without flags restarts the same
    stack, and asking a running stack for other ports or another block time is an error (stop it
    first)."""
    s = _settings(config, state=state)
    st = _stack(s, {"anvil_port": anvil_port, "ipfs_api_port": ipfs_port,
                    "block_time": None if block_time is None else (block_time or None),
                    "with_ipfs": False if no_ipfs else None})
    if block_time == 0:
        st.block_time = None
    with err_console.status(f"starting the local stack ({st.describe()})..."):
        status = st.up()
    if as_json:
        emit_json(status)
    else:
        _print_status(status)


@stack_app.command("down")
@handle_errors
def stack_down(
    state: Path = typer.Option(None, "--state", help="The stack's state directory."),
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Stop every process the stack started, by PID. Chain state and IPFS repo are kept."""
    s = _settings(config, state=state)
    stopped = Stack.from_state(s.state).down()
    if as_json:
        emit_json({"stopped": stopped})
    else:
        console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@stack_app.command("status")
@handle_errors
def stack_status(
    state: Path = typer.Option(None, "--state", help="The stack's state directory."),
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show what runs, on which ports, with which PIDs. Exit 4 if anything is down."""
    s = _settings(config, state=state)
    status = Stack.from_state(s.state, anvil_port=s.anvil_port, ipfs_api_port=s.ipfs_api_port).status()
    if as_json:
        emit_json(status)
    else:
        _print_status(status)
    if not all(v.get("running") for v in status.values()):
        raise typer.Exit(ExitCode.STACK)


def _print_status(status: dict[str, dict[str, Any]]) -> None:
    t = Table("service", "running", "pid", "endpoint")
    for name, v in status.items():
        t.add_row(name, "[green]yes[/]" if v.get("running") else "[red]no[/]", str(v.get("pid") or "-"), str(v.get("url", "-")))
    console.print(t)


# ---------------------------------------------------------------------- deploy


@app.command("deploy")
@handle_errors
def deploy_cmd(
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    profile: str = ProfileOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Deploy LearningMarket (the artifact shipped with the package: no compiler needed); write the
    deployment file other commands read, with the chain profile (confirmations, paging, fees)."""
    s = _settings(config, rpc=rpc, deployment=deployment, profile=profile)
    if s.rpc == "embedded":
        raise ConfigError("an embedded chain lives inside one process: deploy to a node (`market stack up`) instead")
    w3 = connect(s.rpc, profile=s.profile)
    chain = s.profile or for_chain(int(w3.eth.chain_id))
    acct = pick_account(account, dev_account, s.keystore, int(w3.eth.chain_id), chain)
    dep = deploy(w3, acct, s.rpc, chain)
    dep.save(s.deployment)
    if as_json:
        emit_json(dep)
    else:
        console.print(f"LearningMarket deployed at [bold]{dep.address}[/] (chain {dep.chain_id}, profile {chain.name},"
                      f" block {dep.block_number}); wrote {s.deployment}")


@app.command("profiles")
@handle_errors
def profiles_cmd(as_json: bool = JsonOpt) -> None:
    """List the built-in chain profiles: chain id, confirmations, log page size, fees, dev keys.
    Choose one with `[market] profile = "NAME"` in market.toml (or --profile); none holds an RPC URL."""
    rows = [PROFILES.create(name) for name in PROFILES]
    if as_json:
        emit_json(rows)
        return
    t = Table("profile", "chain id", "confirmations", "log page", "poll s", "fees", "gas x", "dev keys")
    for p in sorted(rows, key=lambda p: (not p.dev_keys, p.name)):
        tip = "node's tip" if p.priority_fee_wei is None else f"tip {format_amount(p.priority_fee_wei, 9, 'gwei')}"
        fees = f"base x{p.base_fee_multiplier:g} + {tip}" if p.fee_policy == "eip1559" else f"legacy x{p.gas_price_multiplier:g}"
        t.add_row(p.name, str(p.chain_id), str(p.confirmations), f"{p.log_page_size:,}", f"{p.poll_interval:g}", fees,
                  f"{p.gas_limit_headroom:g}", "yes" if p.dev_keys else "no")
    console.print(t)


@app.command("fund")
@handle_errors
def fund_cmd(
    address: str = typer.Argument(..., help="Address to fund, or the name of an account in the keystore."),
    amount: str = typer.Option("10 ether", "--amount", help="How much, e.g. '10 ether' or '0.5 ether' (or wei)."),
    rpc: str = RpcOpt,
    dev_account: int = typer.Option(0, "--dev-account", help="The anvil dev account that pays (local chains only)."),
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Send ether from one of anvil's dev accounts: a new keystore account on a LOCAL chain has no
    funds until you fund it. Refused on any other chain (there, use a faucet or an exchange)."""
    from eth_account.signers.local import LocalAccount

    from market.chain.accounts import Keystore

    s = _settings(config, rpc=rpc)
    w3 = connect(s.rpc, profile=s.profile)
    refuse_dev_key(int(w3.eth.chain_id), "`market fund`", s.profile,
                   instead="fund keystore accounts from the chain's faucet or an exchange (docs/deployment.md)")
    payer: LocalAccount = pick_account(None, dev_account, s.keystore, int(w3.eth.chain_id), s.profile)
    to = checksum(address if address.startswith("0x") else Keystore(s.keystore).address_of(address), "address")
    value = parse_amount(amount, "--amount")
    tx: dict[str, Any] = {"to": to, "value": value, "gas": 21_000, "chainId": int(w3.eth.chain_id),
                          "nonce": w3.eth.get_transaction_count(payer.address, "pending"),
                          "maxFeePerGas": 2 * int(w3.eth.gas_price) + 1, "maxPriorityFeePerGas": 1}
    tx_hash = w3.eth.send_raw_transaction(payer.sign_transaction(tx).raw_transaction)
    w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    balance = int(w3.eth.get_balance(to))
    if as_json:
        emit_json({"address": to, "sent": value, "balance": balance, "tx": tx_hash})
    else:
        console.print(f"sent {format_amount(value)} to {to}; its balance is now {format_amount(balance)}")


# ---------------------------------------------------------------------- projects


@project_app.command("create")
@handle_errors
def project_create(
    file: Path = typer.Argument(..., help="Project TOML: [project] terms, [model] spec, [validation] policy."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a project and escrow its whole budget (rounds x reward per round).

    The model spec ([model] + [validation]) is published on IPFS and its CID recorded on chain.
    """
    s = _settings(config, rpc=rpc, deployment=deployment)
    pf = ProjectFile.load(file)
    client = _client(s, account, dev_account, need_account=True)
    decimals = 18
    if pf.project.token.upper() != "ETH":
        from market.chain.client import ERC20_ABI

        token = client.w3.eth.contract(address=checksum(pf.project.token, "token"), abi=ERC20_ABI)
        try:
            decimals = int(token.functions.decimals().call())
        except Exception:  # noqa: BLE001 - any failure means "no ERC-20 at that address"
            raise ConfigError(f"{pf.project.token} does not answer decimals(): is it an ERC-20 on this chain?") from None
    roles = pf.params(pf.spec_cid or "", decimals)
    for role in ("aggregator", "arbiter"):  # a dev address as a role: anyone holds its key
        refuse_dev_key(int(client.w3.eth.chain_id), f"the project's {role}", client.profile, getattr(roles, role),
                       instead=f"give the {role}'s own address (from its keystore) as [project] {role}")
    spec_cid = pf.spec_cid or publish_spec(s, pf)
    params = pf.params(spec_cid, decimals)
    project_id, rcpt = client.create_project(params)
    out = {"project_id": project_id, "spec_cid": spec_cid, "budget": params.budget, "tx": rcpt.tx_hash, "gas_used": rcpt.gas_used}
    if as_json:
        emit_json(out)
    else:
        console.print(f"project [bold]{project_id}[/] created; budget {_amount(client, params.token, params.budget)}"
                      f" escrowed; spec {spec_cid}")


def _amount(client: MarketClient, token: str, value: int) -> str:
    """`value` base units of the project's token (ETH or an ERC-20) for people to read."""
    if token == ETH:
        return format_amount(value)
    from market.chain.client import ERC20_ABI

    erc20 = client.w3.eth.contract(address=checksum(token, "token"), abi=ERC20_ABI)
    try:
        decimals = int(erc20.functions.decimals().call())
    except Exception:  # noqa: BLE001 - a token without decimals(): show base units
        return f"{value} base units"
    try:
        symbol = str(erc20.functions.symbol().call())
    except Exception:  # noqa: BLE001 - symbol() is optional in ERC-20
        symbol = "tokens"
    return format_amount(value, decimals, symbol)


def publish_spec(s: Settings, pf: ProjectFile) -> str:
    """Upload the initial weights (if needed) and the project spec; return the spec's CID."""
    store = open_settings_store(s)
    try:
        spec = pf.spec(store, keystore=s.keystore, password=lambda name: read_password(f"Password for {name}"))
        return str(store.add(spec.to_bytes()))
    finally:
        store.close()


@project_app.command("status")
@handle_errors
def project_status(
    project_id: int = typer.Argument(..., help="Project id."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Rounds, trainers, escrow, allocated and claimed amounts of a project."""
    s = _settings(config, rpc=rpc, deployment=deployment)
    client = _client(s)
    info = client.project(project_id)
    rounds = [client.round(project_id, r) for r in range(min(info.current_round + 1, info.num_rounds))]
    trainers = client.trainers(project_id)
    out = {
        "project": info,
        "block": client.block_number,
        "escrow_balance": client.w3.eth.get_balance(client.address) if info.token == ETH else None,
        "trainers": trainers,
        "rounds": rounds,
    }
    if as_json:
        emit_json(out)
        return
    console.print(
        f"project {project_id}: owner {info.owner}; round {info.current_round}/{info.num_rounds}"
        f"{' (ended)' if info.ended else ''}; block {out['block']}"
    )
    def amt(v: int) -> str:
        return _amount(client, info.token, v)

    console.print(
        f"budget {amt(info.budget)}  allocated {amt(info.allocated)}  claimed {amt(info.claimed)}"
        f"  unallocated {amt(info.unallocated)}  stakes held {amt(info.stakes_held)}"
    )
    if not info.ended and info.current_round < info.num_rounds:
        console.print(f"open round {info.current_round}: commits until block {info.commit_deadline}, reveals until {info.reveal_deadline}")
    t = Table("round", "status", "finalized", "allocation", "root")
    for r in rounds:
        t.add_row(str(r.round), r.status.name.lower(), str(r.finalized_at or "-"), amt(r.allocation), r.rewards_root[:12] + "…")
    console.print(t)
    console.print(f"{len(trainers)} trainer(s): " + ", ".join(trainers))


@project_app.command("end")
@handle_errors
def project_end(
    project_id: int = typer.Argument(..., help="Project id."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """End a project after its last challenge window; only the unallocated budget returns to the owner."""
    s = _settings(config, rpc=rpc, deployment=deployment)
    client = _client(s, account, dev_account, need_account=True)
    info = client.project(project_id)
    returned = info.unallocated
    rcpt = client.end_project(project_id)
    if as_json:
        emit_json({"project_id": project_id, "returned": returned, "tx": rcpt.tx_hash})
    else:
        console.print(f"project {project_id} ended; {_amount(client, info.token, returned)} returned to the owner;"
                      f" trainers take back their stakes with `trainer withdraw {project_id}`")


@app.command("dispute")
@handle_errors
def dispute_cmd(
    project_id: int = typer.Argument(..., help="Project id."),
    round_: int = typer.Argument(..., metavar="ROUND", help="The finalized round to dispute."),
    evidence: str = typer.Option(..., "--evidence", help="IPFS CID of the evidence (e.g. a failing audit report)."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Dispute a round inside its challenge window (owner or registered trainer; posts the bond)."""
    s = _settings(config, rpc=rpc, deployment=deployment)
    client = _client(s, account, dev_account, need_account=True)
    info = client.project(project_id)
    rcpt = client.dispute(project_id, round_, evidence)
    if as_json:
        emit_json({"project_id": project_id, "round": round_, "bond": info.dispute_bond, "tx": rcpt.tx_hash})
    else:
        console.print(f"round {round_} of project {project_id} disputed (bond {_amount(client, info.token, info.dispute_bond)});"
                      " the arbiter decides")


@app.command("resolve")
@handle_errors
def resolve_cmd(
    project_id: int = typer.Argument(..., help="Project id."),
    round_: int = typer.Argument(..., metavar="ROUND", help="The disputed round."),
    uphold: bool = typer.Option(..., "--uphold/--dismiss", help="Uphold (replace the round's root) or dismiss."),
    reason: str = typer.Option(None, "--reason", help="IPFS CID of the arbiter's reasoning (default with --record:"
                               " the record's CID)."),
    record: str = typer.Option(None, "--record", help="Upholding: IPFS CID of the corrected round record (from"
                               " `market audit --corrected-out DIR --publish`); its root becomes the round's and its"
                               " CID the ruling's reason, so trainers can prove their corrected leaves."),
    root: str = typer.Option(None, "--root", help="Upholding: the corrected rewards root (0x + 64 hex), e.g. from"
                             " `market audit --json`; with --record, it must be the record's."),
    index: int = typer.Option(None, "--index", help="Which dispute of the round (default: the oldest pending one)."),
    ipfs: str = typer.Option(None, "--ipfs", help="IPFS API (multiaddr or URL) or embedded:DIR to read --record from;"
                             " default from the config."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Rule on a dispute as the project's arbiter, before the ruling deadline. Upholding replaces the
    round's rewards root with the corrected one (the allocation stays; the aggregator's bond goes
    to the round's revealers); dismissing pays the disputer's bond to the aggregator. Uphold with
    --record so trainers can claim: the ruling's reason is then the corrected record itself."""
    if record is not None and not uphold:
        raise ConfigError("--record is the corrected record of an upheld dispute: drop it to dismiss")
    if record is not None and reason is not None and reason != record:
        raise ConfigError("--record is the ruling's reason (trainers read the corrected record from it): give --record"
                          " or --reason, not both")
    if uphold and not root and record is None:
        raise ConfigError("--uphold needs --record CID (the corrected round record) or --root: the corrected rewards"
                          " root the round should pay by")
    reason_cid = record if record is not None else reason
    if reason_cid is None:
        raise ConfigError("give --reason CID (the arbiter's reasoning), or --record CID when upholding")
    corrected = _hex32(root, "--root") if root else None
    s = _settings(config, rpc=rpc, deployment=deployment, ipfs=ipfs)
    client = _client(s, account, dev_account, need_account=True)
    if record is not None:
        corrected = _corrected_root(s, client, project_id, round_, record, corrected)
    rcpt = client.resolve_dispute(project_id, round_, uphold, reason_cid, index=index, corrected_root=corrected)
    shown = "0x" + corrected.hex() if corrected else None
    if as_json:
        emit_json({"project_id": project_id, "round": round_, "upheld": uphold, "root": shown, "record": record,
                   "reason": reason_cid, "tx": rcpt.tx_hash})
    else:
        console.print(f"dispute on round {round_} {'upheld: the round pays by the corrected root' if uphold else 'dismissed'}"
                      + (f" {shown} (record {record})" if record else ""))


def _corrected_root(s: Settings, client: MarketClient, project_id: int, round_: int, cid: str,
                    root: bytes | None) -> bytes:
    """The rewards root of the corrected record at `cid`, once it is checked to be a round record of
    this project's round on this contract whose cumulative amounts give that root (and, with
    --root, that root)."""
    from market.errors import StorageError
    from market.protocol.merkle import RewardTree
    from market.protocol.reading import load_record

    store = open_settings_store(s)
    try:
        rec = load_record(store, cid)
    except StorageError as exc:
        raise type(exc)(f"--record {cid}: {exc}") from None
    finally:
        store.close()
    if (rec.project_id, rec.round) != (project_id, round_) or rec.contract.lower() != client.address.lower():
        raise ConfigError(f"--record {cid} is the record of project {rec.project_id} round {rec.round} on {rec.contract},"
                          f" not of project {project_id} round {round_} on {client.address}: give this round's"
                          " corrected record")
    declared = _hex32(rec.rewards_root, f"the rewards root of --record {cid}")
    try:
        # an empty tree is the zero address's 0, as the aggregator builds it
        own: bytes | None = RewardTree.build(rec.cumulative_rewards or {"0x" + "00" * 20: 0}).root
    except ValueError:
        own = None
    if own != declared:
        raise ConfigError(f"--record {cid} declares rewards root {rec.rewards_root}, which its cumulative amounts do not"
                          " give: trainers could not prove their leaves from it; rebuild it with `market audit"
                          " --corrected-out`")
    if root is not None and root != declared:
        raise ConfigError(f"--root 0x{root.hex()} is not the root of --record {cid} ({rec.rewards_root}): drop --root"
                          " or give the record's")
    return declared


def _hex32(text: str, what: str) -> bytes:
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        value = b""
    if len(value) != 32:
        raise ConfigError(f"{what}: expected 0x followed by 64 hex digits, got {text!r}")
    return value


def _signed(config: Path, rpc: str, deployment: Path, account: str, dev_account: int) -> MarketClient:
    s = _settings(config, rpc=rpc, deployment=deployment)
    return _client(s, account, dev_account, need_account=True)


def _done(as_json: bool, payload: dict[str, Any], text: str) -> None:
    if as_json:
        emit_json(payload)
    else:
        console.print(text)


@app.command("expire")
@handle_errors
def expire_cmd(
    project_id: int = typer.Argument(..., help="Project id."),
    round_: int = typer.Option(None, "--round", help="The open round (default: the project's current round)."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Expire a round nobody finalized by its deadline (anyone may): it allocates nothing, its share
    rolls over, the aggregator's bond goes to the round's revealers and the next round opens. A
    round without reveals may be expired as soon as its reveal window closes."""
    client = _signed(config, rpc, deployment, account, dev_account)
    rcpt = client.expire_round(project_id, round_)
    _done(as_json, {"project_id": project_id, "round": round_, "tx": rcpt.tx_hash},
          f"round {'current' if round_ is None else round_} of project {project_id} expired")


@app.command("lapse")
@handle_errors
def lapse_cmd(
    project_id: int = typer.Argument(..., help="Project id."),
    round_: int = typer.Argument(..., metavar="ROUND", help="The disputed round."),
    index: int = typer.Argument(..., help="The dispute's index in the round (see `market project status`)."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Close a dispute the arbiter did not rule on by its deadline (anyone may): the round stands and
    the disputer's bond is credited back; the owner may then replace the arbiter."""
    client = _signed(config, rpc, deployment, account, dev_account)
    rcpt = client.lapse_dispute(project_id, round_, index)
    _done(as_json, {"project_id": project_id, "round": round_, "index": index, "tx": rcpt.tx_hash},
          f"dispute {index} on round {round_} lapsed: the round stands, the bond is refunded")


@app.command("replace")
@handle_errors
def replace_cmd(
    project_id: int = typer.Argument(..., help="Project id."),
    aggregator: str = typer.Option(None, "--aggregator", help="The new aggregator's address."),
    arbiter: str = typer.Option(None, "--arbiter", help="The new arbiter's address."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Replace an aggregator that let a round expire, or an arbiter that let a dispute lapse (the
    owner only; a role that met its deadlines cannot be replaced)."""
    if (aggregator is None) == (arbiter is None):
        raise ConfigError("give exactly one of --aggregator ADDRESS or --arbiter ADDRESS")
    client = _signed(config, rpc, deployment, account, dev_account)
    if aggregator is not None:
        rcpt, role, who = client.replace_aggregator(project_id, checksum(aggregator, "--aggregator")), "aggregator", aggregator
    else:
        rcpt, role, who = client.replace_arbiter(project_id, checksum(arbiter, "--arbiter")), "arbiter", arbiter
    _done(as_json, {"project_id": project_id, "role": role, "address": who, "tx": rcpt.tx_hash},
          f"project {project_id}: the {role} is now {who}")


@app.command("bond")
@handle_errors
def bond_cmd(
    project_id: int = typer.Argument(..., help="Project id."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Post the aggregator's bond (the aggregator; `aggregator serve` does it before its first
    finalize). A missed finalize deadline or an upheld dispute pays it to the round's revealers."""
    client = _signed(config, rpc, deployment, account, dev_account)
    rcpt = client.post_bond(project_id)
    _done(as_json, {"project_id": project_id, "tx": rcpt.tx_hash}, f"bond posted for project {project_id}")


@app.command("forfeit")
@handle_errors
def forfeit_cmd(
    project_id: int = typer.Argument(..., help="Project id."),
    round_: int = typer.Argument(..., metavar="ROUND", help="The round whose reveal window closed."),
    trainer: str = typer.Argument(..., help="The trainer that committed and never revealed."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Take the commit deposit of a commitment that was never revealed (anyone may) and hand it to
    the round's revealers: committing without revealing is not free."""
    client = _signed(config, rpc, deployment, account, dev_account)
    rcpt = client.forfeit_deposit(project_id, round_, checksum(trainer, "trainer"))
    _done(as_json, {"project_id": project_id, "round": round_, "trainer": trainer, "tx": rcpt.tx_hash},
          f"deposit of {trainer} in round {round_} forfeited to the round's revealers")


@app.command("sweep")
@handle_errors
def sweep_cmd(
    project_id: int = typer.Argument(..., help="Project id."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """After the claim window closed (anyone may): credit the owner with what no leaf claimed."""
    client = _signed(config, rpc, deployment, account, dev_account)
    rcpt = client.sweep(project_id)
    _done(as_json, {"project_id": project_id, "tx": rcpt.tx_hash},
          f"project {project_id} swept: unclaimed rewards credited to the owner (`market withdraw`)")


@app.command("withdraw")
@handle_errors
def withdraw_cmd(
    project_id: int = typer.Argument(..., help="Project id."),
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    account: str = AccountOpt,
    dev_account: int = DevAccountOpt,
    config: Path = ConfigOpt,
    to: str = typer.Option(None, "--to", metavar="ADDRESS",
                           help="Pay to this address instead of the signer's (e.g. when the token blocks it)."),
    as_json: bool = JsonOpt,
) -> None:
    """Withdraw what the project credits the signer: refunded dispute bonds, a budget returned to an
    owner who did not end the project itself, an aggregator's bond (trainers: `trainer withdraw`),
    to the signer or to --to."""
    recipient = checksum(to, "--to") if to else None
    s = _settings(config, rpc=rpc, deployment=deployment)
    client = _client(s, account, dev_account, need_account=True)
    info = client.project(project_id)
    me = client.account_address
    credit = client.credit_of(project_id, me)
    tx = client.withdraw_credit(project_id, recipient).tx_hash if credit else None
    if as_json:
        emit_json({"project_id": project_id, "account": me, "recipient": recipient or me, "credit": credit, "tx": tx})
    elif credit:
        console.print(f"withdrew {_amount(client, info.token, credit)} of credit from project {project_id}"
                      f" to {recipient or me}")
    else:
        console.print(f"{me} has no credit in project {project_id}: nothing to withdraw")


def _load_plugins() -> None:
    """Commands other packages offer under `market` (entry-point group `market.commands`), so that
    `market audit` can run the aggregator's replay without `market` importing `aggregator`.

    A plugin is imported only when its command is invoked (importing it pulls in torch); otherwise
    a placeholder lists it in `--help`.
    """
    import sys
    from importlib.metadata import entry_points

    invoked = sys.argv[1] if len(sys.argv) > 1 else None
    for ep in entry_points(group="market.commands"):
        if ep.name == invoked:
            try:
                app.command(ep.name)(handle_errors(ep.load()))
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
                err_console.print(f"[yellow]warning:[/] plugin command {ep.name!r} could not be loaded: {exc}")
            continue
        app.command(ep.name, help=f"(from {ep.value.split(':')[0]}; run `market {ep.name} --help`)", add_help_option=False)(
            _placeholder
        )


def _placeholder() -> None:  # pragma: no cover - replaced before it can run
    raise typer.Exit(ExitCode.INTERNAL)


_load_plugins()

if __name__ == "__main__":
    app()

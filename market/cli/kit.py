"""What the `market`, `trainer` and `aggregator` CLIs share: one-line errors with meaningful exit
codes, `--json` output, account selection and the Rich console."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.markup import escape

from market._text import one_line
from market.chain.accounts import PASSWORD_ENV, Keystore, dev_account
from market.chain.profiles import ChainProfile, refuse_dev_key
from market.errors import ConfigError, ExitCode, MarketError, is_transient

console = Console(soft_wrap=True)
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

#: Exit codes beyond MarketError.exit_code (the whole table: market.errors.EXIT_CODES).
EXIT_INTERRUPTED = ExitCode.INTERRUPTED
EXIT_INTERNAL = ExitCode.INTERNAL


def fail(message: str, code: int) -> None:
    # escaped: messages quote TOML tables ("[market]") and code, which Rich would read as markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn any error of the market's tree into one line and its exit code; a connection error
    that escaped a client into one line and the chain's code; anything else into one line and
    exit 70 (MARKET_DEBUG=1 shows the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except Exception as exc:
            if os.environ.get("MARKET_DEBUG"):
                raise
            if isinstance(exc, MarketError):
                fail(one_line(exc, 600), exc.exit_code)
            if is_transient(exc):
                fail(f"a service stopped answering ({one_line(exc)}): check that the node is running"
                     " (`market stack status`) and run the command again", ExitCode.CHAIN)
            fail(f"{type(exc).__name__}: {one_line(exc, 400)} (set MARKET_DEBUG=1 for the traceback)", EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


def format_amount(base_units: int, decimals: int = 18, symbol: str = "ETH") -> str:
    """`1500000000000000000` -> `"1.5 ETH"`: exact (no float rounding), trailing zeros dropped.
    `--json` output keeps base units (wei); tables and messages use this."""
    from decimal import Decimal

    text = format(Decimal(int(base_units)).scaleb(-decimals), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} {symbol}"


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(obj.to_json() if hasattr(obj, "to_json") else asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        return "0x" + obj.hex()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def emit_json(obj: Any) -> None:
    """Print `obj` as JSON on stdout (bytes as 0x-hex, dataclasses as objects)."""
    sys.stdout.write(json.dumps(_jsonable(obj), indent=2, default=str) + "\n")


def read_password(prompt: str = "Password") -> str:
    """From $MARKET_PASSWORD, else a hidden prompt (never a flag)."""
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise ConfigError(f"no password: set ${PASSWORD_ENV} or run in a terminal to be prompted")
    return str(typer.prompt(prompt, hide_input=True))


def pick_account(
    account: str | None,
    dev: int | None,
    keystore: Path,
    chain_id: int | None = None,
    profile: ChainProfile | None = None,
) -> LocalAccount:
    """The signing account: a keystore entry (`--account NAME`) or anvil dev key (`--dev-account N`),
    either refused when it is a dev key and `chain_id` is not a local chain (per `profile`, default
    the built-in local chains)."""
    if account and dev is not None:
        raise ConfigError("give either --account or --dev-account, not both")
    if dev is not None:
        if chain_id is not None:
            refuse_dev_key(chain_id, "--dev-account", profile)
        return dev_account(dev)
    if account:
        acct: LocalAccount = Keystore(keystore).load(account, read_password(f"Password for {account}"))
        if chain_id is not None:
            refuse_dev_key(chain_id, f"account {account!r}", profile, str(acct.address))
        return acct
    raise ConfigError("this command signs a transaction: pass --account NAME or --dev-account N")


AccountOpt = typer.Option(None, "--account", "-a", help="Keystore account name (password from $MARKET_PASSWORD or a prompt).")
DevAccountOpt = typer.Option(None, "--dev-account", help="Use anvil's dev account N (local chains only).")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file (default ./market.toml or $MARKET_CONFIG).")
RpcOpt = typer.Option(None, "--rpc", help="JSON-RPC URL of the node, or 'embedded' (default http://127.0.0.1:8545).")
DeploymentOpt = typer.Option(None, "--deployment", help="Deployment file written by `market deploy`.")
ProfileOpt = typer.Option(None, "--profile", help="Chain profile, e.g. base-sepolia or 'sepolia:confirmations=12'"
                          " (replaces [market] profile and [profile]; list them with `market profiles`).")

"""`trainer account new | import | list | new-key | rotate-key`: encrypted keystore accounts and their
X25519 encryption keys (what opens a project's sealed global models)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from market.chain.accounts import PASSWORD_ENV, Keystore
from market.cli.kit import JsonOpt, console, emit_json, handle_errors, read_password
from market.protocol.envelope import fingerprint
from trainer.cli._options import ConfigOpt, KeystoreOpt, settings
from trainer.errors import ConfigError

account_app = typer.Typer(help="Encrypted keystore accounts (passwords from a prompt or $MARKET_PASSWORD).", no_args_is_help=True)


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
    """Create a fresh key, encrypted in the keystore; prints its address and how to fund it."""
    s = settings(config, keystore=keystore)
    entry = Keystore(s.keystore).new(name, _new_password())
    fund = f"market fund {entry.name}"
    if as_json:
        emit_json({"name": entry.name, "address": entry.address, "path": entry.path, "fund_local": fund})
    else:
        console.print(f"account [bold]{entry.name}[/] {entry.address} written to {entry.path}", highlight=False, soft_wrap=True)
        # a new key holds nothing: `join` would fail with "insufficient funds" without this step
        console.print(f"it holds no ether yet: on a local chain run `{fund}` (10 ether from a dev account);"
                      f" elsewhere send ether to {entry.address}", highlight=False, soft_wrap=True)


@account_app.command("import")
@handle_errors
def account_import(
    name: str = typer.Argument(..., help="A name for the account."),
    keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Import a private key, read from a hidden prompt or from stdin (never from a flag)."""
    s = settings(config, keystore=keystore)
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
    s = settings(config, keystore=keystore)
    entries = Keystore(s.keystore).list()
    if as_json:
        emit_json([{"name": e.name, "address": e.address, "path": e.path} for e in entries])
        return
    if not entries:
        console.print(f"no accounts in {s.keystore}: create one with `trainer account new NAME`")
        return
    t = Table("name", "address", "file")
    t.columns[1].no_wrap = True
    t.columns[2].overflow = "fold"
    for e in entries:
        t.add_row(e.name, e.address, str(e.path))
    console.print(t)


def _show_key(name: str, public_key: str, what: str, as_json: bool) -> None:
    fp = fingerprint(bytes.fromhex(public_key))
    if as_json:
        emit_json({"name": name, "public_key": public_key, "fingerprint": fp})
        return
    console.print(f"{what} encryption key of account [bold]{name}[/]: public key {public_key} (fingerprint {fp})",
                  highlight=False, soft_wrap=True)
    console.print("give the public key to the project's owner to be listed in model_readers", highlight=False, soft_wrap=True)


def _unlocked(name: str, config: Path, keystore: Path) -> tuple[Keystore, str]:
    """The keystore and `name`'s password, checked first: the key file is encrypted with it."""
    store = Keystore(settings(config, keystore=keystore).keystore)
    password = read_password(f"Password for {name}")
    store.load(name, password)
    return store, password


@account_app.command("new-key")
@handle_errors
def account_new_key(
    name: str = typer.Argument(..., help="The keystore account the key belongs to."),
    keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create the account's X25519 encryption key (encrypted with the account's password); prints its public key."""
    store, password = _unlocked(name, config, keystore)
    _show_key(name, store.new_encryption_key(name, password), "new", as_json)


@account_app.command("rotate-key")
@handle_errors
def account_rotate_key(
    name: str = typer.Argument(..., help="The keystore account whose encryption key is replaced."),
    keystore: Path = KeystoreOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Replace the account's encryption key, keeping the old one so models sealed for it still open."""
    store, password = _unlocked(name, config, keystore)
    _show_key(name, store.rotate_encryption_key(name, password), "rotated", as_json)

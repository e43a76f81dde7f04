"""Accounts: encrypted eth-account keystores, and anvil's well-known dev accounts for local chains.

Passwords come from a prompt or an environment variable, never from a command-line flag (flags end
up in shell history and `ps`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import Wei

from market.errors import ConfigError
from market.files import atomic_write

#: anvil's default mnemonic: its accounts are funded on every fresh local chain.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
PASSWORD_ENV = "MARKET_PASSWORD"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

Account.enable_unaudited_hdwallet_features()


def dev_account(index: int) -> LocalAccount:
    """anvil's dev account `index` (m/44'/60'/0'/0/index of the well-known test mnemonic)."""
    if index < 0:
        raise ConfigError(f"dev account index must be >= 0, got {index}")
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def fund_embedded(w3: Web3, addresses: list[str], amount_wei: int = 10**22) -> None:
    """Give addresses ETH on an embedded eth-tester chain (whose own accounts are unlocked)."""
    source = w3.eth.accounts[0]
    for a in addresses:
        to = Web3.to_checksum_address(a)
        if w3.eth.get_balance(to) < amount_wei // 2:
            w3.eth.send_transaction({"from": source, "to": to, "value": Wei(amount_wei)})


@dataclass(frozen=True)
class KeystoreEntry:
    name: str
    address: str
    path: Path


class Keystore:
    """A directory of encrypted keystore files (Web3 Secret Storage, as geth and cast write them)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ConfigError(f"bad account name {name!r}: use letters, digits, '.', '_' or '-'")
        return self.directory / f"{name}.json"

    def new(self, name: str, password: str) -> KeystoreEntry:
        return self.import_key(name, "0x" + os.urandom(32).hex(), password)

    def import_key(self, name: str, private_key: str, password: str) -> KeystoreEntry:
        path = self._path(name)
        if path.exists():
            raise ConfigError(f"an account named {name!r} already exists at {path}: choose another name")
        if not password:
            raise ConfigError("refusing an empty password: set one at the prompt or in $" + PASSWORD_ENV)
        try:
            acct = Account.from_key(private_key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"malformed private key: expected 32 bytes of hex ({exc.__class__.__name__})") from None
        atomic_write(path, json.dumps(Account.encrypt(acct.key, password)).encode(), mode=0o600)
        return KeystoreEntry(name, acct.address, path)

    def list(self) -> list[KeystoreEntry]:
        if not self.directory.is_dir():
            return []
        out = []
        for p in sorted(self.directory.glob("*.json")):
            try:
                address = Web3.to_checksum_address("0x" + json.loads(p.read_text())["address"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a keystore file: not listed
            out.append(KeystoreEntry(p.stem, address, p))
        return out

    def load(self, name: str, password: str) -> LocalAccount:
        path = self._path(name)
        if not path.exists():
            raise ConfigError(f"no account named {name!r} in {self.directory}: create it with `account new`")
        try:
            key = Account.decrypt(json.loads(path.read_text()), password)
        except ValueError:
            raise ConfigError(f"wrong password for account {name!r}") from None
        return Account.from_key(key)

"""Accounts: encrypted eth-account keystores, and anvil's well-known dev accounts for local chains.

Next to an account `<name>.json` the keystore can hold its X25519 encryption key (the key update
envelopes are wrapped to) as `<name>.x25519.pem`: PKCS#8, encrypted with the account's password
(`cryptography`'s BestAvailableEncryption). Rotating it keeps the old key as
`<name>.x25519-<fingerprint>.pem`, so envelopes sealed before the rotation still open.

Passwords come from a prompt or an environment variable, never from a command-line flag (flags end
up in shell history and `ps`).
"""

from __future__ import annotations

import builtins
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import Wei

from market.errors import ConfigError
from market.files import atomic_write

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

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


_ENC_SUFFIX = ".x25519"


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

    def address_of(self, name: str) -> str:
        """The address of account `name`, read without its password."""
        for entry in self.list():
            if entry.name == name:
                return entry.address
        known = ", ".join(e.name for e in self.list()) or "none"
        raise ConfigError(f"no account named {name!r} in {self.directory} (accounts: {known}): pass an address"
                          " or create the account with `trainer account new`")

    def load(self, name: str, password: str) -> LocalAccount:
        path = self._path(name)
        if not path.exists():
            raise ConfigError(f"no account named {name!r} in {self.directory}: create it with `account new`")
        try:
            key = Account.decrypt(json.loads(path.read_text()), password)
        except ValueError:
            raise ConfigError(f"wrong password for account {name!r}") from None
        return Account.from_key(key)

    def _encryption_path(self, name: str) -> Path:
        return self._path(name).with_name(f"{name}{_ENC_SUFFIX}.pem")

    def has_encryption_key(self, name: str) -> bool:
        """Whether account `name` has a current encryption key (no password needed)."""
        return self._encryption_path(name).exists()

    def new_encryption_key(self, name: str, password: str) -> str:
        """Create the X25519 encryption key of account `name`; returns its public key hex (what
        the project spec lists). Refuses to overwrite one: use `rotate_encryption_key`."""
        path = self._encryption_path(name)
        if path.exists():
            raise ConfigError(f"account {name!r} already has an encryption key at {path}: rotate it instead")
        return self._write_encryption_key(path, password)

    def rotate_encryption_key(self, name: str, password: str) -> str:
        """Replace the encryption key of `name` by a fresh one, keeping the old one (re-encrypted
        files are untouched) so envelopes sealed to it still open; returns the new public key hex."""
        from market.protocol.envelope import fingerprint

        path = self._encryption_path(name)
        old = self.load_encryption_key(name, password)
        retired = path.with_name(f"{name}{_ENC_SUFFIX}-{fingerprint(old.public_key())}.pem")
        os.replace(path, retired)
        return self._write_encryption_key(path, password)

    def _write_encryption_key(self, path: Path, password: str) -> str:
        from cryptography.hazmat.primitives import serialization

        from market.protocol.envelope import generate_key, public_key_hex

        if not password:
            raise ConfigError("refusing an empty password: set one at the prompt or in $" + PASSWORD_ENV)
        key = generate_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password.encode()),
        )
        atomic_write(path, pem, mode=0o600)
        return public_key_hex(key)

    def load_encryption_key(self, name: str, password: str) -> X25519PrivateKey:
        """The current X25519 encryption key of account `name`."""
        path = self._encryption_path(name)
        if not path.exists():
            raise ConfigError(
                f"account {name!r} has no encryption key in {self.directory}: create one with `account new-key`"
            )
        return _read_encryption_key(path, name, password)

    def encryption_keys(self, name: str, password: str) -> builtins.list[X25519PrivateKey]:
        """The current key of `name` first, then its retired ones (newest file first): what
        `open_envelope` takes, so a rotation loses nothing."""
        keys = [self.load_encryption_key(name, password)]
        retired = sorted(
            self.directory.glob(f"{name}{_ENC_SUFFIX}-*.pem"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        keys += [_read_encryption_key(p, name, password) for p in retired]
        return keys


def _read_encryption_key(path: Path, name: str, password: str) -> X25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey as _X25519

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password.encode())
    except (TypeError, ValueError):
        raise ConfigError(f"wrong password for the encryption key of account {name!r} ({path.name})") from None
    if not isinstance(key, _X25519):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an X25519 encryption key")
    return key

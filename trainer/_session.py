"""What every trainer command opens: the chain (with retries), the deployment's client, the
content store, and who the trainer is (a keystore account, an anvil dev account, or an address
for read-only views), and the keys that open a project's sealed global models."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from market.chain import MarketClient, ProjectInfo, checksum, connect
from market.chain.accounts import Keystore, dev_account
from market.chain.deployment import Deployment
from market.chain.profiles import ChainProfile
from market.cli.kit import pick_account, read_password
from market.errors import ConfigError as MarketConfigError
from market.errors import NodeUnreachable
from market.storage import open_store
from trainer.config import TrainerSettings
from trainer.errors import ConfigError, UnknownProject
from trainer.participant import Participant, own_privacy

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from market.protocol.documents import ProjectSpec

__all__ = ["Session", "connect_with_retry", "load_model_keys", "open_session", "store_for"]


def connect_with_retry(rpc: str, retries: int, backoff: float = 0.5, profile: ChainProfile | None = None) -> Web3:
    """`connect(rpc, profile=profile)`, retrying `retries` times (0.5 s, 1 s, 2 s, ...) before giving up."""
    if rpc == "embedded":
        raise ConfigError("an embedded chain lives inside one process: point --rpc at a node (`market stack up`)")
    for attempt in range(retries + 1):
        try:
            return connect(rpc, profile=profile)
        except NodeUnreachable as exc:
            if attempt == retries:
                raise NodeUnreachable(f"{exc} (tried {retries + 1} times)") from None
            time.sleep(min(4.0, backoff * 2**attempt))
    raise AssertionError("unreachable")


def store_for(settings: TrainerSettings) -> Any:
    """The content store the settings name: an IPFS RPC API (multiaddr or URL) or embedded:DIR."""
    url = settings.ipfs.strip()
    if url.startswith("embedded:"):
        return open_store(url)
    return open_store(url, retries=settings.ipfs_retries)


@dataclass
class Session:
    settings: TrainerSettings
    client: MarketClient
    account: LocalAccount | None
    who: tuple[str | None, int | None, str | None] = (None, None, None)
    #: the keystore account the trainer acts as (None: a dev account or a bare --address)
    account_name: str | None = None
    _address: str | None = None
    _store: Any = None
    _model_keys: list[X25519PrivateKey] | None = None

    @property
    def address(self) -> str:
        """The trainer's address: the signing account's, else resolved (on first use) from
        --address / --dev-account / --account without decrypting anything."""
        if self._address is None:
            if self.account is not None:
                self._address = str(self.account.address)
            else:
                self._address = resolve_address(self.settings, *self.who)
        return self._address

    @property
    def has_identity(self) -> bool:
        account, dev, address = self.who
        return self.account is not None or any(x is not None for x in (account, dev, address)) or self.settings.account is not None

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = store_for(self.settings)
        return self._store

    def participant(self, on_wait: Any = None) -> Participant:
        return Participant(
            self.client, self.store, self.settings.state, poll_interval=self.settings.poll_interval,
            on_wait=on_wait, address=self.address, privacy=own_privacy(self.settings.dp),
        )

    def project(self, project_id: int) -> ProjectInfo:
        """The project, or UnknownProject (checked against projectCount, never guessed)."""
        count = self.client.project_count()
        if project_id < 1 or project_id > count:
            raise UnknownProject(
                f"no project {project_id} on the deployment at {self.client.address} (projects: 1..{count}):"
                " check the project id and --deployment"
            )
        return self.client.project(project_id)

    def model_keys(self, spec: ProjectSpec, project_id: int, model_round: int) -> list[X25519PrivateKey]:
        """What opens round `model_round`'s global model: nothing for public models and the owner's
        initial weights (round -1), else this account's encryption keys, current and retired (a
        rotation must not lock the trainer out of models sealed before it), decrypted once."""
        if not spec.encrypts_models or model_round < 0:
            return []
        if self._model_keys is None:
            self._model_keys = load_model_keys(self.settings, self.account_name, project_id)
        return self._model_keys

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def resolve_address(settings: TrainerSettings, account: str | None, dev: int | None, address: str | None) -> str:
    """Who the trainer is, without decrypting anything (for read-only views and `train`)."""
    given = [x for x in (account, dev, address) if x is not None]
    if len(given) > 1:
        raise ConfigError("give one of --account, --dev-account or --address")
    if address is not None:
        try:
            return checksum(address, "--address")
        except MarketConfigError as exc:
            raise ConfigError(str(exc)) from None
    if dev is not None:
        return str(dev_account(dev).address)
    name = account or settings.account
    if name is None:
        raise ConfigError("who is training? pass --account NAME (see `trainer account list`) or --dev-account N")
    for entry in Keystore(settings.keystore).list():
        if entry.name == name:
            return entry.address
    raise ConfigError(f"no account named {name!r} in {settings.keystore}: create it with `trainer account new {name}`")


def load_model_keys(settings: TrainerSettings, name: str | None, project_id: int) -> list[X25519PrivateKey]:
    """Keystore account `name`'s encryption keys, or one line on how to get one listed."""
    keystore = Keystore(settings.keystore)
    if name is None or not keystore.has_encryption_key(name):
        who = f"account {name!r}" if name else "this account (a dev account or --address has no keystore entry)"
        raise ConfigError(
            f"project {project_id} seals its models for its readers; {who} has no encryption key: create one with"
            f" `trainer account new-key {name or 'NAME'}` and ask the owner to list its public key in the project's"
            " model_readers"
        )
    return keystore.encryption_keys(name, read_password(f"Password for the encryption key of {name}"))


def open_session(
    settings: TrainerSettings, *, account: str | None = None, dev: int | None = None, address: str | None = None,
    sign: bool = False,
) -> Session:
    """Deployment file, chain (retried), then the account: decrypted only when `sign`."""
    deployment = Deployment.load(settings.deployment)
    w3 = connect_with_retry(settings.rpc, settings.rpc_retries, profile=deployment.chain_profile)
    if sign:
        if address is not None:
            raise ConfigError("--address is for read-only commands; this one signs: pass --account or --dev-account")
        name = account or (settings.account if dev is None else None)
        acct = pick_account(name, dev, settings.keystore, int(w3.eth.chain_id), deployment.chain_profile)
        return Session(settings, deployment.client(w3, acct), acct, account_name=name)
    name = account or (settings.account if dev is None and address is None else None)
    return Session(settings, deployment.client(w3), None, (account, dev, address), account_name=name)

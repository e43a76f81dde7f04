"""Chain profiles: what differs between anvil on loopback and a public testnet or L2.

A `ChainProfile` names one chain (its id), how deep a block must be before its events count
(`confirmations`), how many blocks one `eth_getLogs` call may span (public RPC providers cap
ranges, typically at 2,000-10,000 blocks), how often to poll, the fee policy, the gas-limit
headroom, and whether anvil's well-known dev keys may sign there (only on local chains: their
private keys are public, so anything sent to them on a real chain is taken within seconds).

No profile holds an RPC URL: the user supplies one (`[market] rpc`), from their own provider.
Profiles are chosen by name through a `market._spec.Registry`, so a typo names the closest one and
a spec string can override fields: `"base-sepolia:confirmations=20"`.

    >>> profile("base-sepolia").chain_id
    84532
    >>> profile("base-sepolia:confirmations=20").confirmations
    20
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from market._spec import Registry
from market.errors import ChainMismatch, ConfigError, DevKeyRefused, TransactionError

if typing.TYPE_CHECKING:
    from web3 import Web3

__all__ = [
    "FIELDS",
    "LOCAL_CHAIN_IDS",
    "PROFILES",
    "PUBLIC_CHAINS",
    "ChainProfile",
    "check_chain",
    "dev_keys_allowed",
    "for_chain",
    "is_dev_address",
    "profile",
    "refuse_dev_key",
]

GWEI = 10**9

#: Public chains by id: a profile may never allow dev keys on one of these, whatever it says.
PUBLIC_CHAINS: dict[int, str] = {
    1: "ethereum",
    11155111: "sepolia",
    8453: "base",
    84532: "base-sepolia",
    10: "optimism",
    11155420: "optimism-sepolia",
    42161: "arbitrum-one",
    421614: "arbitrum-sepolia",
}


@dataclass(frozen=True)
class ChainProfile:
    """How the market talks to one chain. Every field can be overridden from market.toml's
    `[profile]` table or a spec string."""

    name: str
    chain_id: int
    #: blocks an event must be buried under before readers act on it (0: the head counts)
    confirmations: int = 0
    #: blocks per eth_getLogs call (a page the node refuses as too large is halved)
    log_page_size: int = 2_000
    #: seconds between polls of the head when waiting for a block, a deadline or an event
    poll_interval: float = 1.0
    #: "eip1559": maxFeePerGas = base fee x base_fee_multiplier + priority fee; "legacy": gasPrice
    fee_policy: Literal["eip1559", "legacy"] = "eip1559"
    base_fee_multiplier: float = 2.0
    #: the tip; None asks the node (eth_maxPriorityFeePerGas)
    priority_fee_wei: int | None = None
    #: legacy only: gasPrice = the node's eth_gasPrice x this
    gas_price_multiplier: float = 1.1
    #: refuse to send when the fee per gas would exceed this (None: no cap)
    max_fee_wei: int | None = None
    #: gas limit = the node's estimate x this (L2 estimates move with the L1 data fee)
    gas_limit_headroom: float = 1.2
    #: whether anvil's dev keys (--dev-account, `market fund`) may sign here: local chains only
    dev_keys: bool = False
    #: what the contract's `block.number` (every deadline) counts: "block", the chain's own blocks;
    #: "l1_block" on Arbitrum, where it is the L1 block number each block header carries
    clock: Literal["block", "l1_block"] = "block"

    def __post_init__(self) -> None:
        where = f"chain profile {self.name!r}"
        if not self.name:
            raise ConfigError("a chain profile needs a name")
        if self.chain_id < 1:
            raise ConfigError(f"{where}: chain_id must be a positive integer, got {self.chain_id}")
        if self.confirmations < 0 or self.log_page_size < 1:
            raise ConfigError(f"{where}: confirmations must be >= 0 and log_page_size >= 1")
        if self.poll_interval <= 0:
            raise ConfigError(f"{where}: poll_interval must be a positive number of seconds")
        if self.base_fee_multiplier < 1 or self.gas_price_multiplier < 1 or self.gas_limit_headroom < 1:
            raise ConfigError(f"{where}: base_fee_multiplier, gas_price_multiplier and gas_limit_headroom must be >= 1")
        if any(v is not None and v < 0 for v in (self.priority_fee_wei, self.max_fee_wei)):
            raise ConfigError(f"{where}: priority_fee_wei and max_fee_wei must not be negative")
        if self.dev_keys and self.chain_id in PUBLIC_CHAINS:
            raise ConfigError(
                f"{where} allows dev keys on chain {self.chain_id} ({PUBLIC_CHAINS[self.chain_id]}), a public chain:"
                " anvil's keys are public and anything sent to them is stolen; remove dev_keys and use a keystore"
            )

    def with_overrides(self, **fields: Any) -> ChainProfile:
        """This profile with `fields` replaced. A new chain_id drops dev_keys unless it is set too:
        dev keys are allowed per chain, on purpose, never inherited."""
        if "chain_id" in fields and fields["chain_id"] != self.chain_id and "dev_keys" not in fields:
            fields = {**fields, "dev_keys": False}
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise ConfigError(f"chain profile has no field {', '.join(unknown)}; it takes {', '.join(FIELDS)}")
        return dataclasses.replace(self, **fields)

    def contract_block(self, w3: Web3) -> int:
        """The head as the contract's `block.number` sees it: what deadlines are compared with."""
        if self.clock == "block":
            return int(w3.eth.block_number)
        value: Any = w3.eth.get_block("latest").get("l1BlockNumber")
        if value is None:
            raise ChainMismatch(
                f"profile {self.name!r} reads deadlines in L1 blocks, but the node's blocks carry no l1BlockNumber:"
                " is it an Arbitrum chain? set clock = \"block\" in [profile] otherwise"
            )
        return int(value, 16) if isinstance(value, str) else int(value)

    # ------------------------------------------------------------------ fees

    def fees(self, w3: Web3) -> dict[str, int]:
        """The fee fields of a transaction under this policy, quoted from the node now:
        `type`, and `maxFeePerGas` + `maxPriorityFeePerGas` (EIP-1559) or `gasPrice` (legacy)."""
        if self.fee_policy == "legacy":
            price = int(int(w3.eth.gas_price) * self.gas_price_multiplier)
            return {"type": 0, "gasPrice": self._capped(price, price)}
        base = int(w3.eth.get_block("latest").get("baseFeePerGas") or 0)
        tip = self.priority_fee_wei
        if tip is None:
            try:
                tip = int(w3.eth.max_priority_fee)
            except Exception as exc:  # noqa: BLE001 - any failure means "this node does not suggest one"
                raise TransactionError(
                    f"the node does not suggest a priority fee ({type(exc).__name__}): set priority_fee_wei in"
                    f" [profile] (profile {self.name!r})"
                ) from None
        max_fee = self._capped(int(base * self.base_fee_multiplier) + tip, base + tip)
        return {"type": 2, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": min(tip, max_fee)}

    def _capped(self, wanted: int, least: int) -> int:
        """`wanted` held to max_fee_wei; refused when even `least` (what the chain charges now) is over it."""
        if self.max_fee_wei is None or wanted <= self.max_fee_wei:
            return wanted
        if least > self.max_fee_wei:
            raise TransactionError(
                f"gas costs {least / GWEI:.4g} gwei now, over profile {self.name!r}'s cap of"
                f" {self.max_fee_wei / GWEI:.4g} gwei (max_fee_wei): wait for cheaper blocks or raise the cap"
            )
        return self.max_fee_wei


#: Overridable fields and their types (what `[profile]` and spec strings may set).
FIELDS: dict[str, Any] = {f.name: typing.get_type_hints(ChainProfile)[f.name] for f in dataclasses.fields(ChainProfile)}

PROFILES: Registry[ChainProfile] = Registry("chain profile", error=ConfigError)


def _register(p: ChainProfile, aliases: tuple[str, ...] = ()) -> ChainProfile:
    # registered by canonical name ("base_sepolia"): the registry folds "-" to "_" when looking up
    PROFILES.add(PROFILES.canonical(p.name), functools.partial(ChainProfile.with_overrides, p), aliases)
    return p


# Local chains: blocks are final when mined, fees are a formality, dev keys are funded.
LOCAL = _register(ChainProfile("local", 31337, poll_interval=1.0, priority_fee_wei=GWEI, dev_keys=True),
                  aliases=("anvil", "hardhat"))
EMBEDDED = _register(ChainProfile("embedded", 131277322940537, priority_fee_wei=GWEI, dev_keys=True),
                     aliases=("eth_tester",))

# Ethereum L1: 12 s slots; reorgs of 1-2 blocks happen, finality takes 2 epochs (~13 min, 64 blocks).
_register(ChainProfile("ethereum", 1, confirmations=12, log_page_size=2_000, poll_interval=12.0),
          aliases=("mainnet",))
_register(ChainProfile("sepolia", 11155111, confirmations=6, log_page_size=2_000, poll_interval=12.0))
# OP Stack (Base, OP): 2 s blocks from one sequencer; its unsafe head can still reorg until the
# batch lands on L1, so hold back ~1 min. Tips are tiny: the node's suggestion, not a fixed gwei.
_register(ChainProfile("base", 8453, confirmations=30, log_page_size=5_000, poll_interval=2.0))
_register(ChainProfile("base-sepolia", 84532, confirmations=30, log_page_size=5_000, poll_interval=2.0))
_register(ChainProfile("optimism", 10, confirmations=30, log_page_size=5_000, poll_interval=2.0),
          aliases=("op_mainnet",))
_register(ChainProfile("optimism-sepolia", 11155420, confirmations=30, log_page_size=5_000, poll_interval=2.0),
          aliases=("op_sepolia",))
# Arbitrum: ~0.25 s blocks, no tips (the priority fee is ignored), gas estimates include the L1
# data fee, which moves with L1 prices: more headroom. `block.number` inside a contract is the L1
# block number (~12 s), so deadlines count L1 blocks while logs are paged in L2 blocks.
_register(ChainProfile("arbitrum-one", 42161, confirmations=120, log_page_size=10_000, poll_interval=1.0,
                       priority_fee_wei=0, gas_limit_headroom=1.5, clock="l1_block"), aliases=("arbitrum",))
_register(ChainProfile("arbitrum-sepolia", 421614, confirmations=120, log_page_size=10_000, poll_interval=1.0,
                       priority_fee_wei=0, gas_limit_headroom=1.5, clock="l1_block"))

#: The chain ids of the built-in local profiles: where dev keys may sign without a profile saying so.
LOCAL_CHAIN_IDS = frozenset(PROFILES.get(n)().chain_id for n in PROFILES if PROFILES.get(n)().dev_keys)


def profile(spec: str | ChainProfile, overrides: Mapping[str, Any] | None = None) -> ChainProfile:
    """The profile `spec` names (`"base-sepolia"`, `"base-sepolia:confirmations=20"`), with typed
    `overrides` on top (market.toml's `[profile]` table, already checked by market.cli.config)."""
    kwargs: dict[str, Any] = {}
    if isinstance(spec, ChainProfile):
        base = spec
    else:
        name, kwargs = PROFILES.parse(spec, extras={k: v for k, v in FIELDS.items() if k != "name"})
        base = PROFILES.create(name)
    return base.with_overrides(**{**kwargs, **(overrides or {})})


def for_chain(chain_id: int) -> ChainProfile:
    """The built-in profile of `chain_id`, else a cautious one for an unknown chain (no dev keys,
    a few confirmations, the node's fee suggestions)."""
    for name in PROFILES:
        p = PROFILES.create(name)
        if p.chain_id == chain_id:
            return p
    return ChainProfile(f"chain-{chain_id}", chain_id, confirmations=12, poll_interval=2.0)


def check_chain(chain_id: int, expected: ChainProfile, where: str) -> None:
    """Refuse a node (at `where`) whose chain id is not the profile's: one line saying which chain
    it is and what to change."""
    if chain_id == expected.chain_id:
        return
    known = for_chain(chain_id)
    hint = f" (profile {known.name!r})" if not known.name.startswith("chain-") else ""
    raise ChainMismatch(
        f"the node at {where} is chain {chain_id}{hint} but profile {expected.name!r} is chain {expected.chain_id}:"
        f" point rpc at a {expected.name} node, or use the profile ([market] profile) and deployment file of"
        f" chain {chain_id}"
    )


# ---------------------------------------------------------------------- dev keys

#: How many of anvil's mnemonic accounts count as dev keys (anvil funds 10 by default; our stack 30).
_DEV_KEYS = 256


@functools.cache
def _dev_addresses() -> frozenset[str]:
    # derived only when a non-local chain is in use: ~1 ms a key, never on anvil
    from eth_account import Account
    from eth_account.hdaccount import key_from_seed, seed_from_mnemonic

    from market.chain.accounts import DEV_MNEMONIC

    seed = seed_from_mnemonic(DEV_MNEMONIC, "")
    return frozenset(
        str(Account.from_key(key_from_seed(seed, f"m/44'/60'/0'/0/{i}")).address).lower() for i in range(_DEV_KEYS)
    )


def is_dev_address(address: str) -> bool:
    """Whether `address` is one of anvil's well-known dev accounts (whose private keys are public)."""
    return address.lower() in _dev_addresses()


def dev_keys_allowed(chain_id: int, profile_: ChainProfile | None = None) -> bool:
    """Dev keys may sign on `chain_id`: a profile that allows them for exactly this chain, or (with
    no profile) a built-in local chain."""
    if profile_ is not None:
        return profile_.dev_keys and profile_.chain_id == chain_id
    return chain_id in LOCAL_CHAIN_IDS


_USE_KEYSTORE = "sign with a keystore account (--account NAME; create one with `trainer account new NAME`)"


def refuse_dev_key(
    chain_id: int, what: str, profile_: ChainProfile | None = None, address: str | None = None,
    instead: str = _USE_KEYSTORE,
) -> None:
    """Refuse `what` (a flag, a command, a signing account) on a chain where dev keys may not sign,
    saying what to do `instead`. With `address`, only when it is a dev key."""
    if dev_keys_allowed(chain_id, profile_):
        return
    if address is not None and not is_dev_address(address):
        return
    name = PUBLIC_CHAINS.get(chain_id, f"chain {chain_id}")
    raise DevKeyRefused(
        f"{what} uses one of anvil's public dev keys, refused on {name} (chain {chain_id}), which is not a local"
        f" chain: {instead}"
    )

"""Signing and sending transactions from one eth-account key, safely from many tasks, with the fee
policy and gas headroom of a chain profile (market.chain.profiles)."""

from __future__ import annotations

import ast
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError, TransactionIndexingInProgress, TransactionNotFound, Web3RPCError

from market.chain import _rpc
from market.chain.profiles import ChainProfile, for_chain, refuse_dev_key
from market.chain.reverts import RevertDecoder
from market.errors import ChainError, InsufficientFunds, TransactionError


@dataclass(frozen=True)
class Receipt:
    """What a mined transaction cost and produced."""

    tx_hash: str
    block_number: int
    gas_used: int
    effective_gas_price: int
    logs: list[Any]

    @property
    def fee_wei(self) -> int:
        return self.gas_used * self.effective_gas_price


def revert_data(exc: BaseException) -> bytes | str | None:
    """Revert data from the embedded eth-tester chain, whose TransactionFailed carries it as the
    repr of a bytes object after "execution reverted: " (web3 does not translate it)."""
    if type(exc).__name__ != "TransactionFailed" or not exc.args:
        return None
    arg = exc.args[0]
    if isinstance(arg, bytes):
        return arg
    text = str(arg)
    prefix = "execution reverted: "
    if text.startswith(prefix) and text[len(prefix):].startswith(("b'", 'b"')):
        value = ast.literal_eval(text[len(prefix):])
        return value if isinstance(value, bytes) else None
    # eth-tester already decoded a string argument into text
    return text.removeprefix(prefix)


def _receipt_of(rcpt: Any) -> Receipt:
    return Receipt(
        tx_hash="0x" + bytes(rcpt["transactionHash"]).hex(),
        block_number=int(rcpt["blockNumber"]),
        gas_used=int(rcpt["gasUsed"]),
        effective_gas_price=int(rcpt.get("effectiveGasPrice", 0)),
        logs=list(rcpt["logs"]),
    )


class _Quoted:
    """The node as `ChainProfile.fees` sees it, with the latest block already read (in the batch
    that estimated the gas): the fee policy stays the profile's, one round trip is saved."""

    def __init__(self, w3: Web3, block: dict[str, Any]):
        self._w3 = w3
        self._block = block

    @property
    def eth(self) -> _Quoted:
        return self

    def get_block(self, _which: str) -> dict[str, Any]:
        return self._block

    @property
    def gas_price(self) -> int:
        return int(self._w3.eth.gas_price)

    @property
    def max_priority_fee(self) -> int:
        return int(self._w3.eth.max_priority_fee)


class TxSender:
    """Sends transactions from one key.

    Nonces are allocated under a lock from a local counter seeded from the node's pending count, so
    several threads may send at once; on a nonce error the counter is resynchronised. Gas is
    estimated first: a transaction that would revert is never sent, and the revert surfaces as a
    ContractRevert naming the custom error.

    Fees and gas headroom follow `profile` (default: the built-in profile of the node's chain). An
    anvil dev key is refused before its first signature on a chain where dev keys may not sign.
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        decoder: RevertDecoder,
        *,
        receipt_timeout: float = 120.0,
        profile: ChainProfile | None = None,
    ):
        self.w3 = w3
        self.account = account
        self.decoder = decoder
        self.receipt_timeout = receipt_timeout
        self.profile = profile
        self._resolved: ChainProfile | None = None  # `profile`, or the chain's, once checked
        self._lock = threading.Lock()
        self._next_nonce: int | None = None
        self._chain_id: int | None = None  # a node's chain id cannot change while it runs

    @property
    def address(self) -> str:
        return str(self.account.address)

    def _allocate_nonce(self) -> int:
        with self._lock:
            if self._next_nonce is None:
                self._next_nonce = self.w3.eth.get_transaction_count(self.account.address, "pending")
            nonce = self._next_nonce
            self._next_nonce += 1
            return nonce

    def _resync(self) -> None:
        with self._lock:
            self._next_nonce = None

    def _profile(self) -> ChainProfile:
        """The profile in force, checked once against the node: dev keys sign on local chains only."""
        with self._lock:
            if self._resolved is None:
                chain_id = int(self.w3.eth.chain_id)
                refuse_dev_key(chain_id, f"signing as {self.address}", self.profile, self.address)
                self._resolved = self.profile or for_chain(chain_id)
            return self._resolved

    def send(self, fn: Any, *, value: int = 0, action: str = "transaction", gas: int | None = None) -> Receipt:
        """Estimate, sign, send and wait for `fn` (a bound contract function)."""
        base_tx: dict[str, Any] = {"from": self.account.address, "value": value}
        estimated, balance = self._estimate_and_balance(fn, base_tx, gas, action)
        profile = self._profile()
        fees = profile.fees(self.w3)
        limit = int(estimated * profile.gas_limit_headroom) if gas is None else gas
        need = value + limit * fees.get("maxFeePerGas", fees.get("gasPrice", 0))
        if balance < need:
            raise InsufficientFunds(
                f"{action}: {self.account.address} holds {balance} wei but needs up to {need} wei"
                " (value + gas): fund the account"
            )
        for attempt in range(2):
            nonce = self._allocate_nonce()
            tx = fn.build_transaction(
                {
                    **base_tx,
                    "nonce": nonce,
                    "gas": limit,
                    "chainId": self.w3.eth.chain_id,
                    **fees,
                }
            )
            signed = self.account.sign_transaction(tx)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                break
            except (ValueError, Web3RPCError) as exc:
                if "nonce" in str(exc).lower() and attempt == 0:
                    self._resync()
                    continue
                raise self._value_error(exc, action) from None
        rcpt = self._receipt(bytes(tx_hash), action)
        if rcpt["status"] != 1:
            raise self._mined_revert(fn, base_tx, rcpt, action)
        return _receipt_of(rcpt)

    def send_data(self, to: str, data: str, *, value: int = 0, action: str = "transaction") -> Receipt:
        """`send` for a call already encoded (`data`, to contract `to`), over HTTP: the estimate,
        the balance and the latest block in one JSON-RPC batch, the transaction signed here and sent
        raw, without web3's contract and formatter machinery. Same checks and errors as `send`."""
        sender = self.account.address
        call = {"from": sender, "to": to, "data": data, "value": hex(value)}
        try:
            estimate, balance_, block = _rpc.batch(self.w3, [
                ("eth_estimateGas", [call]), ("eth_getBalance", [sender, "latest"]),
                ("eth_getBlockByNumber", ["latest", False])])
        except _rpc.RpcFailure as exc:
            raise self._rpc_error(exc, action) from None
        estimated, balance = int(estimate, 16), int(balance_, 16)
        profile = self._profile()
        quoted = _Quoted(self.w3, {"baseFeePerGas": int(block.get("baseFeePerGas") or "0x0", 16)})
        fees = profile.fees(cast("Web3", quoted))
        limit = int(estimated * profile.gas_limit_headroom)
        need = value + limit * fees.get("maxFeePerGas", fees.get("gasPrice", 0))
        if balance < need:
            raise InsufficientFunds(
                f"{action}: {sender} holds {balance} wei but needs up to {need} wei (value + gas): fund the account"
            )
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        for attempt in range(2):
            nonce = self._allocate_nonce()
            tx: dict[str, Any] = {"to": to, "data": data, "value": value, "nonce": nonce, "gas": limit,
                                  "chainId": self._chain_id, **fees}
            signed = self.account.sign_transaction(tx)
            try:
                tx_hash = _rpc.request(self.w3, "eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
                break
            except _rpc.RpcFailure as exc:
                if "nonce" in str(exc).lower() and attempt == 0:
                    self._resync()
                    continue
                raise self._rpc_error(exc, action) from None
        rcpt = self._receipt(bytes.fromhex(str(tx_hash).removeprefix("0x")), action)
        if rcpt["status"] != 1:
            try:
                # state moved between estimate and mining: replay at the mined block for the error
                _rpc.request(self.w3, "eth_call", [call, hex(int(rcpt["blockNumber"]))])
            except _rpc.RpcFailure as exc:
                if exc.data is not None:
                    raise self.decoder.decode(exc.data, action) from None
            raise TransactionError(f"{action}: transaction 0x{bytes(rcpt['transactionHash']).hex()} reverted")
        return _receipt_of(rcpt)

    def _rpc_error(self, exc: _rpc.RpcFailure, action: str) -> ChainError:
        """A ContractRevert naming the custom error for a reverted estimate; else what `send` says."""
        if exc.data is not None or "revert" in str(exc.error.get("message", "")).lower():
            return self.decoder.decode(exc.data or "0x", action)
        return self._value_error(ValueError(exc.error), action)

    def _receipt(self, tx_hash: bytes, action: str) -> Any:
        """The receipt of `tx_hash`, polled from a few milliseconds on (a local node mines at once;
        web3's fixed 0.1 s first wait would dominate a round there), backing off to half a second."""
        give_up = time.monotonic() + self.receipt_timeout
        delay = 0.005
        while True:
            try:
                return self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except (TransactionNotFound, TransactionIndexingInProgress):
                pass
            if time.monotonic() > give_up:
                raise TransactionError(
                    f"{action}: transaction 0x{tx_hash.hex()} not mined within {self.receipt_timeout:.0f} s:"
                    " check the node is mining"
                )
            time.sleep(delay)
            delay = min(2 * delay, 0.5)

    def _estimate_and_balance(self, fn: Any, base_tx: dict[str, Any], gas: int | None, action: str) -> tuple[int, int]:
        """The gas estimate of `fn` (or `gas` as given) and the sender's balance: in one JSON-RPC
        batch over HTTP; one by one when the node does not batch or the batch fails, so that a
        revert in the estimate is decoded below exactly as when it is sent alone."""
        if gas is None and isinstance(self.w3.provider, HTTPProvider):
            try:
                with self.w3.batch_requests() as batch:
                    batch.add(fn.estimate_gas(base_tx))
                    batch.add(self.w3.eth.get_balance(self.account.address))
                    answers: list[Any] = list(batch.execute())
                return int(answers[0]), int(answers[1])
            except Exception:  # noqa: BLE001, S110 - estimated again alone below, where its error is typed
                pass
        try:
            estimated = gas or fn.estimate_gas(base_tx)
        except ContractLogicError as exc:
            raise self.decoder.decode(exc.data, action) from None
        except (ValueError, Web3RPCError) as exc:
            raise self._value_error(exc, action) from None
        except Exception as exc:
            data = revert_data(exc)
            if data is None:
                raise
            raise self.decoder.decode(data, action) from None
        return int(estimated), int(self.w3.eth.get_balance(self.account.address))

    def _mined_revert(self, fn: Any, base_tx: dict[str, Any], rcpt: Any, action: str) -> ChainError:
        # State moved between estimate and mining (for example a deadline passed): replay the call at
        # the block it was mined in to recover the custom error.
        try:
            fn.call(base_tx, block_identifier=rcpt["blockNumber"])
        except ContractLogicError as exc:
            return self.decoder.decode(exc.data, action)
        except Exception:  # noqa: BLE001, S110 - the replay is best effort; the failure is reported below
            pass
        return TransactionError(f"{action}: transaction 0x{bytes(rcpt['transactionHash']).hex()} reverted")

    @staticmethod
    def _value_error(exc: Exception, action: str) -> ChainError:
        msg = exc.args[0] if exc.args else exc
        if isinstance(exc, Web3RPCError) and isinstance(exc.rpc_response, dict):
            msg = exc.rpc_response.get("error", msg)
        text = msg.get("message", str(msg)) if isinstance(msg, dict) else str(msg)
        if "insufficient funds" in text.lower():
            return InsufficientFunds(f"{action}: the sender cannot pay value + gas ({text}): fund the account")
        return TransactionError(f"{action} was refused by the node: {text}")

"""Signing and sending EIP-1559 transactions from one eth-account key, safely from many tasks."""

from __future__ import annotations

import ast
import threading
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError

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


class TxSender:
    """Sends transactions from one key.

    Nonces are allocated under a lock from a local counter seeded from the node's pending count, so
    several threads may send at once; on a nonce error the counter is resynchronised. Gas is
    estimated first: a transaction that would revert is never sent, and the revert surfaces as a
    ContractRevert naming the custom error.
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        decoder: RevertDecoder,
        *,
        receipt_timeout: float = 120.0,
        gas_margin: float = 1.2,
        priority_fee_wei: int = 1_000_000_000,
    ):
        self.w3 = w3
        self.account = account
        self.decoder = decoder
        self.receipt_timeout = receipt_timeout
        self.gas_margin = gas_margin
        self.priority_fee_wei = priority_fee_wei
        self._lock = threading.Lock()
        self._next_nonce: int | None = None

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

    def _fees(self) -> dict[str, int]:
        base = self.w3.eth.get_block("latest").get("baseFeePerGas") or 0
        tip = self.priority_fee_wei
        return {"maxFeePerGas": 2 * int(base) + tip, "maxPriorityFeePerGas": tip}

    def send(self, fn: Any, *, value: int = 0, action: str = "transaction", gas: int | None = None) -> Receipt:
        """Estimate, sign, send and wait for `fn` (a bound contract function)."""
        base_tx: dict[str, Any] = {"from": self.account.address, "value": value}
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
        fees = self._fees()
        balance = self.w3.eth.get_balance(self.account.address)
        limit = int(estimated * self.gas_margin) if gas is None else gas
        need = value + limit * fees["maxFeePerGas"]
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
                    "type": 2,
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
        try:
            rcpt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout)
        except TimeExhausted:
            raise TransactionError(
                f"{action}: transaction 0x{tx_hash.hex()} not mined within {self.receipt_timeout:.0f} s:"
                " check the node is mining"
            ) from None
        if rcpt["status"] != 1:
            raise self._mined_revert(fn, base_tx, rcpt, action)
        return Receipt(
            tx_hash="0x" + bytes(rcpt["transactionHash"]).hex(),
            block_number=int(rcpt["blockNumber"]),
            gas_used=int(rcpt["gasUsed"]),
            effective_gas_price=int(rcpt.get("effectiveGasPrice", 0)),
            logs=list(rcpt["logs"]),
        )

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

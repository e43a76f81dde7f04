"""The one exception tree of the `market` package.

Every error carries a message a user can act on: what is wrong, then what to do. CLIs print
`str(error)` on one line and exit with `error.exit_code`.
"""

from __future__ import annotations

from typing import Any


class MarketError(Exception):
    """Root of every error raised by `market`."""

    exit_code: int = 1


class ConfigError(MarketError):
    """A configuration file, flag or value is missing or malformed."""

    exit_code = 2


class DatasetError(ConfigError):
    """A built-in dataset is unknown or its package is not installed."""


class ToolchainError(MarketError):
    """A required tool (node, solc-js, anvil, jsipfs) is missing or failed."""

    exit_code = 3


class CompileError(ToolchainError):
    """The Solidity compiler reported errors."""


class StackError(MarketError):
    """The local stack (anvil, IPFS daemon) could not be started, reached or stopped."""

    exit_code = 4


class ChainError(MarketError):
    """Talking to the chain failed: node unreachable, wrong chain, timeout."""

    exit_code = 5


class NodeUnreachable(ChainError):
    """The RPC endpoint does not answer."""


class TransactionError(ChainError):
    """A transaction could not be sent or was not mined in time."""


class InsufficientFunds(TransactionError):
    """The sending account cannot pay for value plus gas."""


class ContractRevert(ChainError):
    """A contract call reverted; `name` and `args` decode the custom error when known."""

    exit_code = 6

    def __init__(self, message: str, name: str | None = None, args: dict[str, Any] | None = None):
        super().__init__(message)
        self.name = name
        self.error_args = args or {}


class DeploymentError(MarketError):
    """The deployment file is missing, malformed, or points at a chain without our contract."""

    exit_code = 7


class StorageError(MarketError):
    """Storing or fetching bytes (IPFS or the embedded store) failed."""

    exit_code = 8


class ContentNotFound(StorageError):
    """No provider answered for a CID within the time allowed."""


class IntegrityError(StorageError):
    """Bytes do not match the digest or CID they were fetched by."""


class UpdateRejected(MarketError):
    """An update failed validation; `reason` is a short machine-readable code."""

    exit_code = 9

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StorageUnavailable(StorageError):
    """The storage backend (an IPFS node's RPC API) does not answer."""


class InvalidCid(StorageError):
    """A string that should be a CID does not decode as one."""


class ContentTooLarge(StorageError):
    """Content is larger than the caller allowed (`max_bytes`)."""


class MalformedContent(UpdateRejected):
    """Bytes that should hold a safetensors update or model do not parse as one.

    Its `reason` is always `malformed`; `detail` says what is wrong.
    """

    def __init__(self, detail: str):
        super().__init__("malformed", detail)

"""The one exception tree of the audited learning market, and the one exit-code table.

Our exception hierarchy (`aggregator.errors` and `trainer.errors` hang their own branches under
`MarketError`, so every CLI handles every error the same way):

    MarketError                              1   a check failed (e.g. `market audit` found a mismatch)
    ├── ConfigError                          2   a flag, TOML key, spec string or value is wrong
    │   ├── DatasetError                         a built-in dataset is unknown or not installed
    │   └── DevKeyRefused                        an anvil dev key was offered to a chain that is not local
    ├── ToolchainError                       3   node, solc-js, anvil or jsipfs is missing or failed
    │   └── CompileError
    ├── StackError                           4   the local stack could not start, be reached or stop
    ├── ChainError                           5   talking to the chain failed
    │   ├── NodeUnreachable          [transient] the RPC endpoint does not answer
    │   ├── ChainMismatch                   28   the node's chain id is not the chain profile's
    │   ├── TransactionError                     a transaction could not be sent or was not mined
    │   │   └── InsufficientFunds
    │   └── ContractRevert                   6   a call reverted; `name` / `error_args` decode it
    ├── DeploymentError                      7   the deployment file is missing or wrong
    ├── StorageError                         8   storing or fetching bytes failed
    │   ├── StorageUnavailable       [transient] the IPFS RPC API does not answer
    │   ├── StorageTimeout           [transient] the node answered too slowly or kept failing
    │   ├── ContentNotFound          [transient] no provider delivered a CID in time
    │   ├── IntegrityError                       bytes do not match their digest or CID
    │   ├── InvalidCid
    │   └── ContentTooLarge
    ├── UpdateRejected                       9   an update failed validation (`reason` is a code)
    │   └── MalformedContent                     bytes that do not parse as an update or model
    ├── NumericsError                       22   values the exact kernels cannot take (non-finite, out of range)
    ├── ProtocolError                       10   the chain and the published documents disagree
    ├── SimulationError                     11   a scenario, demo or grid could not run to its end
    ├── TrainerError                        (trainer.errors: 12-18)
    └── AggregatorError                     (aggregator.errors: 20-26)

    TransientError                               mixin: worth retrying (the service was not there);
                                                 catch it by type, never by message text

Exit codes outside the tree: 0 success, 27 an audit that failed nothing but could not verify
some round here, 70 internal error (a bug: MARKET_DEBUG=1 shows the
traceback), 130 interrupted. `EXIT_CODES` lists every code; the README links to this table.
Every message says what is wrong, then what to do, on one line.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Every exit code the three CLIs use; each means one thing."""

    OK = 0
    CHECK_FAILED = 1
    CONFIG = 2
    TOOLCHAIN = 3
    STACK = 4
    CHAIN = 5
    REVERT = 6
    DEPLOYMENT = 7
    STORAGE = 8
    UPDATE_REJECTED = 9
    PROTOCOL = 10
    SIMULATION = 11
    TRAINER = 12
    MODEL_SPEC = 13
    DATA = 14
    TRAINING = 15
    SUBMISSION = 16
    DEADLINE_PASSED = 17
    UNKNOWN_PROJECT = 18
    WAIT_TIMEOUT = 19
    AGGREGATOR = 20
    RULE_CONFIG = 21
    INVALID_UPDATES = 22
    SCORING = 23
    REWARD = 24
    JOURNAL = 25
    VALIDATION_SET = 26
    NOT_VERIFIED = 27
    WRONG_CHAIN = 28
    INTERNAL = 70
    INTERRUPTED = 130


#: What each exit code means, for `--help` texts and the README.
EXIT_CODES: dict[int, str] = {
    ExitCode.OK: "success",
    ExitCode.CHECK_FAILED: "a check failed (the audit found a mismatch)",
    ExitCode.CONFIG: "configuration: a flag, TOML key, spec string or value is wrong",
    ExitCode.TOOLCHAIN: "toolchain: node, solc-js, anvil or jsipfs is missing or failed",
    ExitCode.STACK: "local stack: anvil or the IPFS daemon could not start, be reached or stop",
    ExitCode.CHAIN: "chain unreachable, or a transaction failed or was not mined",
    ExitCode.REVERT: "a contract call reverted (the message names the custom error)",
    ExitCode.DEPLOYMENT: "deployment file missing or not matching the chain",
    ExitCode.STORAGE: "storage: IPFS unreachable, content missing or not matching its digest",
    ExitCode.UPDATE_REJECTED: "an update failed validation",
    ExitCode.PROTOCOL: "the chain and the published documents (spec, record) disagree",
    ExitCode.SIMULATION: "a scenario, demo or grid could not run to its end",
    ExitCode.TRAINER: "trainer: another trainer-side failure",
    ExitCode.MODEL_SPEC: "trainer: the model spec cannot be built",
    ExitCode.DATA: "trainer: the data cannot be used",
    ExitCode.TRAINING: "trainer: local training failed",
    ExitCode.SUBMISSION: "trainer: commit or reveal could not be done",
    ExitCode.DEADLINE_PASSED: "trainer: a commit or reveal deadline has passed",
    ExitCode.UNKNOWN_PROJECT: "no project with this id on the deployment",
    ExitCode.WAIT_TIMEOUT: "waiting for a block, deadline or round took too long",
    ExitCode.AGGREGATOR: "aggregator: another aggregator-side failure",
    ExitCode.RULE_CONFIG: "aggregator: unknown rule, filter or scorer, or a bad parameter",
    ExitCode.INVALID_UPDATES: "aggregator: stacked updates have a wrong shape or values",
    ExitCode.SCORING: "aggregator: contribution scoring cannot run",
    ExitCode.REWARD: "aggregator: the reward split cannot be computed",
    ExitCode.JOURNAL: "aggregator: the journal is unreadable or belongs to another project",
    ExitCode.VALIDATION_SET: "aggregator: the validation set cannot be loaded",
    ExitCode.NOT_VERIFIED: "audit: nothing failed, but some round could not be verified here (each says why)",
    ExitCode.WRONG_CHAIN: "the node is not on the chain the profile names (wrong rpc or profile)",
    ExitCode.INTERNAL: "internal error (a bug; MARKET_DEBUG=1 shows the traceback)",
    ExitCode.INTERRUPTED: "interrupted",
}


class MarketError(Exception):
    """Root of every error the market's packages raise."""

    exit_code: int = ExitCode.CHECK_FAILED


class TransientError(Exception):
    """Mixin: the failure is a service not answering (yet); retrying later may succeed."""


class ConfigError(MarketError):
    """A configuration file, flag or value is missing or malformed."""

    exit_code = ExitCode.CONFIG


class DatasetError(ConfigError):
    """A built-in dataset is unknown or its package is not installed."""


class ToolchainError(MarketError):
    """A required tool (node, solc-js, anvil, jsipfs) is missing or failed."""

    exit_code = ExitCode.TOOLCHAIN


class CompileError(ToolchainError):
    """The Solidity compiler reported errors."""


class StackError(MarketError):
    """The local stack (anvil, IPFS daemon) could not be started, reached or stopped."""

    exit_code = ExitCode.STACK


class ChainError(MarketError):
    """Talking to the chain failed: node unreachable, wrong chain, timeout."""

    exit_code = ExitCode.CHAIN


class NodeUnreachable(ChainError, TransientError):
    """The RPC endpoint does not answer."""


class ChainMismatch(ChainError):
    """The node answers with another chain id than the chain profile in force names."""

    exit_code = ExitCode.WRONG_CHAIN


class DevKeyRefused(ConfigError):
    """One of anvil's well-known dev keys (public private keys) was offered to sign on a chain
    that is not local."""


class TransactionError(ChainError):
    """A transaction could not be sent or was not mined in time."""


class InsufficientFunds(TransactionError):
    """The sending account cannot pay for value plus gas."""


class ContractRevert(ChainError):
    """A contract call reverted; `name` and `error_args` decode the custom error when known."""

    exit_code = ExitCode.REVERT

    def __init__(self, message: str, name: str | None = None, args: dict[str, Any] | None = None):
        super().__init__(message)
        self.name = name
        self.error_args = args or {}


class DeploymentError(MarketError):
    """The deployment file is missing, malformed, or points at a chain without our contract."""

    exit_code = ExitCode.DEPLOYMENT


class StorageError(MarketError):
    """Storing or fetching bytes (IPFS or the embedded store) failed."""

    exit_code = ExitCode.STORAGE


class StorageUnavailable(StorageError, TransientError):
    """The storage backend (an IPFS node's RPC API) does not answer."""


class StorageTimeout(StorageError, TransientError):
    """The storage backend answered too slowly, or kept failing, within the time allowed."""


class ContentNotFound(StorageError, TransientError):
    """No provider answered for a CID within the time allowed."""


class IntegrityError(StorageError):
    """Bytes do not match the digest or CID they were fetched by."""


class InvalidCid(StorageError):
    """A string that should be a CID does not decode as one."""


class ContentTooLarge(StorageError):
    """Content is larger than the caller allowed (`max_bytes`)."""


class UpdateRejected(MarketError):
    """An update failed validation; `reason` is a short machine-readable code."""

    exit_code = ExitCode.UPDATE_REJECTED

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class MalformedContent(UpdateRejected):
    """Bytes that should hold a safetensors update or model do not parse as one.

    Its `reason` is always `malformed`; `detail` says what is wrong.
    """

    def __init__(self, detail: str):
        super().__init__("malformed", detail)


class NumericsError(MarketError):
    """An input the exact kernels (`market.protocol.numerics`) cannot take: non-finite values,
    weights out of range."""

    exit_code = ExitCode.INVALID_UPDATES


class ProtocolError(MarketError):
    """The chain and the published documents disagree, or a document is missing."""

    exit_code = ExitCode.PROTOCOL


class SimulationError(MarketError):
    """A scenario could not run to its end."""

    exit_code = ExitCode.SIMULATION


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` means a service is not answering (worth waiting for) rather than a wrong input.

    Connection errors from the HTTP stack underneath web3 and ipfshttpclient count too: they can
    escape from a call that is not wrapped by the market's clients.
    """
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, MarketError):
        return False
    import requests  # late: only needed for errors that escaped the clients

    return isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout | ConnectionError | TimeoutError)


class MalformedEnvelope(UpdateRejected):
    """Bytes that should hold an encrypted update envelope do not parse as one (reason
    `malformed_envelope`): wrong magic or version, truncated, a length over its cap."""

    def __init__(self, detail: str):
        super().__init__("malformed_envelope", detail)


class NotARecipient(UpdateRejected):
    """The key at hand is not one the envelope was sealed for (reason `not_recipient`): a wrong
    or rotated key; the detail names the fingerprints expected and found."""

    def __init__(self, detail: str):
        super().__init__("not_recipient", detail)


class DecryptionFailed(UpdateRejected):
    """An envelope does not authenticate under the key and context at hand (reason
    `undecryptable`): altered bytes, another project/round/trainer, or a bad disclosed key."""

    def __init__(self, detail: str):
        super().__init__("undecryptable", detail)

"""The exception tree of the `trainer` package.

A branch of the market's one tree (`market.errors`, where the whole tree and the exit-code table
are drawn): `TrainerError` is a `MarketError`, and the trainer's `ConfigError` is also the market's,
so a bad flag exits 2 whichever package noticed it. Messages say what is wrong, then what to do, on
one line; the CLI prints `str(error)` and exits with `error.exit_code`.
"""

from __future__ import annotations

from market.errors import ConfigError as MarketConfigError
from market.errors import ExitCode, MarketError

__all__ = [
    "BehaviourError",
    "ConfigError",
    "DataError",
    "DataNotFound",
    "DeadlinePassed",
    "EmptyDataset",
    "InvalidUpdate",
    "LabelError",
    "MalformedData",
    "ModelSpecError",
    "NotRegistered",
    "PartitionError",
    "RoundMismatch",
    "ShapeMismatch",
    "StaleReceipt",
    "SubmissionError",
    "TrainerError",
    "TrainingError",
    "UnknownProject",
    "WaitTimeout",
    "WindowTooShort",
]


class TrainerError(MarketError):
    """Root of every error raised by `trainer`."""

    exit_code: int = ExitCode.TRAINER


class ConfigError(TrainerError, MarketConfigError):
    """A setting, hyper-parameter override or flag is unknown, mistyped or out of range."""

    exit_code = ExitCode.CONFIG


class BehaviourError(ConfigError):
    """A scripted behaviour is unknown, badly parameterised, or lacks what it needs to act."""


class PartitionError(ConfigError):
    """A partition cannot be made as asked (too few samples for the trainers, bad parameter)."""


class ModelSpecError(TrainerError):
    """The model spec cannot be built, or weights do not fit it."""

    exit_code = ExitCode.MODEL_SPEC


class DataError(TrainerError):
    """The trainer's data cannot be used."""

    exit_code = ExitCode.DATA


class DataNotFound(DataError):
    """The data file or folder does not exist."""


class MalformedData(DataError):
    """The data file exists but cannot be parsed, or holds non-finite or inconsistent values."""


class LabelError(DataError):
    """Labels are not integers in [0, num_classes)."""


class ShapeMismatch(DataError):
    """Samples do not have the model spec's input shape."""


class EmptyDataset(DataError):
    """There are no samples."""


class TrainingError(TrainerError):
    """Local training failed, e.g. diverged to NaN/inf."""

    exit_code = ExitCode.TRAINING


class SubmissionError(TrainerError):
    """An update could not be submitted (commit or reveal)."""

    exit_code = ExitCode.SUBMISSION


class StaleReceipt(SubmissionError):
    """A kept proof does not prove its leaf against the round's rewards root on chain."""


class NotRegistered(SubmissionError):
    """The account is not a registered trainer of the project."""


class RoundMismatch(SubmissionError):
    """The round asked for is not the open one."""


class DeadlinePassed(SubmissionError):
    """A commit or reveal deadline has passed."""

    exit_code = ExitCode.DEADLINE_PASSED


class WindowTooShort(DeadlinePassed):
    """Training (measured over its first batches) cannot end inside the commit window: the
    round is skipped before its deadline passes."""


class InvalidUpdate(TrainerError):
    """An update file is missing, malformed, for another project/round/model, or fails validation
    against the project's spec: it is refused before anything is uploaded or committed."""

    exit_code = ExitCode.UPDATE_REJECTED


class UnknownProject(TrainerError):
    """No project with this id exists on the deployment."""

    exit_code = ExitCode.UNKNOWN_PROJECT


class WaitTimeout(SubmissionError):
    """Waiting for a block, a deadline or the next round took longer than allowed."""

    exit_code = ExitCode.WAIT_TIMEOUT

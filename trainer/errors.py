"""The exception tree of the `trainer` package.

Messages say what is wrong, then what to do, on one line; the CLI prints `str(error)` and exits
with `error.exit_code`. Codes 1-9 mirror `market.errors`; the trainer's own start at 10.
"""

from __future__ import annotations

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
    "SubmissionError",
    "TrainerError",
    "TrainingError",
    "UnknownProject",
    "WaitTimeout",
]


class TrainerError(Exception):
    """Root of every error raised by `trainer`."""

    exit_code: int = 1


class ConfigError(TrainerError):
    """A setting, hyper-parameter override or flag is unknown, mistyped or out of range."""

    exit_code = 2


class BehaviourError(ConfigError):
    """A scripted behaviour is unknown, badly parameterised, or lacks what it needs to act."""


class PartitionError(ConfigError):
    """A partition cannot be made as asked (too few samples for the trainers, bad parameter)."""


class ModelSpecError(TrainerError):
    """The model spec cannot be built, or weights do not fit it."""

    exit_code = 10


class DataError(TrainerError):
    """The trainer's data cannot be used."""

    exit_code = 11


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

    exit_code = 12


class SubmissionError(TrainerError):
    """An update could not be submitted (commit or reveal)."""

    exit_code = 12


class NotRegistered(SubmissionError):
    """The account is not a registered trainer of the project."""


class RoundMismatch(SubmissionError):
    """The round asked for is not the open one."""


class DeadlinePassed(SubmissionError):
    """A commit or reveal deadline has passed."""

    exit_code = 13


class InvalidUpdate(TrainerError):
    """An update file is missing, malformed, for another project/round/model, or fails validation
    against the project's spec: it is refused before anything is uploaded or committed."""

    exit_code = 9


class UnknownProject(TrainerError):
    """No project with this id exists on the deployment."""

    exit_code = 14


class WaitTimeout(SubmissionError):
    """Waiting for a block, a deadline or the next round took longer than allowed."""

    exit_code = 15

"""The aggregator's validation set: where contribution scores come from.

Configured as a built-in dataset with a seeded split (`digits:size=500,seed=0`,
`mnist5k:size=1000,seed=3`) or an `.npz` file with arrays `x` and `y`. It is published to the
content store as `.npz` bytes and its CID goes into every round record (`validation_cid`), so an
auditor replays the scores on exactly the same samples.

The `.npz` bytes are written deterministically (fixed zip timestamps, fixed member order, no
compression): the same set always has the same CID, across restarts and machines. They are read
back with `allow_pickle=False` and checked (finite float32 features of the model's input shape,
int64 labels in range) before any use, since an auditor reads bytes someone else published.

A project whose spec commits to secret per-round parts (`spec.validation_data`,
`market.protocol.valsplit`) is scored on part r in round r instead (`SecretParts`, from the key
file the owner hands the aggregator). Part r's `.npz` holds the part's arrays exactly as dealt
(not reshaped to the model's input), because the commitment hashes them with their shapes;
`check_disclosed_part` is the audit's check of a round's disclosed part against the spec.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError as PydanticValidationError

from aggregator.errors import SettingsError, ValidationSetError
from market._spec import Registry
from market._text import first_pydantic_error
from market.datasets import builtin_arrays
from market.errors import DatasetError, IntegrityError
from market.models import ModelSpec
from market.protocol.valsplit import PartDisclosure, ValidationCommitment, ValSplit, verify_part

__all__ = [
    "BUILTINS",
    "DISCLOSURE_KEY",
    "SecretParts",
    "ValidationSet",
    "ValidationSetError",
    "check_disclosed_part",
    "load_secret_parts",
    "load_validation_set",
    "parse_validation",
    "with_disclosure",
]

#: Where a round record's `aggregation` holds the disclosure of the round's secret validation part.
DISCLOSURE_KEY = "validation_disclosure"

BUILTINS = ("digits", "mnist5k")
#: Bound on a validation set fetched from the store (an auditor reads what the aggregator published).
MAX_BYTES = 200_000_000
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class ValidationSet:
    x: torch.Tensor  # float32 [N, *input_shape]
    y: torch.Tensor  # int64 [N]
    source: str

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to_npz(self) -> bytes:
        """Deterministic `.npz` bytes (`x` float32, `y` int64)."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, arr in (("x", self.x.numpy()), ("y", self.y.numpy())):
                member = io.BytesIO()
                np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
                info.external_attr = 0o600 << 16
                zf.writestr(info, member.getvalue())
        return buf.getvalue()

    @classmethod
    def from_npz(cls, data: bytes, spec: ModelSpec | None = None, source: str = "npz") -> ValidationSet:
        """Parse `.npz` bytes (never unpickling) and check them against `spec`."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                if "x" not in npz.files or "y" not in npz.files:
                    raise ValidationSetError(
                        f"validation set {source} has arrays {sorted(npz.files)}; it needs 'x' and 'y'"
                    )
                x, y = npz["x"], npz["y"]
        except ValidationSetError:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile/format errors, object arrays refused
            raise ValidationSetError(
                f"validation set {source} is not a readable .npz ({type(exc).__name__}: {exc}); "
                "publish numpy savez bytes with arrays x and y"
            ) from None
        return cls._checked(x, y, spec, source)

    @classmethod
    def _checked(cls, x: np.ndarray, y: np.ndarray, spec: ModelSpec | None, source: str) -> ValidationSet:
        if x.dtype.kind not in "fiu" or y.dtype.kind not in "iu":
            raise ValidationSetError(
                f"validation set {source}: x must be numeric and y integer, got {x.dtype} and {y.dtype}"
            )
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / np.float32(255.0)
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int64).reshape(-1)
        if x.shape[0] != y.shape[0] or y.shape[0] == 0:
            raise ValidationSetError(
                f"validation set {source}: {x.shape[0]} samples but {y.shape[0]} labels; give one label per sample"
            )
        if not np.isfinite(x).all():
            raise ValidationSetError(f"validation set {source} holds NaN or infinite features; clean it")
        if spec is not None:
            want = tuple(spec.input_shape)
            if tuple(x.shape[1:]) != want:
                if int(np.prod(x.shape[1:])) == int(np.prod(want)):
                    x = x.reshape((x.shape[0], *want))
                else:
                    raise ValidationSetError(
                        f"validation set {source}: samples of shape {tuple(x.shape[1:])}, the model takes {want}"
                    )
            if y.min() < 0 or y.max() >= spec.num_classes:
                raise ValidationSetError(
                    f"validation set {source}: labels outside [0, {spec.num_classes}); check the dataset"
                )
        return cls(torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), source)


@dataclass(frozen=True)
class _Split:
    """A seeded split of a built-in dataset: `size` samples (default min(500, all)), drawn with `seed`."""

    size: int | None = None
    seed: int = 0


_SPLITS: Registry[_Split] = Registry("built-in validation set", error=ValidationSetError)
for _name in BUILTINS:
    _SPLITS.add(_name, _Split)


def parse_validation(text: str) -> tuple[str, dict[str, int]]:
    """`digits:size=500,seed=0` -> ("digits", {"size": 500, "seed": 0}); a path -> (path, {})."""
    head = text.strip().partition(":")[0]
    if head not in BUILTINS:
        return text.strip(), {}
    try:
        name, opts = _SPLITS.parse(text)
    except ValidationSetError as exc:
        raise ValidationSetError(f"bad validation option in {text!r}: {exc}; write e.g. digits:size=500,seed=0") from None
    return name, {k: int(v) for k, v in opts.items() if v is not None}


def load_validation_set(text: str, spec: ModelSpec | None = None) -> ValidationSet:
    """The validation set `text` names: a built-in with a seeded split, or an `.npz` path."""
    name, opts = parse_validation(text)
    if name in BUILTINS:
        try:
            x, y = builtin_arrays(name)
        except DatasetError as exc:
            raise ValidationSetError(str(exc)) from None
        n = len(y)
        size = opts.get("size", min(500, n))
        if not 0 < size <= n:
            raise ValidationSetError(f"validation size must be in 1..{n} for {name}, got {size}")
        idx = np.sort(np.random.default_rng(opts.get("seed", 0)).permutation(n)[:size])
        return ValidationSet._checked(x[idx], y[idx], spec, f"{name}:size={size},seed={opts.get('seed', 0)}")
    path = Path(name)
    if not path.is_file():
        raise ValidationSetError(
            f"validation set {text!r} is neither a built-in ({', '.join(BUILTINS)}) nor an existing .npz file"
        )
    return ValidationSet.from_npz(path.read_bytes(), spec, str(path))


def _npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    return ValidationSet(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y)),
                         "part").to_npz()


@dataclass(frozen=True)
class SecretParts:
    """The owner's split, as the aggregator holds it: part r scores round r."""

    split: ValSplit
    spec: ModelSpec

    def part(self, r: int) -> tuple[ValidationSet, bytes, PartDisclosure]:
        """Round r's validation set, its `.npz` bytes (the part as dealt) and its disclosure."""
        if not 0 <= r < self.split.parts:
            raise ValidationSetError(f"round {r} has no secret validation part: the spec commits to"
                                     f" {self.split.parts}, one per round")
        x, y = self.split.part(r)
        data = _npz_bytes(x, y)
        return ValidationSet.from_npz(data, self.spec, f"secret part {r}"), data, self.split.disclose(r)


def load_secret_parts(key_file: str | Path | None, commitment: ValidationCommitment, spec: ModelSpec) -> SecretParts:
    """The split behind the spec's `commitment`, from the owner's key file (checked against it)."""
    if key_file is None:
        raise SettingsError("the project's spec commits to secret validation parts: pass --validation-key (or set"
                            " validation_key in [aggregator]) to the key file the owner wrote at creation"
                            " (<project file>.valkey.json)")
    path = Path(key_file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read the validation key file {path} ({exc.strerror}): check --validation-key"
                            " (or validation_key in [aggregator])") from None
    split, _ = ValSplit.from_key_document(data, str(path))
    if split.commitment() != commitment:
        raise SettingsError(f"the validation key file {path} commits to {split.commitment().root[:18]}..., the"
                            f" project's spec to {commitment.root[:18]}...: it is another project's key file")
    return SecretParts(split, spec)


def with_disclosure(aggregation: dict[str, Any], disclosure: PartDisclosure) -> dict[str, Any]:
    """A record's `aggregation` with the round's part disclosure (the rest unchanged)."""
    return {**aggregation, DISCLOSURE_KEY: disclosure.model_dump()}


def check_disclosed_part(commitment: ValidationCommitment, round_: int, aggregation: dict[str, Any],
                         data: bytes) -> PartDisclosure:
    """The disclosure in a round record's `aggregation`, checked with `verify_part` against the
    spec's commitment on `data` (the `.npz` at the record's `validation_cid`, read without
    unpickling); raises IntegrityError naming what is missing or does not match."""
    raw = aggregation.get(DISCLOSURE_KEY)
    if raw is None:
        raise IntegrityError(f"round {round_}: the spec commits to secret validation parts and the record discloses"
                             f" none (aggregation.{DISCLOSURE_KEY} is missing)")
    try:
        disclosure = PartDisclosure.model_validate(raw)
    except PydanticValidationError as exc:
        raise IntegrityError(f"round {round_}: aggregation.{DISCLOSURE_KEY} is malformed"
                             f" ({first_pydantic_error(exc, DISCLOSURE_KEY)})") from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            x, y = np.asarray(npz["x"]), np.asarray(npz["y"])
    except Exception as exc:  # noqa: BLE001 - zipfile/format errors, missing arrays, object arrays refused
        raise IntegrityError(f"round {round_}: the disclosed validation part is not an .npz with arrays x and y"
                             f" ({type(exc).__name__})") from None
    try:
        verify_part(commitment, disclosure, x, y, round_=round_)
    except IntegrityError as exc:
        raise IntegrityError(f"round {round_}: {exc}") from None
    return disclosure

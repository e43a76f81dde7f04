"""The aggregator's validation set: where contribution scores come from.

Configured as a built-in dataset with a seeded split (`digits:size=500,seed=0`,
`mnist5k:size=1000,seed=3`) or an `.npz` file with arrays `x` and `y`. It is published to the
content store as `.npz` bytes and its CID goes into every round record (`validation_cid`), so an
auditor replays the scores on exactly the same samples.

The `.npz` bytes are written deterministically (fixed zip timestamps, fixed member order, no
compression): the same set always has the same CID, across restarts and machines. They are read
back with `allow_pickle=False` and checked (finite float32 features of the model's input shape,
int64 labels in range) before any use, since an auditor reads bytes someone else published.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aggregator.errors import ValidationSetError
from market._spec import Registry
from market.datasets import builtin_arrays
from market.errors import DatasetError
from market.models import ModelSpec

__all__ = ["BUILTINS", "ValidationSet", "ValidationSetError", "load_validation_set", "parse_validation"]

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

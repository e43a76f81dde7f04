"""trainer.data: loaders, built-in samples, validation errors and deterministic splits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from market.models import ModelSpec
from trainer.data import (
    Dataset,
    fit_to_spec,
    load_builtin,
    load_csv,
    load_dataset,
    load_image_folder,
    load_npz,
    split_dataset,
    train_val_test_split,
)
from trainer.errors import (
    ConfigError,
    DataError,
    DataNotFound,
    EmptyDataset,
    LabelError,
    MalformedData,
    ShapeMismatch,
    TrainerError,
)

MNIST = ModelSpec(architecture="mnist_cnn", input_shape=(1, 28, 28), num_classes=10)
FLAT4 = ModelSpec(architecture="logreg", input_shape=(4,), num_classes=3)


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


# --- built-ins -----------------------------------------------------------------------------


def test_mnist5k_builtin() -> None:
    ds = load_builtin("mnist5k")
    assert ds.x.shape == (5000, 1, 28, 28) and ds.x.dtype == torch.float32
    assert ds.y.dtype == torch.int64 and ds.num_classes == 10
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert ds.class_counts().tolist() == [500] * 10
    # fresh tensors each call: mutating one load does not leak into the next
    ds.x.zero_()
    assert float(load_builtin("mnist5k").x.max()) == 1.0


def test_digits_builtin() -> None:
    ds = load_builtin("digits")
    assert ds.x.shape == (1797, 64) and ds.num_classes == 10
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) == 1.0


def test_builtin_by_name_through_load_dataset_and_unknown_name() -> None:
    assert len(load_dataset("digits")) == 1797
    with pytest.raises(DataNotFound, match="no built-in dataset 'cifar'"):
        load_builtin("cifar")
    with pytest.raises(DataNotFound, match="does not exist"):
        load_dataset("cifar")


def test_builtin_checked_against_spec() -> None:
    assert load_builtin("mnist5k", spec=MNIST).input_shape == (1, 28, 28)
    with pytest.raises(ShapeMismatch, match=r"\(64,\).*wants \(1, 28, 28\)"):
        load_builtin("digits", spec=MNIST)


# --- npz -----------------------------------------------------------------------------------


def test_npz_loads_and_scales_uint8(tmp_path: Path) -> None:
    x = np.arange(6 * 4, dtype=np.uint8).reshape(6, 4)
    path = _npz(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]))
    ds = load_npz(path)
    assert ds.name == "d" and ds.num_classes == 3 and len(ds) == 6
    assert torch.allclose(ds.x, torch.from_numpy(x.astype(np.float32) / 255))
    assert load_dataset(path, spec=FLAT4).num_classes == 3


def test_npz_reshapes_flat_rows_to_spec(tmp_path: Path) -> None:
    path = _npz(tmp_path / "flat.npz", x=np.random.default_rng(0).random((5, 784)),
                y=np.arange(5))
    assert load_npz(path, spec=MNIST).x.shape == (5, 1, 28, 28)


def test_npz_float_labels_that_are_whole_numbers(tmp_path: Path) -> None:
    path = _npz(tmp_path / "f.npz", x=np.zeros((3, 4)), y=np.array([0.0, 1.0, 2.0]))
    assert load_npz(path).y.tolist() == [0, 1, 2]


def test_npz_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound):
        load_npz(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(MalformedData, match="cannot be read"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(MalformedData, match=r"lacks array\(s\) \['y'\]"):
        load_npz(_npz(tmp_path / "nox.npz", x=np.zeros((2, 4))))
    with pytest.raises(MalformedData, match="cannot be read"):  # object arrays need pickle
        load_npz(_npz(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object),
                      y=np.array([0, 1])))
    with pytest.raises(MalformedData, match="3 samples but 2 labels"):
        load_npz(_npz(tmp_path / "len.npz", x=np.zeros((3, 4)), y=np.array([0, 1])))
    with pytest.raises(MalformedData, match="NaN"):
        load_npz(_npz(tmp_path / "nan.npz", x=np.full((2, 4), np.nan), y=np.array([0, 1])))
    with pytest.raises(EmptyDataset):
        load_npz(_npz(tmp_path / "empty.npz", x=np.zeros((0, 4)), y=np.zeros(0, dtype=int)))


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.array([0, -1, 2]), "negative label"),
        (np.array([0, 1, 3]), r"outside \[0, 2\]"),
        (np.array([0.5, 1.0, 2.0]), "whole numbers"),
        (np.array([[1, 0], [0, 1], [1, 0]]), "one-hot"),
        (np.array(["a", "b", "c"]), "dtype"),
    ],
)
def test_npz_bad_labels(tmp_path: Path, y: np.ndarray, match: str) -> None:
    path = _npz(tmp_path / "bad.npz", x=np.zeros((3, 4)), y=y)
    with pytest.raises(LabelError, match=match):
        load_npz(path, spec=FLAT4)


def test_label_beyond_explicit_num_classes(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", x=np.zeros((3, 4)), y=np.array([0, 1, 5]))
    with pytest.raises(LabelError, match=r"outside \[0, 2\]"):
        load_npz(path, num_classes=3)
    with pytest.raises(ConfigError, match="contradicts"):
        load_npz(path, num_classes=7, spec=FLAT4)


def test_shape_mismatch_against_spec(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", x=np.zeros((3, 5)), y=np.array([0, 1, 2]))
    with pytest.raises(ShapeMismatch, match=r"\(5,\).*wants \(4,\)"):
        load_npz(path, spec=FLAT4)


def test_data_errors_share_a_root_with_exit_codes() -> None:
    for cls in (DataNotFound, MalformedData, LabelError, ShapeMismatch, EmptyDataset):
        assert issubclass(cls, DataError) and issubclass(cls, TrainerError)
        assert cls.exit_code == DataError.exit_code != TrainerError.exit_code


# --- CSV -----------------------------------------------------------------------------------


def test_csv_label_last_by_default_and_gz(tmp_path: Path) -> None:
    rows = "0.1,0.2,0.3,0.4,2\n0.5,0.6,0.7,0.8,0\n"
    (tmp_path / "d.csv").write_text(rows)
    with gzip.open(tmp_path / "d.csv.gz", "wt") as f:
        f.write(rows)
    for name in ("d.csv", "d.csv.gz"):
        ds = load_dataset(tmp_path / name, spec=FLAT4)
        assert ds.y.tolist() == [2, 0]
        assert torch.allclose(ds.x[1], torch.tensor([0.5, 0.6, 0.7, 0.8]))
        assert ds.name == "d"


def test_csv_header_and_label_by_name_or_index(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("label,a,b\n1,10,20\n0,30,40\n")
    by_name = load_csv(tmp_path / "h.csv", label_column="label", scale=0.1)
    by_index = load_csv(tmp_path / "h.csv", label_column=0, scale=0.1)
    for ds in (by_name, by_index):
        assert ds.y.tolist() == [1, 0]
        assert torch.allclose(ds.x, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    with pytest.raises(MalformedData, match="no column named 'target'"):
        load_csv(tmp_path / "h.csv", label_column="target")
    with pytest.raises(ConfigError, match="outside the 3 columns"):
        load_csv(tmp_path / "h.csv", label_column=5)


def test_csv_errors(tmp_path: Path) -> None:
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    with pytest.raises(MalformedData, match="cannot be parsed"):
        load_csv(tmp_path / "ragged.csv")
    (tmp_path / "words.csv").write_text("1,2,0\n3,four,1\n")
    with pytest.raises(MalformedData):
        load_csv(tmp_path / "words.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(EmptyDataset):
        load_csv(tmp_path / "empty.csv")
    (tmp_path / "header_only.csv").write_text("a,b,label\n")
    with pytest.raises(EmptyDataset):
        load_csv(tmp_path / "header_only.csv")
    (tmp_path / "frac.csv").write_text("1,2,0.5\n")
    with pytest.raises(LabelError, match="whole numbers"):
        load_csv(tmp_path / "frac.csv")
    with pytest.raises(DataNotFound):
        load_csv(tmp_path / "nope.csv")
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(MalformedData, match="cannot tell the format"):
        load_dataset(tmp_path / "data.parquet")


# --- image folder --------------------------------------------------------------------------


def _image(path: Path, value: int, size: tuple[int, int] = (6, 5), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, fill).save(path)


def test_image_folder_numeric_class_names_keep_their_labels(tmp_path: Path) -> None:
    _image(tmp_path / "imgs" / "3" / "a.png", 255)
    _image(tmp_path / "imgs" / "3" / "b.png", 0)
    _image(tmp_path / "imgs" / "7" / "c.png", 51)
    (tmp_path / "imgs" / "7" / "notes.txt").write_text("ignored")
    ds = load_dataset(tmp_path / "imgs")
    assert ds.x.shape == (3, 1, 5, 6)
    assert ds.y.tolist() == [3, 3, 7] and ds.num_classes == 8
    assert ds.x[0].max() == 1.0 and ds.x[1].max() == 0.0
    assert ds.x[2, 0, 0, 0] == pytest.approx(0.2)


def test_image_folder_named_classes_rgb_and_resize_to_spec(tmp_path: Path) -> None:
    _image(tmp_path / "cat" / "1.png", 10, size=(8, 8), mode="RGB")
    _image(tmp_path / "dog" / "1.jpg", 200, size=(16, 12), mode="RGB")
    spec = ModelSpec(architecture="mnist_cnn", input_shape=(3, 4, 4), num_classes=2)
    ds = load_image_folder(tmp_path, spec=spec)
    assert ds.x.shape == (2, 3, 4, 4) and ds.y.tolist() == [0, 1]
    gray = load_image_folder(tmp_path, mode="L", size=(4, 4), classes=["dog", "cat"])
    assert gray.x.shape == (2, 1, 4, 4) and gray.y.tolist() == [1, 0] and gray.num_classes == 2


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyDataset, match="no class subfolders"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "noimgs" / "0").mkdir(parents=True)
    with pytest.raises(EmptyDataset, match="no images"):
        load_image_folder(tmp_path / "noimgs")
    _image(tmp_path / "sizes" / "0" / "a.png", 1, size=(4, 4))
    _image(tmp_path / "sizes" / "1" / "b.png", 1, size=(5, 4))
    with pytest.raises(MalformedData, match="pass size="):
        load_image_folder(tmp_path / "sizes")
    _image(tmp_path / "broken" / "0" / "a.png", 1)
    (tmp_path / "broken" / "0" / "b.png").write_bytes(b"not a png")
    with pytest.raises(MalformedData, match="cannot read image"):
        load_image_folder(tmp_path / "broken")
    with pytest.raises(LabelError, match="not in classes"):
        load_image_folder(tmp_path / "sizes", classes=["0"], size=(4, 4))
    with pytest.raises(ShapeMismatch, match="channels"):
        load_image_folder(tmp_path / "sizes", spec=ModelSpec(
            architecture="mnist_cnn", input_shape=(2, 4, 4), num_classes=2))


# --- the record and splits -----------------------------------------------------------------


def test_dataset_record_validation() -> None:
    x = torch.zeros(3, 2)
    with pytest.raises(MalformedData, match="float32"):
        Dataset(x.double(), torch.tensor([0, 1, 0]), 2)
    with pytest.raises(LabelError, match="int64"):
        Dataset(x, torch.tensor([0, 1, 0], dtype=torch.int32), 2)
    with pytest.raises(MalformedData, match="one label per sample"):
        Dataset(x, torch.tensor([0, 1]), 2)
    with pytest.raises(LabelError):
        Dataset(x, torch.tensor([0, 1, 2]), 2)
    with pytest.raises(EmptyDataset):
        fit_to_spec(Dataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 3), FLAT4)


def test_split_by_counts_is_disjoint_stratified_and_deterministic() -> None:
    ds = load_builtin("mnist5k")
    a, b = split_dataset(ds, [1000, 500], seed=3)
    a2, b2 = split_dataset(ds, [1000, 500], seed=3)
    assert torch.equal(a.x, a2.x) and torch.equal(b.y, b2.y)
    assert a.class_counts().tolist() == [100] * 10 and b.class_counts().tolist() == [50] * 10
    c, _ = split_dataset(ds, [1000, 500], seed=4)
    assert not torch.equal(a.x, c.x)
    # disjoint: no image of b appears in a
    fa = {hash(row.numpy().tobytes()) for row in a.x}
    assert not any(hash(row.numpy().tobytes()) in fa for row in b.x)
    # shuffled, not grouped by class
    assert len(set(a.y[:20].tolist())) > 3


def test_split_by_fractions_covers_everything() -> None:
    ds = load_builtin("digits")
    idx_ds = Dataset(torch.arange(len(ds), dtype=torch.float32)[:, None], ds.y, 10, "idx")
    parts = split_dataset(idx_ds, [0.7, 0.2, 0.1], seed=0)
    assert [len(p) for p in parts] == [1258, 359, 180]
    seen = torch.cat([p.x[:, 0] for p in parts]).long().sort().values
    assert torch.equal(seen, torch.arange(len(ds)))
    for i, p in enumerate(parts):  # stratified: first part within 1 per class, others 2
        expected = ds.class_counts().double() * len(p) / len(ds)
        assert (p.class_counts() - expected).abs().max() <= (1.0 if i == 0 else 2.0) + 1e-9
    plain = split_dataset(idx_ds, [0.5, 0.5], seed=0, stratify=False)
    assert sum(len(p) for p in plain) == len(ds)


def test_train_val_test_split() -> None:
    s = train_val_test_split(load_builtin("mnist5k"), val=0.1, test=0.2, seed=1)
    assert [len(s.train), len(s.val), len(s.test)] == [3500, 500, 1000]
    assert s.val.name == "mnist5k:val" and s.test.class_counts().tolist() == [100] * 10


@pytest.mark.parametrize("sizes", [[0.5, 0.6], [6000], [100, 0.5], [-1], []])
def test_split_rejects_bad_sizes(sizes: list) -> None:
    with pytest.raises(ConfigError):
        split_dataset(load_builtin("digits"), sizes)

"""Secret validation data: disjoint per-round parts, one Merkle root at creation, per-part disclosure."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from market.cli.project_file import ProjectFile
from market.errors import ConfigError, IntegrityError
from market.protocol.documents import ProjectSpec
from market.protocol.valsplit import PartDisclosure, ValidationCommitment, ValSplit, verify_part

KEY = bytes(range(32))


def pool(n: int = 300, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 4), dtype=np.float32), np.arange(n, dtype=np.int64) % classes


@pytest.mark.parametrize("parts", [1, 2, 3, 5, 7])
def test_parts_are_disjoint_balanced_and_each_verifies(parts: int) -> None:
    x, y = pool()
    split = ValSplit.make(x, y, parts, key=KEY)
    c = split.commitment()
    assert c.parts == parts and c.samples_per_part == 300 // parts
    seen: set[bytes] = set()
    for r in range(parts):
        px, py = split.part(r)
        assert len(py) == c.samples_per_part
        rows = {row.tobytes() for row in px}
        assert not rows & seen  # disjoint
        seen |= rows
        counts = np.bincount(py, minlength=10)
        assert counts.max() - counts.min() <= 1  # class-balanced
        verify_part(c, split.disclose(r), px, py, round_=r)


def test_same_key_same_parts_other_key_other_root() -> None:
    x, y = pool()
    a, b = ValSplit.make(x, y, 3, key=KEY), ValSplit.make(x, y, 3, key=KEY)
    assert a.commitment() == b.commitment()
    assert np.array_equal(a.part(1)[0], b.part(1)[0])
    other = ValSplit.make(x, y, 3)  # a fresh random key
    assert other.commitment().root != a.commitment().root
    assert not np.array_equal(other.part(0)[0], a.part(0)[0])


def test_a_trimmed_part_stays_class_balanced() -> None:
    x, y = pool(n=1000)
    split = ValSplit.make(x, y, 4, size=50, key=KEY)
    for r in range(4):
        counts = np.bincount(split.part(r)[1], minlength=10)
        assert counts.tolist() == [5] * 10


def test_tampering_fails_with_the_reason() -> None:
    x, y = pool()
    split = ValSplit.make(x, y, 4, key=KEY)
    c = split.commitment()
    px, py = split.part(2)
    d = split.disclose(2)
    changed = px.copy()
    changed[0, 0] += 1e-3
    with pytest.raises(IntegrityError, match="does not match the spec's commitment"):
        verify_part(c, d, changed, py)
    relabelled = py.copy()
    relabelled[0] = (relabelled[0] + 1) % 10
    with pytest.raises(IntegrityError, match="does not match"):
        verify_part(c, d, px, relabelled)
    with pytest.raises(IntegrityError, match="does not match"):
        verify_part(c, d.model_copy(update={"salt": "0x" + "00" * 32}), px, py)
    # part 2's samples and proof presented as part 1: the leaf binds its index
    with pytest.raises(IntegrityError, match="does not match"):
        verify_part(c, d.model_copy(update={"part": 1}), px, py)
    with pytest.raises(IntegrityError, match="round 3 discloses validation part 2"):
        verify_part(c, d, px, py, round_=3)
    with pytest.raises(IntegrityError, match="holds 74 samples"):
        verify_part(c, d, px[:74], py[:74])
    with pytest.raises(IntegrityError, match="does not exist"):
        verify_part(c, d.model_copy(update={"part": 9}), px, py)


def test_the_commitment_hides_the_parts_salts_differ() -> None:
    x, y = pool()
    split = ValSplit.make(x, y, 3, key=KEY)
    assert len({split.salt(r) for r in range(3)}) == 3
    # publishing a part with an unsalted digest would let anyone test candidates; the leaf is salted
    d = split.disclose(0)
    assert d.salt != "0x" + "00" * 32 and len(d.proof) == 2


def test_bad_splits_are_refused_clearly() -> None:
    x, y = pool(n=20)
    with pytest.raises(ConfigError, match="cannot deal 30 disjoint validation parts"):
        ValSplit.make(x, y, 30)
    with pytest.raises(ConfigError, match="at most 5 samples per part"):
        ValSplit.make(x, y, 4, size=6)
    with pytest.raises(ConfigError, match="part 4 does not exist"):
        ValSplit.make(x, y, 4, key=KEY).part(4)


def test_key_document_round_trip_and_a_changed_pool(tmp_path: Path) -> None:
    x, y = pool()
    path = tmp_path / "pool.npz"
    np.savez(path, x=x, y=y)
    split = ValSplit.make(x, y, 3, key=KEY)
    doc = split.key_document(str(path))
    again, source = ValSplit.from_key_document(doc)
    assert source == str(path) and again.commitment() == split.commitment()
    x2 = x.copy()
    x2[5, 1] = 0.5
    np.savez(path, x=x2, y=y)
    with pytest.raises(ConfigError, match="no longer gives the committed root"):
        ValSplit.from_key_document(doc)
    with pytest.raises(ConfigError, match="key"):
        ValSplit.from_key_document(json.dumps({**json.loads(doc), "key": "zz"}).encode())


def test_models_check_their_fields() -> None:
    with pytest.raises(ValueError):
        ValidationCommitment(root="0x12", parts=1, samples_per_part=1)
    with pytest.raises(ValueError):
        PartDisclosure(part=0, salt="0x" + "00" * 32, proof=["0xABC"])


class _Store:
    def __init__(self) -> None:
        self.blobs: list[bytes] = []

    def add(self, data: bytes) -> str:
        self.blobs.append(data)
        return f"Qm{len(self.blobs)}"


def _project(tmp: Path, extra: str) -> Path:
    path = tmp / "proj.toml"
    path.write_text(
        "[project]\nrounds = 3\nreward_per_round = 1\ncommit_window = 5\nreveal_window = 5\nchallenge_window = 3\n"
        'aggregator = "dev:1"\narbiter = "dev:2"\n'
        '[model]\narchitecture = "digits_mlp"\ninput_shape = [64]\nnum_classes = 10\ndataset = "digits"\n'
        + extra
    )
    return path


def test_project_file_commits_to_secret_parts_and_keeps_the_key(tmp_path: Path) -> None:
    x, y = pool(n=600)
    np.savez(tmp_path / "private.npz", x=x, y=y)
    path = _project(tmp_path, '[validation.data]\npool = "%s"\nsamples_per_round = 150\n' % (tmp_path / "private.npz"))
    spec = ProjectFile.load(path).spec(_Store())
    c = spec.validation_data
    assert c is not None and c.parts == 3 and c.samples_per_part == 150
    key_file = tmp_path / "proj.valkey.json"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # no part is published at creation: only the initial weights went to the store
    assert ProjectSpec.from_bytes(spec.to_bytes()).validation_data == c
    # the aggregator, from the key file alone, derives every part and its disclosure
    split, _ = ValSplit.from_key_document(key_file.read_bytes())
    for r in range(3):
        verify_part(c, split.disclose(r), *split.part(r), round_=r)
    # creating again reuses the key: the same root
    assert ProjectFile.load(path).spec(_Store()).validation_data == c


def test_old_specs_keep_their_bytes() -> None:
    old: dict[str, Any] = {
        "version": 1, "hyperparams": {}, "validation": {
            "max_update_bytes": 50_000_000, "max_norm": 1000.0, "max_header_bytes": 1_000_000,
            "max_claimed_samples": 100_000},
        "model": {"architecture": "digits_mlp", "input_shape": [64], "num_classes": 10, "dataset": "digits"},
    }
    spec = ProjectSpec.model_validate(old)
    assert spec.validation_data is None and spec.validation.defence is None
    dumped = json.loads(spec.to_bytes())
    assert "validation_data" not in dumped and "defence" not in dumped["validation"]

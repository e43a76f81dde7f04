"""validate_update: every bad input is a rejection with a reason; nothing raises or executes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import zlib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from market.errors import UpdateRejected
from market.protocol.codec import SCALE_SUFFIX, UpdateHeader, encode_update
from market.protocol.validation import REASONS, UpdateCheck, update_spec, validate_update
from market.storage import cid_of, parse_cid

BASE = cid_of(b"global model, project 7, round 3")
TRAINER = "0x" + "ab" * 20
MODEL = {
    "conv.weight": torch.zeros(4, 1, 3, 3),
    "conv.bias": torch.zeros(4),
    "fc.weight": torch.zeros(10, 36),
    "fc.bias": torch.zeros(10),
    "bn.num_batches_tracked": torch.zeros((), dtype=torch.int64),
}
SPEC = update_spec(MODEL)
MAX_BYTES = 64 * 1024
MAX_NORM = 100.0


def header(**changes: object) -> UpdateHeader:
    fields: dict[str, object] = {
        "project_id": 7,
        "round": 3,
        "base_model_cid": BASE,
        "trainer": TRAINER,
        "num_samples": 250,
    }
    fields.update(changes)
    return UpdateHeader(**fields)  # type: ignore[arg-type]


def deltas(seed: int = 0, scale: float = 0.1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) * scale for name, (shape, _) in SPEC.items()}


def good(seed: int = 0, **changes: object) -> bytes:
    return encode_update(deltas(seed), header(**changes))


def raw_update(tensors: dict[str, torch.Tensor], h: UpdateHeader | None = None) -> bytes:
    """An update written without encode_update's checks (for dtypes/keys it would refuse)."""
    h = h or header()
    metadata = {
        "format": "pt",
        "market.kind": "update",
        "market.header": json.dumps(asdict(h)),
    }
    return st_save(tensors, metadata=metadata)


def check(data: object, **overrides: object) -> UpdateCheck:
    args: dict[str, object] = {
        "expected_digest": None,
        "project_id": 7,
        "round": 3,
        "base_model_cid": BASE,
        "trainer": TRAINER,
        "spec": SPEC,
        "max_bytes": MAX_BYTES,
        "max_norm": MAX_NORM,
        "max_header_bytes": 16 * 1024,
    }
    args.update(overrides)
    return validate_update(data, **args)  # type: ignore[arg-type]


def rejected(verdict: UpdateCheck, reason: str) -> None:
    assert not verdict.accepted, verdict
    assert verdict.reason == reason, verdict
    assert verdict.tensors is None and verdict.norm is None
    assert verdict.detail and "\n" not in verdict.detail


# -- acceptance -----------------------------------------------------------------------------------


def test_good_update_is_accepted_in_spec_order() -> None:
    data = good()
    verdict = check(data, expected_digest=hashlib.sha256(data).digest())
    assert verdict.accepted and verdict.reason is None
    assert verdict.header == header()
    assert verdict.tensors is not None and list(verdict.tensors) == list(SPEC)
    expected = deltas()
    for name in SPEC:
        assert torch.equal(verdict.tensors[name], expected[name])
    norm = float(torch.cat([t.flatten() for t in expected.values()]).double().norm())
    assert verdict.norm == pytest.approx(norm, rel=1e-9)
    verdict.raise_if_rejected()


def test_q8_update_is_accepted() -> None:
    verdict = check(good(encoding="q8"))
    assert verdict.accepted, verdict
    assert verdict.tensors is not None and all(
        t.dtype == torch.float32 for t in verdict.tensors.values()
    )


def test_base_model_cid_compared_as_multihash_and_trainer_case_insensitive() -> None:
    v1 = str(parse_cid(BASE).set(version=1).set(base="base32"))
    verdict = check(good(), base_model_cid=v1, trainer=TRAINER.upper().replace("0X", "0x"))
    assert verdict.accepted, verdict


# -- one test per rejection -----------------------------------------------------------------------


def test_too_large() -> None:
    data = good()
    rejected(check(data, max_bytes=len(data) - 1), "too_large")


def test_digest_mismatch() -> None:
    data = good()
    rejected(check(data, expected_digest=hashlib.sha256(data + b"x").digest()), "digest_mismatch")
    rejected(check(data, expected_digest=b"\0" * 32), "digest_mismatch")


def test_truncated_file() -> None:
    data = good()
    for cut in (0, 5, 8, 100, len(data) // 2, len(data) - 1):
        rejected(check(data[:cut]), "malformed")


def test_random_bytes() -> None:
    for seed in range(5):
        rejected(check(os.urandom(1000 + seed)), "malformed")


class Evil:
    """Unpickling this creates `path`: proof that a payload was (not) executed."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_pickle_payload_is_rejected_and_never_executed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the payload is live: unpickling it does create its marker
    sanity = tmp_path / "sanity"
    pickle.loads(pickle.dumps(Evil(str(sanity)))).close()
    assert sanity.exists()

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("validation must never unpickle")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)

    marker = tmp_path / "pwned"
    payloads = [
        pickle.dumps(Evil(str(marker)), protocol=proto)
        for proto in range(2, pickle.HIGHEST_PROTOCOL + 1)
    ]
    buffer = io.BytesIO()
    torch.save({"conv.weight": Evil(str(marker))}, buffer)  # a torch checkpoint (zip + pickle)
    payloads.append(buffer.getvalue())
    # pickle bytes disguised behind a plausible safetensors length prefix
    payloads.append(struct.pack("<Q", len(payloads[0])) + payloads[0])
    for payload in payloads:
        rejected(check(payload), "malformed")
    assert not marker.exists()


def test_header_claiming_more_bytes_than_exist() -> None:
    data = good()
    (length,) = struct.unpack_from("<Q", data)
    rejected(check(struct.pack("<Q", length + 1000) + data[8:]), "malformed")
    rejected(check(struct.pack("<Q", len(data)) + data[8:]), "malformed")


def test_data_offsets_claiming_more_bytes_than_exist() -> None:
    data = good()
    rejected(check(data[:-4]), "malformed")  # last tensor's range runs past the end


def test_oversized_header() -> None:
    padded = raw_update(deltas())
    (length,) = struct.unpack_from("<Q", padded)
    pad = b" " * 20_000  # safetensors allows trailing spaces in the header: still over the cap
    rejected(
        check(
            struct.pack("<Q", length + len(pad))
            + padded[8 : 8 + length]
            + pad
            + padded[8 + length :]
        ),
        "malformed",
    )
    rejected(check(struct.pack("<Q", 2**62) + b"{}"), "malformed")
    rejected(check(good(), max_header_bytes=100), "malformed")


def test_oversized_tensor_declared_but_absent() -> None:
    entry = {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 4]}
    blob = json.dumps({"conv.weight": entry}).encode()
    rejected(check(struct.pack("<Q", len(blob)) + blob + b"\0" * 4), "malformed")


def test_oversized_tensor_present_is_wrong_shape_before_loading() -> None:
    tensors = deltas()
    tensors["fc.weight"] = torch.zeros(100, 100)
    rejected(check(raw_update(tensors), max_bytes=10**6), "wrong_shape")


def test_wrong_keys() -> None:
    tensors = deltas()
    del tensors["fc.bias"]
    rejected(check(raw_update(tensors)), "wrong_keys")
    tensors = deltas()
    tensors["extra"] = torch.zeros(3)
    rejected(check(raw_update(tensors)), "wrong_keys")
    tensors = deltas()
    tensors["fc.bias" + SCALE_SUFFIX] = torch.tensor(1.0)
    rejected(check(raw_update(tensors)), "wrong_keys")


def test_q8_missing_scale_is_wrong_keys() -> None:
    tensors = {name: torch.zeros(shape, dtype=torch.int8) for name, (shape, _) in SPEC.items()}
    scales = {name + SCALE_SUFFIX: torch.tensor(0.1) for name in list(SPEC)[1:]}
    rejected(check(raw_update({**tensors, **scales}, header(encoding="q8"))), "wrong_keys")


def test_wrong_shapes() -> None:
    tensors = deltas()
    tensors["fc.weight"] = tensors["fc.weight"].t().contiguous()
    rejected(check(raw_update(tensors)), "wrong_shape")
    tensors = deltas()
    tensors["conv.bias"] = torch.zeros(4, 1)
    rejected(check(raw_update(tensors)), "wrong_shape")


def test_wrong_dtypes() -> None:
    for dtype in (torch.float64, torch.float16, torch.bfloat16, torch.int32):
        tensors = deltas()
        tensors["fc.bias"] = tensors["fc.bias"].to(dtype)
        rejected(check(raw_update(tensors)), "wrong_dtype")
    q8 = {name: torch.zeros(shape, dtype=torch.int8) for name, (shape, _) in SPEC.items()}
    scales = {name + SCALE_SUFFIX: torch.tensor(0.1, dtype=torch.float64) for name in SPEC}
    rejected(check(raw_update({**q8, **scales}, header(encoding="q8"))), "wrong_dtype")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite(value: float) -> None:
    tensors = deltas()
    tensors["conv.weight"][0, 0, 1, 1] = value
    rejected(check(raw_update(tensors)), "non_finite")


def test_non_finite_q8_scale() -> None:
    q8 = {name: torch.ones(shape, dtype=torch.int8) for name, (shape, _) in SPEC.items()}
    scales = {name + SCALE_SUFFIX: torch.tensor(0.01) for name in SPEC}
    scales["fc.bias" + SCALE_SUFFIX] = torch.tensor(float("nan"))
    rejected(check(raw_update({**q8, **scales}, header(encoding="q8"))), "non_finite")


def test_norm_too_large() -> None:
    data = encode_update(deltas(scale=100.0), header())
    rejected(check(data), "norm_too_large")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"project_id": 8}, "wrong_project"),
        ({"round": 4}, "wrong_round"),
        ({"base_model_cid": cid_of(b"another model")}, "wrong_base_model"),
        ({"trainer": "0x" + "cd" * 20}, "wrong_trainer"),
        ({"num_samples": 0}, "bad_sample_count"),
        ({"num_samples": -5}, "bad_sample_count"),
        ({"num_samples": 10**12}, "bad_sample_count"),
    ],
)
def test_header_mismatches(changes: dict[str, object], reason: str) -> None:
    verdict = check(good(0, **changes))
    rejected(verdict, reason)
    assert verdict.header is not None  # the parsed header is reported with the rejection


def test_first_failure_wins() -> None:
    tensors = deltas()
    tensors["fc.bias"][0] = float("nan")
    other_project = raw_update(tensors, header(project_id=99))
    rejected(check(other_project), "wrong_project")
    rejected(check(other_project, expected_digest=b"\1" * 32), "digest_mismatch")
    rejected(check(other_project, max_bytes=10), "too_large")


def test_raise_if_rejected() -> None:
    verdict = check(b"junk")
    with pytest.raises(UpdateRejected) as info:
        verdict.raise_if_rejected()
    assert info.value.reason == "malformed"


def test_non_bytes_input() -> None:
    rejected(check("a string"), "malformed")
    rejected(check(None), "malformed")


def test_a_batch_of_bad_updates_does_not_affect_the_good_ones(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    bad_nan = deltas(5)
    bad_nan["fc.weight"][3, 3] = float("nan")
    wrong_shape = deltas(6)
    wrong_shape["fc.bias"] = torch.zeros(11)
    truncated = good(7)[:-10]
    batch: list[tuple[bytes, str | None]] = [
        (good(1), None),
        (truncated, "malformed"),
        (os.urandom(512), "malformed"),
        (pickle.dumps(Evil(str(marker))), "malformed"),
        (good(2, encoding="q8"), None),
        (good(3, round=2), "wrong_round"),
        (raw_update(bad_nan), "non_finite"),
        (raw_update(wrong_shape), "wrong_shape"),
        (encode_update(deltas(8, scale=50.0), header()), "norm_too_large"),
        (good(4), None),
    ]
    verdicts = [check(data, expected_digest=hashlib.sha256(data).digest()) for data, _ in batch]
    for verdict, (_, reason) in zip(verdicts, batch, strict=True):
        if reason is None:
            assert verdict.accepted, verdict
        else:
            rejected(verdict, reason)
    accepted = [v for v in verdicts if v.accepted]
    for seed, verdict in zip((1, 4), (accepted[0], accepted[2]), strict=True):
        assert verdict.tensors is not None
        assert all(torch.equal(verdict.tensors[n], deltas(seed)[n]) for n in SPEC)
    assert not marker.exists()


# -- fuzz -------------------------------------------------------------------------------------------

GOOD = good()
GOOD_Q8 = good(encoding="q8")
FUZZ = settings(
    max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _ok(verdict: UpdateCheck) -> None:
    assert isinstance(verdict, UpdateCheck)
    if verdict.accepted:
        assert verdict.tensors is not None and verdict.norm is not None
        assert verdict.norm <= MAX_NORM
        assert all(bool(torch.isfinite(t).all()) for t in verdict.tensors.values())
    else:
        assert verdict.reason in REASONS and verdict.detail


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes_never_crash(data: bytes) -> None:
    verdict = check(data)
    _ok(verdict)
    assert not verdict.accepted


@FUZZ
@given(
    base=st.sampled_from([GOOD, GOOD_Q8]),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
    splice=st.binary(max_size=64),
)
def test_fuzz_mutated_updates_never_crash(
    base: bytes, edits: list[tuple[int, int]], cut: int | None, splice: bytes
) -> None:
    data = bytearray(base)
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        at = cut % (len(data) + 1)
        data = data[:at] + splice + data[at:]
    _ok(check(bytes(data)))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "I8", "F64", "BOOL", "U8", "X", ""]),
        "shape": st.lists(st.integers(-2, 2**40), max_size=4),
        "data_offsets": st.lists(st.integers(-8, 2**40), min_size=0, max_size=3),
    }
)


@FUZZ
@given(
    tensors=st.dictionaries(
        st.sampled_from([*SPEC, "x", "fc.bias" + SCALE_SUFFIX, "__metadata__"]),
        _entries | _json,
        max_size=6,
    ),
    payload=st.binary(max_size=256),
)
def test_fuzz_crafted_headers_never_crash(tensors: dict[str, object], payload: bytes) -> None:
    blob = json.dumps(tensors).encode()
    _ok(check(struct.pack("<Q", len(blob)) + blob + payload))


# -- compact encodings ----------------------------------------------------------------------------

COMPACT = ["q4", "q2", "sparse-f32", "sparse-q8", "sparse-q4", "sparse-q2"]


def compact_update(encoding: str, keep_fraction: float = 0.3) -> bytes:
    return encode_update(deltas(), header(encoding=encoding), keep_fraction=keep_fraction)


def tamper(data: bytes, change: object) -> bytes:
    from safetensors.torch import load as st_load

    from market.protocol.codec import read_layout

    metadata = read_layout(data).metadata
    tensors = st_load(data)
    change(tensors)  # type: ignore[operator]
    return st_save(tensors, metadata=metadata)


@pytest.mark.parametrize("encoding", COMPACT)
def test_compact_updates_are_accepted(encoding: str) -> None:
    verdict = check(compact_update(encoding))
    assert verdict.accepted, verdict
    assert verdict.tensors is not None and list(verdict.tensors) == list(SPEC)
    assert all(verdict.tensors[n].shape == shape for n, (shape, _) in SPEC.items())


def _put(name: str, value: torch.Tensor) -> object:
    return lambda t: t.__setitem__(name, value)


def _edit_gaps(t: dict[str, torch.Tensor], edit: Callable[[torch.Tensor], None]) -> None:
    """Change the gap bytes inside fc.weight's zlib index stream."""
    gaps = torch.frombuffer(bytearray(zlib.decompress(t["fc.weight.__index"].numpy().tobytes())), dtype=torch.uint8)
    edit(gaps)
    t["fc.weight.__index"] = torch.frombuffer(bytearray(zlib.compress(gaps.numpy().tobytes())), dtype=torch.uint8)


def _zero_gap(t: dict[str, torch.Tensor]) -> None:
    _edit_gaps(t, lambda g: g.__setitem__(1, 0))


def _far_gap(t: dict[str, torch.Tensor]) -> None:
    _edit_gaps(t, lambda g: g.__setitem__(-1, 255))


def _nan_value(t: dict[str, torch.Tensor]) -> None:
    t["fc.weight"][0] = float("nan")


COMPACT_REJECTIONS = {
    "missing index": ("sparse-q8", lambda t: t.pop("fc.weight.__index"), "wrong_keys"),
    "missing scale": ("q4", lambda t: t.pop("conv.bias" + SCALE_SUFFIX), "wrong_keys"),
    "extra logical tensor": ("sparse-q4", _put("extra", torch.zeros(2)), "wrong_keys"),
    "shape differs from spec": ("sparse-q8", _put("fc.weight.__shape", torch.tensor([36, 10])), "wrong_shape"),
    "shape of too high rank": ("q2", _put("fc.bias.__shape", torch.ones(9, dtype=torch.int64)), "malformed"),
    "values of another dtype": ("sparse-q8", _put("fc.weight", torch.zeros(108)), "wrong_dtype"),
    "duplicate index": ("sparse-q8", _zero_gap, "malformed"),
    "index out of range": ("sparse-q4", _far_gap, "malformed"),
    "count mismatch": ("sparse-q8", _put("fc.weight", torch.zeros(5, dtype=torch.int8)), "malformed"),
    "invalid code": ("q4", _put("fc.bias", torch.full((5,), 0xFF, dtype=torch.uint8)), "malformed"),
    "padding bits": ("q4", _put("bn.num_batches_tracked", torch.tensor([0x77], dtype=torch.uint8)), "malformed"),
    "negative scale": ("q2", _put("fc.bias" + SCALE_SUFFIX, torch.tensor(-1.0)), "malformed"),
    "non-finite sparse value": ("sparse-f32", _nan_value, "non_finite"),
}


@pytest.mark.parametrize("kind", list(COMPACT_REJECTIONS))
def test_malformed_compact_payloads_are_rejected(kind: str) -> None:
    encoding, change, reason = COMPACT_REJECTIONS[kind]
    verdict = check(tamper(compact_update(encoding), change))
    rejected(verdict, reason)
    words = {"padding bits": "padding", "invalid code": "outside", "duplicate index": "zero index gap",
             "index out of range": "out of range", "negative scale": "scale"}
    assert words.get(kind, "") in verdict.detail


def test_compact_update_declaring_a_huge_shape_is_rejected_before_decoding() -> None:
    huge = _put("fc.weight.__shape", torch.tensor([1 << 40], dtype=torch.int64))
    bad = tamper(compact_update("sparse-q8", 0.01), huge)
    rejected(check(bad), "wrong_shape")

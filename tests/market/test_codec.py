"""The update/model codec: round trips, the q8 error bound, and the pre-parse of untrusted bytes."""

from __future__ import annotations

import json
import math
import struct
import zlib

import pytest
import torch
from safetensors.torch import save as st_save

from market.errors import MalformedContent, UpdateRejected
from market.protocol.codec import (
    DEFAULT_CLIP_K,
    DEFAULT_CLIP_KS,
    ENCODING_FORMS,
    GAPS_SUFFIX,
    INDEX_SUFFIX,
    SCALE_SUFFIX,
    SHAPE_SUFFIX,
    DecodeLimits,
    ModelHeader,
    UpdateHeader,
    decode_model,
    decode_update,
    dequantize_q8,
    encode_model,
    encode_update,
    quantize_q8,
    read_layout,
    safetensors_dtype,
)
from market.storage import cid_of

BASE = cid_of(b"global model round 3")
TRAINER = "0x" + "1f" * 20
U32 = 2**-24  # float32 unit roundoff


def header(**changes: object) -> UpdateHeader:
    fields: dict[str, object] = {
        "project_id": 7,
        "round": 3,
        "base_model_cid": BASE,
        "trainer": TRAINER,
        "num_samples": 120,
    }
    fields.update(changes)
    return UpdateHeader(**fields)  # type: ignore[arg-type]


def sample_update(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(8, 3, 3, 3, generator=g),
        "conv.bias": torch.randn(8, generator=g),
        "fc.weight": torch.randn(10, 72, generator=g) * 0.01,
        "fc.bias": torch.zeros(10),
    }


def craft(header_obj: object, payload: bytes = b"", *, claimed_len: int | None = None) -> bytes:
    """Safetensors-shaped bytes with an arbitrary JSON header (or raw header bytes)."""
    raw = header_obj if isinstance(header_obj, bytes) else json.dumps(header_obj).encode()
    length = len(raw) if claimed_len is None else claimed_len
    return struct.pack("<Q", length) + raw + payload


def meta() -> dict[str, str]:
    h = header()
    return {
        "format": "pt",
        "market.kind": "update",
        "market.header": json.dumps(
            {
                "project_id": h.project_id,
                "round": h.round,
                "base_model_cid": h.base_model_cid,
                "trainer": h.trainer,
                "num_samples": h.num_samples,
                "encoding": "f32",
                "codec_version": 1,
            }
        ),
    }


# -- round trips ----------------------------------------------------------------------------------


def test_f32_round_trip_is_exact() -> None:
    tensors = sample_update()
    data = encode_update(tensors, header())
    got_header, got = decode_update(data)
    assert got_header == header()
    assert set(got) == set(tensors)
    for name, value in tensors.items():
        assert got[name].dtype == torch.float32
        assert torch.equal(got[name], value)


def test_header_is_in_safetensors_metadata() -> None:
    data = encode_update(sample_update(), header(encoding="q8"))
    layout = read_layout(data)
    assert layout.metadata["market.kind"] == "update"
    assert json.loads(layout.metadata["market.header"])["encoding"] == "q8"
    assert {t.name for t in layout.tensors} >= {"fc.weight", "fc.weight" + SCALE_SUFFIX}


def test_model_round_trip_with_integer_buffers() -> None:
    weights = {
        "bn.weight": torch.randn(4),
        "bn.num_batches_tracked": torch.tensor(17, dtype=torch.int64),
        "emb": torch.randn(3, 2).to(torch.bfloat16),
    }
    mh = ModelHeader(project_id=7, round=4, architecture="SmallCNN(mnist)")
    got_header, got = decode_model(encode_model(weights, mh))
    assert got_header == mh
    for name, value in weights.items():
        assert got[name].dtype == value.dtype and torch.equal(got[name], value)


def test_model_and_update_files_are_not_interchangeable() -> None:
    model = encode_model({"w": torch.zeros(2)}, ModelHeader(7, 4, "x"))
    update = encode_update({"w": torch.zeros(2)}, header())
    with pytest.raises(MalformedContent):
        decode_update(model)
    with pytest.raises(MalformedContent):
        decode_model(update)


def test_encode_refuses_bad_input() -> None:
    with pytest.raises(TypeError):
        encode_update({"w": torch.zeros(2, dtype=torch.float64)}, header())
    with pytest.raises(ValueError):
        encode_update({"w" + SCALE_SUFFIX: torch.zeros(2)}, header())
    with pytest.raises(ValueError):
        encode_update({}, header())
    with pytest.raises(TypeError):
        encode_update({"w": [1.0]}, header())  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "changes",
    [
        {"trainer": "0x1234"},
        {"trainer": "1f" * 21},
        {"base_model_cid": "not-a-cid"},
        {"project_id": -1},
        {"round": 2**256},
        {"project_id": True},
        {"encoding": "q3"},
        {"num_samples": 1.5},
        {"codec_version": 2},
    ],
)
def test_update_header_validates_fields(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        header(**changes)


def test_safetensors_dtype_names() -> None:
    assert safetensors_dtype("float32") == safetensors_dtype(torch.float32) == "F32"
    assert safetensors_dtype("torch.int64") == "I64"
    assert safetensors_dtype("BF16") == "BF16"
    with pytest.raises(ValueError):
        safetensors_dtype("complex64")


# -- q8 -------------------------------------------------------------------------------------------


def heavy_tailed(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    x[:20] *= 25.0  # outliers that the mean-based clip cuts
    return x


@pytest.mark.parametrize("keep_fraction", [1.0, 0.25])
@pytest.mark.parametrize("clip_k", [DEFAULT_CLIP_K, 2.0])
def test_q8_error_bound(clip_k: float, keep_fraction: float) -> None:
    x = heavy_tailed(50_000, seed=int(clip_k * 10 + keep_fraction * 100))
    q, scale = quantize_q8(x, clip_k=clip_k, keep_fraction=keep_fraction)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale.dim() == 0
    assert int(q.abs().max()) <= 127
    xhat = dequantize_q8(q, scale)
    s = float(scale)
    c = clip_k * float(x.abs().double().mean())
    err = (xhat - x).abs().double()
    xd, xh = x.abs().double(), xhat.abs().double()

    keep = math.ceil(keep_fraction * x.numel())
    kept = torch.zeros(x.numel(), dtype=torch.bool)
    kept[x.abs().topk(keep).indices] = True
    pruned = ~kept
    clipped = kept & (xd > c)
    plain = kept & ~clipped

    slack = 1e-12
    # kept, not clipped: half a quantization step (+ float32 rounding of q * s)
    assert bool((err[plain] <= s / 2 + U32 * xh[plain] + slack).all())
    # kept and clipped: the part cut off plus half a step
    assert bool((err[clipped] <= (xd[clipped] - c) + s / 2 + U32 * xh[clipped] + 1e-6).all())
    # pruned: decoded as exactly zero, error is the entry itself, below every kept magnitude
    assert bool((xhat[pruned] == 0).all())
    if keep < x.numel():
        t = float(xd[kept].min())
        assert bool((xd[pruned] <= t).all())
    # the whole bound stated in the module docstring
    overall = max(
        float((xd - c).clamp(min=0).max()) + s / 2 + 127 * U32 * s,
        float(xd[kept].min()) if keep < x.numel() else 0.0,
    )
    assert float(err.max()) <= overall + 1e-6
    assert s <= c / 127 * (1 + 1e-6)
    assert int(clipped.sum()) > 0  # the test really exercises clipping


def test_q8_update_round_trip_and_size() -> None:
    g = torch.Generator().manual_seed(3)
    tensors = {"a": torch.randn(256, 256, generator=g), "b": torch.randn(1000, generator=g)}
    f32 = encode_update(tensors, header())
    q8 = encode_update(tensors, header(encoding="q8"))
    assert len(q8) < len(f32) / 3.5
    got_header, got = decode_update(q8)
    assert got_header.encoding == "q8"
    for name, value in tensors.items():
        assert got[name].dtype == torch.float32 and got[name].shape == value.shape
        c = DEFAULT_CLIP_K * float(value.abs().double().mean())
        s = min(float(value.abs().max()), c) / 127
        excess = (value.abs() - c).clamp(min=0)
        assert bool(((got[name] - value).abs() <= excess + s / 2 * (1 + 1e-5) + 1e-7).all())


def test_q8_zero_and_empty_tensors_decode_exactly() -> None:
    tensors = {"z": torch.zeros(5, 5), "e": torch.zeros(0, 3)}
    _, got = decode_update(encode_update(tensors, header(encoding="q8")))
    assert torch.equal(got["z"], tensors["z"]) and got["e"].shape == (0, 3)


def test_q8_refuses_non_finite_and_bad_parameters() -> None:
    with pytest.raises(ValueError):
        quantize_q8(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError):
        quantize_q8(torch.ones(3), clip_k=0)
    with pytest.raises(ValueError):
        quantize_q8(torch.ones(3), keep_fraction=0)


# -- untrusted bytes ------------------------------------------------------------------------------


def entry(dtype: str, shape: list[object], start: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


BAD_FILES: dict[str, bytes] = {
    "empty": b"",
    "seven_bytes": b"\x00" * 7,
    "header_longer_than_file": craft({"a": entry("F32", [1], 0, 4)}, b"\0" * 4, claimed_len=10_000),
    "header_over_cap": struct.pack("<Q", 2**40) + b"{}",
    "huge_header_length": b"\xff" * 8 + b"{}",
    "not_json": craft(b"{this is not json}"),
    "json_array": craft([1, 2, 3]),
    "not_utf8": craft(b'{"\xff": 1}'),
    "deep_nesting": craft(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "duplicate_keys": craft(
        b'{"a": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}, "a": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b"\0" * 4,
    ),
    "offsets_past_end": craft({"a": entry("F32", [4], 0, 16)}, b"\0" * 8),
    "offsets_reversed": craft({"a": entry("F32", [0], 4, 0)}, b"\0" * 4),
    "negative_offset": craft({"a": entry("F32", [1], -4, 0)}, b"\0" * 4),
    "overlap": craft({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, b"\0" * 12),
    "gap": craft({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}, b"\0" * 12),
    "trailing_bytes": craft({"a": entry("F32", [1], 0, 4)}, b"\0" * 9),
    "size_mismatch": craft({"a": entry("F32", [3], 0, 8)}, b"\0" * 8),
    "dtype_not_allowed": craft({"a": entry("F8_E4M3", [4], 0, 4)}, b"\0" * 4),
    "dtype_unknown": craft({"a": entry("PICKLE", [4], 0, 4)}, b"\0" * 4),
    "negative_dim": craft({"a": entry("F32", [-1], 0, 0)}),
    "float_dim": craft({"a": entry("F32", [1.5], 0, 4)}, b"\0" * 4),
    "bool_dim": craft({"a": entry("F32", [True], 0, 4)}, b"\0" * 4),
    "rank_too_high": craft({"a": entry("F32", [1] * 9, 0, 4)}, b"\0" * 4),
    "oversized_tensor": craft({"a": entry("F32", [2**31, 2**31, 2**31], 0, 4)}, b"\0" * 4),
    "extra_field": craft({"a": {**entry("F32", [1], 0, 4), "evil": 1}}, b"\0" * 4),
    "metadata_not_strings": craft({"__metadata__": {"a": 1}}),
    "no_market_header": st_save({"w": torch.zeros(2)}),
    "wrong_kind": st_save({"w": torch.zeros(2)}, metadata={**meta(), "market.kind": "model"}),
    "header_json_broken": st_save({"w": torch.zeros(2)}, metadata={**meta(), "market.header": "{"}),
    "header_extra_field": st_save(
        {"w": torch.zeros(2)},
        metadata={
            **meta(),
            "market.header": json.dumps({**json.loads(meta()["market.header"]), "x": 1}),
        },
    ),
    "header_bad_address": st_save(
        {"w": torch.zeros(2)},
        metadata={**meta(), "market.header": meta()["market.header"].replace(TRAINER, "0xnope")},
    ),
    "f32_with_scales": st_save(
        {"w": torch.zeros(2), "w" + SCALE_SUFFIX: torch.tensor(1.0)}, metadata=meta()
    ),
    "q8_missing_scale": st_save(
        {"w": torch.zeros(2, dtype=torch.int8)},
        metadata={**meta(), "market.header": meta()["market.header"].replace('"f32"', '"q8"')},
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_are_malformed(name: str) -> None:
    with pytest.raises(MalformedContent) as info:
        decode_update(BAD_FILES[name], DecodeLimits(max_header_bytes=1 << 20))
    assert info.value.reason == "malformed"
    assert isinstance(info.value, UpdateRejected)
    assert "\n" not in str(info.value)


def test_truncated_update_is_malformed() -> None:
    data = encode_update(sample_update(), header())
    for cut in (1, 8, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(MalformedContent):
            decode_update(data[:cut])


def test_limits_are_enforced() -> None:
    data = encode_update(sample_update(), header())
    with pytest.raises(MalformedContent, match="cap"):
        decode_update(data, DecodeLimits(max_bytes=len(data) - 1))
    with pytest.raises(MalformedContent, match="cap"):
        decode_update(data, DecodeLimits(max_header_bytes=64))
    with pytest.raises(MalformedContent, match="tensors"):
        decode_update(data, DecodeLimits(max_tensors=2))
    with pytest.raises(MalformedContent, match="tensor cap"):
        decode_update(data, DecodeLimits(max_tensor_bytes=100))
    with pytest.raises(MalformedContent, match="dtype"):
        decode_update(data, DecodeLimits(allowed_dtypes=frozenset({"I8"})))


def test_deep_json_nesting_is_refused_even_with_a_high_recursion_limit() -> None:
    # py-evm raises the recursion limit to 100000 on import; json's C parser would then
    # overflow the C stack (a segfault) on a deeply nested header if it ever saw one.
    import sys

    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, 100_000))
    try:
        deep = b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        with pytest.raises(MalformedContent, match="nests deeper"):
            decode_update(craft(deep))
        nested_header = "[" * 200_000 + "]" * 200_000
        data = st_save({"w": torch.zeros(2)}, metadata={**meta(), "market.header": nested_header})
        with pytest.raises(MalformedContent, match="nests deeper"):
            decode_update(data)
    finally:
        sys.setrecursionlimit(previous)


def test_encoding_is_byte_deterministic() -> None:
    """safetensors writes its metadata map in random order; our files must not vary, or model CIDs
    and digests would change from one run (or one auditor) to the next."""
    import torch

    from market.protocol.codec import ModelHeader, UpdateHeader, encode_model, encode_update

    tensors = {"b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.bias": torch.ones(3)}
    models = {encode_model(tensors, ModelHeader(project_id=1, round=2, architecture="mlp")) for _ in range(30)}
    header = UpdateHeader(1, 2, "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "0x" + "11" * 20, 10)
    updates = {encode_update(tensors, header) for _ in range(30)}
    assert len(models) == 1 and len(updates) == 1
    data = next(iter(models))
    n = int.from_bytes(data[:8], "little")
    assert n % 8 == 0


# -- compact encodings (q4, q2, sparse-*) ---------------------------------------------------------

COMPACT = ["q4", "q2", "sparse-f32", "sparse-q8", "sparse-q4", "sparse-q2"]


def raw_tensors(data: bytes) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Metadata and stored tensors of our own encoded bytes (safe: we wrote them)."""
    from safetensors.torch import load as st_load

    return read_layout(data).metadata, st_load(data)


def tamper(data: bytes, change: object) -> bytes:
    metadata, tensors = raw_tensors(data)
    change(tensors)  # type: ignore[operator]
    return st_save(tensors, metadata=metadata)


def compact(encoding: str, tensors: dict[str, torch.Tensor] | None = None, **kwargs: object) -> bytes:
    return encode_update(tensors or sample_update(), header(encoding=encoding), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("keep_fraction", [1.0, 0.1, 0.01])
@pytest.mark.parametrize("encoding", COMPACT)
def test_compact_error_bound(encoding: str, keep_fraction: float) -> None:
    x = heavy_tailed(20_000, seed=3).reshape(100, 200)
    data = compact(encoding, {"w": x}, keep_fraction=keep_fraction)
    got_header, got = decode_update(data)
    assert got_header.encoding == encoding and got["w"].shape == x.shape and got["w"].dtype == torch.float32
    form = ENCODING_FORMS[encoding]
    _, stored = raw_tensors(data)
    flat, xhat = x.reshape(-1).double(), got["w"].reshape(-1).double()
    keep = max(1, math.ceil(keep_fraction * flat.numel())) if keep_fraction < 1 else flat.numel()
    kept = torch.zeros(flat.numel(), dtype=torch.bool)
    kept[flat.abs().topk(keep).indices] = True
    assert bool((xhat[~kept] == 0).all())
    if keep < flat.numel():
        assert float(flat[~kept].abs().max()) <= float(flat[kept].abs().min())
    err = (xhat - flat).abs()
    if form.bits == 32:
        assert bool((err[kept] == 0).all())
        return
    s = float(stored["w" + SCALE_SUFFIX])
    basis = flat[kept] if form.sparse else flat
    c = DEFAULT_CLIP_KS[encoding] * float(basis.abs().mean())
    assert s <= c / form.levels * (1 + 1e-6)
    bound = (flat.abs() - c).clamp(min=0) + s / 2 + U32 * xhat.abs() + 1e-6
    assert bool((err[kept] <= bound[kept]).all())


@pytest.mark.parametrize("encoding", COMPACT)
def test_compact_round_trip_is_deterministic_and_exact_for_zeros(encoding: str) -> None:
    tensors = {**sample_update(), "zero": torch.zeros(3, 4), "empty": torch.zeros(0, 5), "scalar": torch.tensor(0.5)}
    data = compact(encoding, tensors, keep_fraction=0.5)
    assert data == compact(encoding, tensors, keep_fraction=0.5)
    _, got = decode_update(data)
    assert set(got) == set(tensors)  # file order, as for f32 and q8
    assert torch.equal(got["zero"], tensors["zero"]) and got["empty"].shape == (0, 5)
    assert all(got[name].shape == tensors[name].shape for name in tensors)


def test_sparse_ties_keep_the_lower_indices_and_gaps_bridge_long_jumps() -> None:
    ones = torch.ones(10)
    _, got = decode_update(compact("sparse-f32", {"w": ones}, keep_fraction=0.3))
    assert got["w"].tolist() == [1.0, 1.0, 1.0] + [0.0] * 7
    far = torch.zeros(100_000)
    far[0], far[99_999], far[700] = 1.0, -2.0, 3.0
    data = compact("sparse-f32", {"w": far}, keep_fraction=3 / 100_000)
    _, got = decode_update(data)
    assert torch.equal(got["w"], far)
    _, stored = raw_tensors(data)
    gaps = inflate(stored["w" + INDEX_SUFFIX])
    assert int(gaps.min()) >= 1 and int(gaps.to(torch.int64).sum()) - 1 == 99_999
    assert gaps.numel() == 3 + (700 - 1) // 255 + (99_999 - 700 - 1) // 255


def test_compact_sizes() -> None:
    g = torch.Generator().manual_seed(5)
    tensors = {"w": torch.randn(400, 500, generator=g)}
    f32 = len(compact("f32", tensors))
    assert len(compact("q4", tensors)) < f32 / 7.9
    assert len(compact("q2", tensors)) < f32 / 15.5
    assert len(compact("sparse-q8", tensors, keep_fraction=0.1)) < f32 / 18
    assert len(compact("sparse-q8", tensors, keep_fraction=0.01)) < f32 / 100


def test_compact_encoders_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        compact("q4", {"w": torch.tensor([1.0, float("inf")])})
    with pytest.raises(ValueError):
        compact("sparse-q8", keep_fraction=0.0)
    with pytest.raises(ValueError):
        compact("q2", clip_k=-1.0)
    with pytest.raises(ValueError):
        encode_update({"w" + GAPS_SUFFIX: torch.zeros(2)}, header())


def _set(name: str, value: torch.Tensor) -> object:
    def change(t: dict[str, torch.Tensor]) -> None:
        t[name] = value

    return change


def _both(*changes: object) -> object:
    def change(t: dict[str, torch.Tensor]) -> None:
        for c in changes:
            c(t)  # type: ignore[operator]

    return change


def _drop(name: str) -> object:
    return lambda t: t.pop(name)


def inflate(index: torch.Tensor) -> torch.Tensor:
    """The gap bytes of an `.__index` tensor (our own bytes)."""
    return torch.frombuffer(bytearray(zlib.decompress(index.numpy().tobytes())), dtype=torch.uint8)


def deflate(gaps: torch.Tensor) -> torch.Tensor:
    return torch.frombuffer(bytearray(zlib.compress(gaps.to(torch.uint8).numpy().tobytes())), dtype=torch.uint8)


def _gaps(encoding: str = "sparse-q8") -> torch.Tensor:
    return inflate(raw_tensors(compact(encoding, keep_fraction=0.2))[1]["fc.weight" + INDEX_SUFFIX]).clone()


def _with_zero_gap() -> torch.Tensor:
    g = _gaps()
    g[3] = 0
    return g


def _with_far_gap() -> torch.Tensor:
    g = _gaps()
    g[-1] = 255
    return g


SPARSE_DAMAGE = {
    "zero gap (duplicate index)": ("sparse-q8", _set("fc.weight" + INDEX_SUFFIX, deflate(_with_zero_gap())),
                                   "zero index gap"),
    "index out of range": ("sparse-q8", _set("fc.weight" + INDEX_SUFFIX, deflate(_with_far_gap())), "out of range"),
    "fewer values than gaps": ("sparse-q8", _set("fc.weight", torch.zeros(3, dtype=torch.int8)), "inflates to over"),
    "more gaps than entries": ("sparse-f32", _both(_set("fc.bias", torch.zeros(11)),
                                                   _set("fc.bias" + INDEX_SUFFIX, deflate(torch.ones(11)))),
                               "inflates to over 10 gaps"),
    "index of another dtype": ("sparse-q8", _set("fc.weight" + INDEX_SUFFIX, deflate(_gaps()).to(torch.int16)),
                               "U8 vector"),
    "missing shape": ("sparse-q8", _drop("fc.weight" + SHAPE_SUFFIX), "missing"),
    "extra index on a dense form": ("q4", _set("fc.bias" + INDEX_SUFFIX, deflate(torch.ones(1))), "unexpected"),
    "shape of too high rank": ("sparse-q8", _set("fc.weight" + SHAPE_SUFFIX, torch.ones(9, dtype=torch.int64)),
                               "at most 8"),
    "negative size": ("q4", _set("fc.bias" + SHAPE_SUFFIX, torch.tensor([-10], dtype=torch.int64)), "negative"),
    "huge declared shape": ("sparse-q8", _set("fc.weight" + SHAPE_SUFFIX, torch.tensor([1 << 40], dtype=torch.int64)),
                            "cap"),
    "invalid q4 code": ("q4", _set("fc.bias", torch.full((5,), 0xFF, dtype=torch.uint8)), "outside"),
    "set padding bits": ("q2", _set("fc.bias", torch.tensor([0x55, 0x55, 0xF5], dtype=torch.uint8)), "padding"),
    "q8 code -128": ("sparse-q8", lambda t: t["fc.weight"].__setitem__(0, -128), "outside"),
    "negative scale": ("sparse-q4", _set("fc.weight" + SCALE_SUFFIX, torch.tensor(-1.0)), "scale"),
    "NaN scale": ("q2", _set("fc.weight" + SCALE_SUFFIX, torch.tensor(float("nan"))), "scale"),
    "scale of wrong rank": ("q4", _set("fc.weight" + SCALE_SUFFIX, torch.ones(1)), "scale"),
}


@pytest.mark.parametrize("kind", list(SPARSE_DAMAGE))
def test_malformed_compact_payloads_are_refused(kind: str) -> None:
    encoding, change, match = SPARSE_DAMAGE[kind]
    bad = tamper(compact(encoding, keep_fraction=0.2), change)
    with pytest.raises(MalformedContent, match=match):
        decode_update(bad)


def test_compact_decoded_size_is_capped_before_allocation() -> None:
    data = compact("sparse-q8", keep_fraction=0.01)
    with pytest.raises(MalformedContent, match="decoded cap"):  # fc.weight alone is 2880 bytes
        decode_update(data, DecodeLimits(max_decoded_bytes=1000))
    with pytest.raises(MalformedContent, match="decodes to over"):  # all four are 3816
        decode_update(data, DecodeLimits(max_decoded_bytes=3000))
    assert decode_update(data, DecodeLimits(max_decoded_bytes=3816))[1]["fc.weight"].shape == (10, 72)


def test_wave1_encodings_are_byte_identical() -> None:
    """SHA-256 of f32 and q8 files as the wave-1 codec wrote them (exactly representable inputs)."""
    import hashlib

    a = ((torch.arange(600, dtype=torch.float32) % 17 - 8) / 16 * 0.01).reshape(20, 30)
    a[3, 4] = 0.5
    tensors = {"a.weight": a, "a.bias": (torch.arange(30, dtype=torch.float32) - 15) / 64, "z": torch.zeros(4)}
    golden = {
        ("f32", 1.0): "3c461ec3d38391de3bd20b2512436dcd86d6b527b31265f25a1c229c872bd8cb",
        ("q8", 1.0): "78209f2397810e000fc9b6f55f1ae0874c5baa5993ae582a15288dd89f6e2579",
        ("q8", 0.25): "b68b915a9ae9e278e08b21f23e488059a79061f6c13f9c6e3a992b8cd3c61407",
    }
    for (encoding, keep), digest in golden.items():
        h = UpdateHeader(7, 3, cid_of(b"golden"), "0x" + "ab" * 20, 10, encoding=encoding)  # type: ignore[arg-type]
        assert hashlib.sha256(encode_update(tensors, h, keep_fraction=keep)).hexdigest() == digest

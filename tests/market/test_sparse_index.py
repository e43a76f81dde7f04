"""The zlib-coded index of sparse updates: round trips, the earlier raw-gap form, and hostile
index streams (bombs, truncation, trailing bytes, duplicate or out-of-range indices)."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from market.errors import MalformedContent
from market.protocol.codec import (
    ENCODING_FORMS,
    GAPS_SUFFIX,
    INDEX_SUFFIX,
    UpdateHeader,
    decode_update,
    encode_update,
    encode_with_feedback,
    read_layout,
)
from market.protocol.validation import UpdateCheck, update_spec, validate_update
from market.storage import cid_of

BASE = cid_of(b"base")
TRAINER = "0x" + "2e" * 20
SPARSE = [e for e, f in ENCODING_FORMS.items() if f.sparse]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def header(encoding: str = "sparse-q8") -> UpdateHeader:
    return UpdateHeader(4, 2, BASE, TRAINER, 50, encoding=encoding)  # type: ignore[arg-type]


def update(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(8, 3, 3, 3, generator=g), "fc.weight": torch.randn(10, 300, generator=g) * 0.01,
            "fc.bias": torch.randn(10, generator=g)}


def stored(data: bytes) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    return read_layout(data).metadata, st_load(data)


def rewrite(data: bytes, change: Callable[[dict[str, torch.Tensor]], None]) -> bytes:
    metadata, tensors = stored(data)
    change(tensors)
    return st_save(tensors, metadata=metadata)


def as_u8(raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)


def to_raw_gaps(data: bytes) -> bytes:
    """The same update in the earlier sparse form (raw U8 `.__gaps`), as files written before
    the zlib index hold it."""

    def change(t: dict[str, torch.Tensor]) -> None:
        for name in [n for n in t if n.endswith(INDEX_SUFFIX)]:
            t[name.removesuffix(INDEX_SUFFIX) + GAPS_SUFFIX] = as_u8(zlib.decompress(t.pop(name).numpy().tobytes()))

    return rewrite(data, change)


def validate(data: bytes) -> UpdateCheck:
    return validate_update(data, expected_digest=None, project_id=4, round=2, base_model_cid=BASE, trainer=TRAINER,
                           spec=update_spec(update()), max_bytes=1 << 20, max_norm=1e6)


def set_index(name: str, raw: bytes) -> Callable[[dict[str, torch.Tensor]], None]:
    return lambda t: t.__setitem__(name + INDEX_SUFFIX, as_u8(raw))


@pytest.mark.parametrize("encoding", SPARSE)
def test_updates_written_with_raw_gaps_still_decode_to_the_same_tensors(encoding: str) -> None:
    data = encode_update(update(), header(encoding), keep_fraction=0.1)
    legacy = to_raw_gaps(data)
    assert len(legacy) > len(data)
    _, new = decode_update(data)
    _, old = decode_update(legacy)
    assert all(torch.equal(new[k], old[k]) for k in new)
    verdict = validate(legacy)
    assert verdict.accepted, verdict


def test_a_file_mixing_both_index_forms_is_refused() -> None:
    legacy = to_raw_gaps(encode_update(update(), header(), keep_fraction=0.1))

    def mix(t: dict[str, torch.Tensor]) -> None:
        gaps = t.pop("fc.bias" + GAPS_SUFFIX)
        t["fc.bias" + INDEX_SUFFIX] = as_u8(zlib.compress(gaps.numpy().tobytes()))

    with pytest.raises(MalformedContent, match="missing|unexpected"):
        decode_update(rewrite(legacy, mix))


def test_top_10_percent_q8_index_is_much_smaller_than_one_byte_per_entry() -> None:
    x = {"w": torch.zeros(200, 500)}
    x["w"][:, :50] = torch.randn(200, 50, generator=torch.Generator().manual_seed(1))  # structured, like real deltas
    data = encode_update(x, header(), keep_fraction=0.1)
    _, t = stored(data)
    assert t["w" + INDEX_SUFFIX].numel() * 20 < t["w"].numel()


BAD_STREAMS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "decompression bomb": (lambda good: zlib.compress(b"\x01" * 5_000_000, 9), "inflates to over"),
    "truncated stream": (lambda good: good[:-5], "truncated|not a valid zlib"),
    "trailing bytes": (lambda good: good + b"\x00\x00", "follow its"),
    "bad checksum": (lambda good: good[:-1] + bytes([good[-1] ^ 1]), "not a valid zlib"),
    "not zlib at all": (lambda good: b"\xff" * 40, "not a valid zlib"),
    "empty stream": (lambda good: b"", "truncated"),
    "raw deflate without header": (lambda good: zlib.compress(zlib.decompress(good))[2:-4], "not a valid zlib"),
}


@pytest.mark.parametrize("kind", list(BAD_STREAMS))
def test_hostile_index_streams_are_refused_with_a_reason(kind: str) -> None:
    make, match = BAD_STREAMS[kind]
    data = encode_update(update(), header(), keep_fraction=0.1)
    good = stored(data)[1]["fc.weight" + INDEX_SUFFIX].numpy().tobytes()
    bad = rewrite(data, set_index("fc.weight", make(good)))
    with pytest.raises(MalformedContent, match=match):
        decode_update(bad)
    verdict = validate(bad)
    assert not verdict.accepted and verdict.reason == "malformed", verdict


def test_a_bomb_is_stopped_after_the_bound_not_inflated_whole() -> None:
    # 256 MB of gap bytes in ~250 kB: inflating it whole would take a second and 256 MB
    packer, chunk = zlib.compressobj(9), b"\x01" * (1 << 20)
    bomb = b"".join(packer.compress(chunk) for _ in range(256)) + packer.flush()
    data = rewrite(encode_update(update(), header(), keep_fraction=0.1), set_index("fc.weight", bomb))
    with pytest.raises(MalformedContent, match="inflates to over 300 gaps"):
        decode_update(data)


# -- properties ---------------------------------------------------------------------------------

shapes = st.lists(st.integers(0, 40), min_size=0, max_size=3).map(tuple)


@FAST
@given(shape=shapes, keep=st.floats(0.001, 1.0), encoding=st.sampled_from(SPARSE), seed=st.integers(0, 2**16))
def test_round_trip_keeps_the_top_entries_in_place(shape: tuple[int, ...], keep: float, encoding: str,
                                                   seed: int) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 10 ** (seed % 5 - 2)
    data = encode_update({"w": x}, header(encoding), keep_fraction=keep)
    assert data == encode_update({"w": x}, header(encoding), keep_fraction=keep)
    got_header, got = decode_update(data)
    assert got_header.encoding == encoding and got["w"].shape == x.shape and got["w"].dtype == torch.float32
    _, legacy = decode_update(to_raw_gaps(data))
    assert torch.equal(legacy["w"], got["w"])
    flat, out = x.reshape(-1), got["w"].reshape(-1)
    nonzero = out != 0
    assert int(nonzero.sum()) <= max(1, -(-int(keep * 1e9) * flat.numel() // 10**9)) or keep == 1.0
    if encoding == "sparse-f32":
        assert torch.equal(out[nonzero], flat[nonzero])  # kept entries are exact and in place
    else:
        assert bool((torch.sign(out[nonzero]) == torch.sign(flat[nonzero])).all())


@FAST
@given(gaps=st.lists(st.integers(0, 255), min_size=0, max_size=80), numel=st.integers(1, 2000))
def test_any_gap_list_decodes_to_sorted_unique_in_range_indices_or_is_refused(gaps: list[int], numel: int) -> None:
    x = {"w": torch.ones(numel)}
    count = len(gaps)

    def change(t: dict[str, torch.Tensor]) -> None:
        t["w"] = torch.arange(1, count + 1, dtype=torch.float32)
        t["w" + INDEX_SUFFIX] = as_u8(zlib.compress(bytes(gaps)))

    data = rewrite(encode_update(x, header("sparse-f32"), keep_fraction=0.5), change)
    try:
        _, got = decode_update(data)
    except MalformedContent:
        assert count > numel or 0 in gaps or sum(gaps) - 1 >= numel
        return
    assert 0 not in gaps and count <= numel
    where = torch.tensor(gaps, dtype=torch.int64).cumsum(0) - 1
    assert bool((torch.diff(where) > 0).all()) and (count == 0 or int(where[-1]) < numel)
    expected = torch.zeros(numel)
    expected[where] = torch.arange(1, count + 1, dtype=torch.float32)
    assert torch.equal(got["w"], expected)


@FAST
@given(data=st.data(), encoding=st.sampled_from(SPARSE))
def test_flipping_any_index_byte_gives_a_decoded_update_or_malformed_content(
    data: st.DataObject, encoding: str
) -> None:
    good = encode_update(update(), header(encoding), keep_fraction=0.1)
    index = bytearray(stored(good)[1]["fc.weight" + INDEX_SUFFIX].numpy().tobytes())
    for _ in range(data.draw(st.integers(1, 4))):
        index[data.draw(st.integers(0, len(index) - 1))] ^= data.draw(st.integers(1, 255))
    bad = rewrite(good, set_index("fc.weight", bytes(index)))
    try:
        _, got = decode_update(bad)
    except MalformedContent:
        return
    assert got["fc.weight"].shape == (10, 300)  # a flip that still checks out (Adler-32 is 32 bits)


@FAST
@given(cut=st.integers(1, 10_000), encoding=st.sampled_from(SPARSE))
def test_truncated_files_are_malformed(cut: int, encoding: str) -> None:
    good = encode_update(update(), header(encoding), keep_fraction=0.1)
    with pytest.raises(MalformedContent):
        decode_update(good[: max(0, len(good) - cut)])


def test_error_feedback_sends_what_pruning_dropped_a_round_later() -> None:
    first, second = update(1), update(2)
    data1, residual = encode_with_feedback(first, header(), None, keep_fraction=0.1)
    _, sent1 = decode_update(data1)
    assert all(torch.allclose(sent1[k] + residual[k], first[k], atol=1e-6) for k in first)
    assert data1 == encode_update(first, header(), keep_fraction=0.1)  # nothing to add in the first round
    data2, residual2 = encode_with_feedback(second, header(), residual, keep_fraction=0.1)
    _, sent2 = decode_update(data2)
    # everything the two rounds were asked to send is sent, but for what is still held back
    for k in first:
        assert torch.allclose(sent1[k] + sent2[k] + residual2[k], first[k] + second[k], atol=1e-5)
    assert sum(float(r.norm()) for r in residual2.values()) < sum(
        float((first[k] + second[k]).norm()) for k in first)

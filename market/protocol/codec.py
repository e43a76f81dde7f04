"""The wire format of model updates and global models: safetensors with a small typed header.

An update file is plain safetensors bytes. Its `__metadata__` (string to string) holds:

- `format`: `pt`
- `market.kind`: `update` (or `model` for global weights)
- `market.header`: compact JSON of `UpdateHeader` (or `ModelHeader`)

Bytes from others are never unpickled and never given to `torch.load`: `read_layout` parses the
safetensors header itself first (8-byte little-endian length, then JSON) and rejects, before any
large allocation, a header longer than the file or than `DecodeLimits.max_header_bytes`, data
offsets out of range, overlapping or leaving gaps (the tensors must tile the data section
exactly), a byte range that does not match dtype x shape, dtypes outside an allow-list, too many
tensors, a tensor over `max_tensor_bytes`. Only then does `safetensors.torch.load` see the bytes.
Every decoding failure raises `MalformedContent` (an `UpdateRejected` with reason `malformed`).

Compact encoding `q8` (after QuanCrypt-FL: clipping, pruning, then 8-bit quantization), applied
to each tensor x of n entries independently:

1. Clip (mean-based): c = k * mean(|x|), x' = clamp(x, -c, c). Default k = `DEFAULT_CLIP_K` = 4:
   for Gaussian-like deltas mean(|x|) ~ 0.8 sigma, so c ~ 3.2 sigma and ~0.14 % of entries are
   clipped, while the quantization step shrinks ~1.7x against no clipping (the max of 10^7
   Gaussian samples is ~5.3 sigma).
2. Prune (magnitude): keep the ceil(p * n) entries of largest |x|, set the others to 0.
   p = `keep_fraction`, default 1.0 (no pruning). Pruned entries are stored as int8 zeros: the
   file stays dense, so pruning does not shrink it (it helps only if the bytes are compressed).
3. Quantize (symmetric, per tensor): s = max|x''| / 127 stored as float32 tensor
   `<name>.__scale` (0-dim); q = round(x'' / s) as int8 in [-127, 127] (computed in float64).
   Decoding gives x^ = float32(q * s).

Reconstruction error bound, per entry i (t = smallest kept magnitude, u = 2^-24 the float32
unit roundoff):

- kept and |x_i| <= c:  |x^_i - x_i| <= s/2 + u*|x^_i|   (<= s * (1/2 + 127u) ~ 0.500008 s)
- kept and |x_i| >  c:  |x^_i - x_i| <= (|x_i| - c) + s/2 + u*|x^_i|
- pruned:               |x^_i - x_i| = |x_i| <= t
- overall:  ||x^ - x||_inf <= max( max_i (|x_i| - c)_+ + s/2 + 127*u*s ,  t if p < 1 else 0 )

with s = min(max|x|, c) / 127 <= c / 127 (= 0 for an all-zero tensor, which decodes exactly).
The q8 file is ~4x smaller than f32 (1 byte per entry plus 4 per tensor).

Compact encodings (`q4`, `q2`, `sparse-f32`, `sparse-q8`, `sparse-q4`, `sparse-q2`) complete the
QuanCrypt-FL codec. With b bits a tensor has L = 2^(b-1) - 1 levels each side (q4: 7, q2: 1, so q2
is ternary) and the same three steps as q8, in the same order:

1. Clip (mean-based) at c = k * mean(|x|). A sparse tensor takes the mean over its *kept*
   entries: the kept ones are the largest, and a clip from the whole tensor's mean would cut
   nearly all of them. Defaults `DEFAULT_CLIP_KS`: q8 4 (wave 1), q4 16, q2 8, sparse-q8 and
   sparse-q4 4, sparse-q2 1.5, chosen on a real mnist_cnn update (benchmarks/privacy.py): real
   deltas are heavy-tailed (max/mean(|x|) up to ~40 per tensor, against ~5 for Gaussian noise),
   and there q4 at k=3, the Gaussian optimum, loses 68 % of the L2 norm against 24 % at k=16
   (q8 at its default k=4 loses 61 %, at k=20 12 %: pass `clip_k` for dense q8 on real updates).
2. Prune: keep the K = max(1, ceil(p * n)) entries of largest |x|, ties broken by the lower flat
   index (a k-th-value selection, so the kept set never depends on a sort's tie order).
3. Quantize: s = max|y| / L (float32, 0-dim `<name>.__scale`), q = round(y / s) in [-L, L] in
   float64; decoded x^ = float32(q * s). The per-entry bound above holds with 127 replaced by L:
   |x^_i - x_i| <= (|x_i| - c)_+ + s/2 + u*|x^_i| for kept entries, = |x_i| <= t for pruned
   ones, s <= c / L. q2's bound s/2 = min(max|x|, c)/2 is coarse: use it only with pruning or
   where the documented relative error (benchmarks/privacy.py) is acceptable.

Storage, per logical tensor `<name>` of shape S with n entries (K stored for sparse ones):

- `<name>.__shape`: I64 [rank], the logical shape S (the stored tensors are flat).
- `<name>`: the values, flat. q4/q2 codes are stored as u = q + L in [0, 2L] (the top code
  2^b - 1 is invalid), packed little-endian into U8 (entry j in bits (j mod 8/b)*b of byte
  j div 8/b), the padding bits of the last byte zero: ceil(m * b / 8) bytes. sparse-q8 stores I8
  in [-127, 127], sparse-f32 F32.
- `<name>.__scale`: F32 [] for every quantized encoding.
- `<name>.__index` (sparse only): U8 [z], a zlib stream (RFC 1950: deflate with an Adler-32
  check) of the gap bytes g_0..g_(m-1), one per stored entry: the kept flat indices are
  i_0 = g_0 - 1, i_j = i_(j-1) + g_j, every gap in 1..255, so indices are sorted and unique by
  construction and the last must be < n. A jump over 255 is bridged by zero-valued filler entries
  at i_(j-1) + 255, so m >= K. The gap bytes of a real update are far from uniform (whole input
  pixels and filters stay pruned), so deflate shrinks them ~6x on mnist_cnn: a 10 % top-k q8 update
  is ~27x smaller than f32, against 17x with one raw byte per index and 8x with an I32 list.
- `<name>.__gaps` (sparse, codec payloads written before `.__index`): the same gap bytes, raw, as
  U8 [m]. Still decoded, never written: a file uses one index form for all its tensors.

The zlib stream is decompressed with a bound: m can be at most min(n, the entries the value
tensor holds), so at most that many bytes (+1, to see an overrun) are ever produced. A stream
that would expand further (a decompression bomb), stops early (truncated), fails its checksum
or is followed by other bytes is `MalformedContent`. Deflate output depends on the zlib build,
so two machines may write different bytes for one update; that is harmless (only the trainer
encodes an update; everyone else reads its committed bytes), and the decoded tensors agree.

Decoding checks, before any allocation of the dense tensor, that the shape has at most
`max_rank` dimensions and that the dense float32 sizes fit `max_decoded_bytes` (validation sets it
to the spec's size, so a compact update may describe a model larger than `max_bytes`);
then that the index stream inflates within its bound, that every gap is >= 1, the last index is in range, every code is valid, padding bits are
zero and the scale is finite and >= 0. Any failure is `MalformedContent`.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from market.errors import MalformedContent

__all__ = [
    "CODEC_VERSION",
    "DEFAULT_CLIP_K",
    "DEFAULT_CLIP_KS",
    "ENCODINGS",
    "ENCODING_FORMS",
    "GAPS_SUFFIX",
    "INDEX_SUFFIX",
    "RESERVED_SUFFIXES",
    "SCALE_SUFFIX",
    "SHAPE_SUFFIX",
    "DecodeLimits",
    "Encoding",
    "EncodingForm",
    "ModelHeader",
    "SafetensorsLayout",
    "TensorEntry",
    "UpdateHeader",
    "aux_suffixes_of",
    "check_update_structure",
    "decode_model",
    "decode_update",
    "dequantize_q8",
    "encode_model",
    "encode_update",
    "encode_with_feedback",
    "load_update_tensors",
    "parse_update_header",
    "quantize_q8",
    "read_layout",
    "read_stored_shape",
    "safetensors_dtype",
]

CODEC_VERSION = 1
DEFAULT_CLIP_K = 4.0
SCALE_SUFFIX = ".__scale"
SHAPE_SUFFIX = ".__shape"
GAPS_SUFFIX = ".__gaps"
INDEX_SUFFIX = ".__index"
RESERVED_SUFFIXES = (SCALE_SUFFIX, SHAPE_SUFFIX, GAPS_SUFFIX, INDEX_SUFFIX)
Encoding = Literal["f32", "q8", "q4", "q2", "sparse-f32", "sparse-q8", "sparse-q4", "sparse-q2"]
ENCODINGS: tuple[str, ...] = get_args(Encoding)
DEFAULT_CLIP_KS: dict[str, float] = {
    "q8": DEFAULT_CLIP_K,
    "q4": 16.0,
    "q2": 8.0,
    "sparse-q8": 4.0,
    "sparse-q4": 4.0,
    "sparse-q2": 1.5,
}
_MAX_GAP = 255
_ZLIB_LEVEL = 9


@dataclass(frozen=True)
class EncodingForm:
    """How an encoding stores a tensor: value bits (32 = float32) and dense or sparse."""

    bits: int
    sparse: bool

    @property
    def legacy(self) -> bool:
        """f32 and q8: values stored in the logical shape, no shape tensor (the wave-1 formats)."""
        return not self.sparse and self.bits in (32, 8)

    @property
    def levels(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def value_dtype(self) -> str:
        return {32: "F32", 8: "I8"}.get(self.bits, "U8")

    @property
    def aux_suffixes(self) -> frozenset[str]:
        """The auxiliary tensors the encoder writes for each logical tensor."""
        return self.aux_with(INDEX_SUFFIX)

    def aux_with(self, index_suffix: str) -> frozenset[str]:
        out = set()
        if self.bits < 32:
            out.add(SCALE_SUFFIX)
        if not self.legacy:
            out.add(SHAPE_SUFFIX)
        if self.sparse:
            out.add(index_suffix)
        return frozenset(out)

    @property
    def per_byte(self) -> int:
        """Codes per stored value entry (packed forms hold 8/bits)."""
        return 1 if self.bits >= 8 else 8 // self.bits

    def value_length(self, count: int) -> int:
        """Stored value entries for `count` codes (packed forms hold 8/bits codes per byte)."""
        return count if self.bits >= 8 else -(-count * self.bits // 8)


ENCODING_FORMS: dict[str, EncodingForm] = {
    "f32": EncodingForm(32, False),
    "q8": EncodingForm(8, False),
    "q4": EncodingForm(4, False),
    "q2": EncodingForm(2, False),
    "sparse-f32": EncodingForm(32, True),
    "sparse-q8": EncodingForm(8, True),
    "sparse-q4": EncodingForm(4, True),
    "sparse-q2": EncodingForm(2, True),
}


def aux_suffixes_of(form: EncodingForm, stored: Iterable[str]) -> frozenset[str]:
    """The auxiliary suffixes every logical tensor of a file needs, given the names it stores: a
    sparse file holding any raw `.__gaps` is the earlier index form throughout, else `.__index`."""
    legacy = form.sparse and any(name.endswith(GAPS_SUFFIX) for name in stored)
    return form.aux_with(GAPS_SUFFIX if legacy else INDEX_SUFFIX)

#: Fixed-width safetensors dtypes torch loads, with their item size in bytes.
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "I16": 2,
    "I32": 4,
    "I64": 8,
    "F16": 2,
    "BF16": 2,
    "F32": 4,
    "F64": 8,
}
_TORCH_TO_ST: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.int16: "I16",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
}
_NAME_TO_ST: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "int16": "I16",
    "short": "I16",
    "int32": "I32",
    "int": "I32",
    "int64": "I64",
    "long": "I64",
    "float16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float": "F32",
    "float64": "F64",
    "double": "F64",
}
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_MAX_CID = 256
_MAX_TEXT = 256
_MAX_NAME = 512
_UINT256 = 1 << 256
_INT64 = 1 << 63


def safetensors_dtype(dtype: str | torch.dtype) -> str:
    """`F32` for torch.float32, "float32", "torch.float32" or "F32"; ValueError otherwise."""
    if isinstance(dtype, torch.dtype):
        if dtype in _TORCH_TO_ST:
            return _TORCH_TO_ST[dtype]
        raise ValueError(f"dtype {dtype} has no safetensors code in this codec")
    text = str(dtype)
    if text.upper() in DTYPE_SIZES:
        return text.upper()
    key = text.removeprefix("torch.").lower()
    if key in _NAME_TO_ST:
        return _NAME_TO_ST[key]
    raise ValueError(f"unknown dtype {dtype!r}: use a torch dtype name such as 'float32'")


# -- limits and layout --------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeLimits:
    """Caps checked on untrusted bytes before anything large is allocated."""

    max_bytes: int = 1 << 30
    max_header_bytes: int = 1 << 20
    max_tensors: int = 10_000
    max_tensor_bytes: int | None = None  # None: max_bytes
    max_rank: int = 8
    #: Cap on the float32 bytes a compact update decodes to (sparse and packed files are small).
    max_decoded_bytes: int = 1 << 30
    allowed_dtypes: frozenset[str] = field(default_factory=lambda: frozenset(DTYPE_SIZES))


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the safetensors header declares it; offsets are into the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsLayout:
    """The checked header of a safetensors file: metadata and tensors in file order."""

    header_bytes: int
    metadata: dict[str, str]
    tensors: tuple[TensorEntry, ...]

    @property
    def data_offset(self) -> int:
        return 8 + self.header_bytes

    def entry(self, name: str) -> TensorEntry | None:
        for item in self.tensors:
            if item.name == name:
                return item
        return None


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
#: Deepest JSON nesting accepted in headers (a safetensors header needs 3). Checked before
#: `json.loads`, whose C parser recurses per level: with the recursion limit py-evm sets on
#: import (100000), a header of 100000 `[` would overflow the C stack and kill the process.
MAX_JSON_DEPTH = 16


def _loads_bounded(text: str, what: str) -> Any:
    """json.loads with duplicate keys and nesting deeper than MAX_JSON_DEPTH refused."""
    depth = 0
    for char in _NOT_BRACKET.sub("", _JSON_STRING.sub('""', text)):
        if char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise MalformedContent(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
        else:
            depth -= 1
    try:
        return json.loads(text, object_pairs_hook=_strict_object)
    except (ValueError, RecursionError) as exc:
        raise MalformedContent(f"{what} is not valid JSON ({_short(exc)})") from None


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:60]!r}")
        out[key] = value
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_layout(
    data: bytes | bytearray | memoryview, limits: DecodeLimits = DecodeLimits()
) -> SafetensorsLayout:
    """Parse and check the safetensors header of `data` without touching the tensor bytes.

    Raises MalformedContent (reason `malformed`) on anything unexpected.
    """
    total = len(data)
    if total > limits.max_bytes:
        raise MalformedContent(f"file is {total} bytes, over the {limits.max_bytes}-byte cap")
    if total < 8:
        raise MalformedContent(f"file is {total} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack_from("<Q", data, 0)
    if header_len > limits.max_header_bytes:
        raise MalformedContent(
            f"header claims {header_len} bytes, over the {limits.max_header_bytes}-byte cap"
        )
    if header_len > total - 8:
        raise MalformedContent(
            f"header claims {header_len} bytes but only {total - 8} follow the length field"
        )
    if header_len < 2:
        raise MalformedContent("header is too short to be a JSON object")
    raw = bytes(data[8 : 8 + header_len])
    try:
        text = raw.decode("utf-8")
    except ValueError as exc:
        raise MalformedContent(f"header is not UTF-8 ({_short(exc)})") from None
    if not text.lstrip().startswith("{"):
        raise MalformedContent("header is not a JSON object")
    header = _loads_bounded(text, "header")
    if not isinstance(header, dict):
        raise MalformedContent("header is not a JSON object")

    metadata_raw = header.pop("__metadata__", {})
    if not isinstance(metadata_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata_raw.items()
    ):
        raise MalformedContent("__metadata__ must map strings to strings")
    if len(header) > limits.max_tensors:
        raise MalformedContent(f"{len(header)} tensors, over the cap of {limits.max_tensors}")

    data_len = total - 8 - header_len
    tensor_cap = limits.max_bytes if limits.max_tensor_bytes is None else limits.max_tensor_bytes
    entries: list[TensorEntry] = []
    for name, info in header.items():
        shown = repr(name[:60])
        if not name or len(name) > _MAX_NAME:
            raise MalformedContent(f"tensor name {shown} is empty or too long")
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise MalformedContent(f"tensor {shown} must have exactly dtype, shape, data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if (
            not isinstance(dtype, str)
            or dtype not in DTYPE_SIZES
            or dtype not in limits.allowed_dtypes
        ):
            raise MalformedContent(f"tensor {shown} has dtype {str(dtype)[:20]!r}, not allowed")
        if (
            not isinstance(shape, list)
            or len(shape) > limits.max_rank
            or not all(_is_int(d) and d >= 0 for d in shape)
        ):
            raise MalformedContent(
                f"tensor {shown} shape must be at most {limits.max_rank} non-negative integers"
            )
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
        ):
            raise MalformedContent(f"tensor {shown} data_offsets must be two integers")
        start, end = offsets
        numel = 1
        for dim in shape:
            numel *= dim
            if numel * DTYPE_SIZES[dtype] > tensor_cap:
                break
        nbytes = numel * DTYPE_SIZES[dtype]
        if nbytes > tensor_cap:
            raise MalformedContent(
                f"tensor {shown} declares {dtype}{str(shape)[:80]}, over the {tensor_cap}-byte "
                "tensor cap"
            )
        if not 0 <= start <= end <= data_len:
            raise MalformedContent(
                f"tensor {shown} offsets [{start}, {end}] fall outside the {data_len}-byte data"
            )
        if end - start != nbytes:
            raise MalformedContent(
                f"tensor {shown} spans {end - start} bytes but {dtype}{shape} needs {nbytes}"
            )
        entries.append(TensorEntry(name, dtype, tuple(shape), start, end))

    entries.sort(key=lambda e: (e.start, e.end))
    cursor = 0
    for item in entries:
        if item.start < cursor:
            raise MalformedContent(f"tensor {item.name[:60]!r} overlaps the previous tensor")
        if item.start > cursor:
            raise MalformedContent(
                f"{item.start - cursor} unclaimed bytes before {item.name[:60]!r}"
            )
        cursor = item.end
    if cursor != data_len:
        raise MalformedContent(f"{data_len - cursor} bytes after the last tensor are unclaimed")
    return SafetensorsLayout(header_len, dict(metadata_raw), tuple(entries))


def _load_checked(
    data: bytes | bytearray | memoryview, layout: SafetensorsLayout
) -> dict[str, torch.Tensor]:
    """safetensors.torch.load on bytes `read_layout` accepted; tensors in file order."""
    try:
        loaded = _st_load(bytes(data))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own SafetensorError
        raise MalformedContent(f"safetensors refused the file ({_short(exc)})") from None
    if set(loaded) != {item.name for item in layout.tensors}:
        raise MalformedContent("safetensors found other tensors than the header declares")
    return {item.name: loaded[item.name] for item in layout.tensors}


# -- headers ------------------------------------------------------------------------------------


def _check_uint256(name: str, value: object) -> None:
    if not _is_int(value) or not 0 <= value < _UINT256:  # type: ignore[operator]
        raise ValueError(f"{name} must be an integer in [0, 2**256), got {value!r:.60}")


def _check_text(name: str, value: object, limit: int = _MAX_TEXT) -> None:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"{name} must be a non-empty string of at most {limit} characters")


def _check_cid(name: str, value: object) -> None:
    _check_text(name, value, _MAX_CID)
    from market.storage.base import parse_cid  # local: keeps the codec import light

    try:
        parse_cid(str(value))
    except Exception:  # noqa: BLE001 - any failure means "not a CID"
        raise ValueError(f"{name} {str(value)[:60]!r} is not a CID") from None


@dataclass(frozen=True)
class UpdateHeader:
    """What an update claims about itself; checked against the round by `validate_update`."""

    project_id: int
    round: int
    base_model_cid: str
    trainer: str
    num_samples: int
    encoding: Encoding = "f32"
    codec_version: int = CODEC_VERSION

    def __post_init__(self) -> None:
        _check_uint256("project_id", self.project_id)
        _check_uint256("round", self.round)
        _check_cid("base_model_cid", self.base_model_cid)
        if not isinstance(self.trainer, str) or not _ADDRESS.match(self.trainer):
            raise ValueError(
                f"trainer must be a 0x-prefixed 20-byte hex address, got {str(self.trainer)[:60]!r}"
            )
        if not _is_int(self.num_samples) or not -_INT64 <= self.num_samples < _INT64:
            raise ValueError("num_samples must be a 64-bit integer")
        if self.encoding not in ENCODINGS:
            raise ValueError(
                f"encoding must be one of {ENCODINGS}, got {str(self.encoding)[:20]!r}"
            )
        if self.codec_version != CODEC_VERSION or not _is_int(self.codec_version):
            raise ValueError(f"codec_version {self.codec_version!r:.20} is not {CODEC_VERSION}")


@dataclass(frozen=True)
class ModelHeader:
    """What a global model file says about itself."""

    project_id: int
    round: int
    architecture: str
    codec_version: int = CODEC_VERSION

    def __post_init__(self) -> None:
        _check_uint256("project_id", self.project_id)
        _check_uint256("round", self.round)
        _check_text("architecture", self.architecture)
        if self.codec_version != CODEC_VERSION or not _is_int(self.codec_version):
            raise ValueError(f"codec_version {self.codec_version!r:.20} is not {CODEC_VERSION}")


def _header_metadata(kind: str, header: UpdateHeader | ModelHeader) -> dict[str, str]:
    return {
        "format": "pt",
        "market.kind": kind,
        "market.header": json.dumps(asdict(header), separators=(",", ":"), sort_keys=True),
    }


def _parse_header(layout: SafetensorsLayout, kind: str, cls: type[Any]) -> Any:
    metadata = layout.metadata
    found = metadata.get("market.kind")
    if found is None:
        raise MalformedContent(f"no market.kind metadata: not a market {kind} file")
    if found != kind:
        raise MalformedContent(f"file is a market {found[:20]!r} file, not a market {kind}")
    text = metadata.get("market.header")
    if text is None:
        raise MalformedContent(f"the {kind} has no market.header metadata")
    raw = _loads_bounded(text, "market.header")
    names = {f.name for f in fields(cls)}
    if not isinstance(raw, dict) or set(raw) != names:
        got = sorted(raw)[:10] if isinstance(raw, dict) else type(raw).__name__
        raise MalformedContent(f"market.header must have exactly {sorted(names)}, got {got}")
    try:
        return cls(**raw)
    except (TypeError, ValueError) as exc:
        raise MalformedContent(f"market.header: {_short(exc)}") from None


def parse_update_header(layout: SafetensorsLayout) -> UpdateHeader:
    """The `UpdateHeader` in a checked layout's metadata (MalformedContent if absent/invalid)."""
    header: UpdateHeader = _parse_header(layout, "update", UpdateHeader)
    return header


# -- q8 -----------------------------------------------------------------------------------------


def quantize_q8(
    tensor: torch.Tensor, *, clip_k: float = DEFAULT_CLIP_K, keep_fraction: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip at clip_k * mean(|x|), keep the top `keep_fraction` by magnitude, quantize to int8.

    Returns `(q, scale)`: int8 tensor of the same shape and a 0-dim float32 scale. See the
    module docstring for the error bound.
    """
    if not clip_k > 0 or not math.isfinite(clip_k):
        raise ValueError("clip_k must be a positive finite number")
    if not 0 < keep_fraction <= 1:
        raise ValueError("keep_fraction must be in (0, 1]")
    x = tensor.detach().to(device="cpu", dtype=torch.float32).reshape(-1)
    n = x.numel()
    if n == 0:
        return torch.zeros(tensor.shape, dtype=torch.int8), torch.tensor(0.0, dtype=torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("cannot quantize a tensor holding NaN or Inf")
    magnitude = x.abs()
    clip = float(clip_k * magnitude.double().mean())
    y = x.clamp(-clip, clip)
    if keep_fraction < 1:
        keep = max(1, math.ceil(keep_fraction * n))
        if keep < n:
            mask = torch.zeros(n, dtype=torch.bool)
            mask[magnitude.topk(keep, sorted=False).indices] = True
            y = torch.where(mask, y, torch.zeros((), dtype=torch.float32))
    q, scale32 = _quantize(y, 127)
    return q.to(torch.int8).reshape(tensor.shape), scale32


def _quantize(y: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization of a flat float32 tensor to int16 codes in [-levels, levels]."""
    if y.numel() == 0:
        return torch.zeros(0, dtype=torch.int16), torch.tensor(0.0, dtype=torch.float32)
    peak = float(y.abs().max())
    scale32 = torch.tensor(peak / levels, dtype=torch.float32)
    scale = float(scale32)
    if scale == 0.0:
        return torch.zeros(y.numel(), dtype=torch.int16), scale32
    return torch.round_(y.double().div_(scale)).clamp_(-levels, levels).to(torch.int16), scale32


def dequantize_q8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32(q * scale)."""
    return q.to(torch.float32) * scale.to(torch.float32)


# -- compact encodings --------------------------------------------------------------------------


def _top_indices(magnitude: torch.Tensor, keep: int) -> torch.Tensor:
    """Sorted flat indices of the `keep` largest magnitudes, ties to the lower index."""
    n = magnitude.numel()
    if keep >= n:
        return torch.arange(n, dtype=torch.int64)
    threshold = torch.kthvalue(magnitude, n - keep + 1).values
    above = (magnitude > threshold).nonzero().flatten()
    ties = (magnitude == threshold).nonzero().flatten()[: keep - above.numel()]
    return torch.cat([above, ties]).sort().values


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Non-negative codes (< 2^bits) packed little-endian into uint8, padding bits zero."""
    per = 8 // bits
    padded = torch.zeros(-(-codes.numel() // per) * per, dtype=torch.int64)
    padded[: codes.numel()] = codes.to(torch.int64)
    shifts = torch.arange(per, dtype=torch.int64) * bits
    return (padded.reshape(-1, per) << shifts).sum(dim=1).to(torch.uint8)


def _unpack(packed: torch.Tensor, bits: int, count: int, what: str) -> torch.Tensor:
    """int16 codes of `_pack`; MalformedContent on set padding bits."""
    per = 8 // bits
    shifts = torch.arange(per, dtype=torch.int16) * bits
    codes = ((packed.to(torch.int16).unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)
    if bool(codes[count:].any()):
        raise MalformedContent(f"{what}: padding bits after the last code are not zero")
    return codes[:count]


def _gaps_for(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gaps, slot) for sorted unique indices: uint8 gaps with zero-valued fillers bridging jumps
    over 255, and for each index its slot among the stored entries."""
    if indices.numel() == 0:
        return torch.zeros(0, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    jumps = torch.diff(indices, prepend=torch.tensor([-1], dtype=torch.int64))
    fillers = (jumps - 1) // _MAX_GAP
    slot = torch.cumsum(fillers + 1, dim=0) - 1
    gaps = torch.full((int(slot[-1]) + 1,), _MAX_GAP, dtype=torch.int64)
    gaps[slot] = jumps - _MAX_GAP * fillers
    return gaps.to(torch.uint8), slot


def _encode_compact(
    name: str, value: torch.Tensor, form: EncodingForm, clip_k: float, keep_fraction: float
) -> dict[str, torch.Tensor]:
    if not clip_k > 0 or not math.isfinite(clip_k):
        raise ValueError("clip_k must be a positive finite number")
    if not 0 < keep_fraction <= 1:
        raise ValueError("keep_fraction must be in (0, 1]")
    x = value.reshape(-1)
    n = x.numel()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"cannot encode tensor {name!r:.60}: it holds NaN or Inf")
    keep = n if keep_fraction == 1 or n == 0 else min(n, max(1, math.ceil(keep_fraction * n)))
    kept = _top_indices(x.abs(), keep)
    out = {name + SHAPE_SUFFIX: torch.tensor(list(value.shape), dtype=torch.int64)}
    if form.sparse:
        values = x[kept]
    elif keep < n:
        values = torch.zeros(n, dtype=torch.float32)
        values[kept] = x[kept]
    else:
        values = x
    if form.bits < 32:
        basis = values if form.sparse else x
        clip = float(clip_k * basis.abs().double().mean()) if basis.numel() else 0.0
        codes, scale = _quantize(values.clamp(-clip, clip), form.levels)
        out[name + SCALE_SUFFIX] = scale
        values = codes
    if form.sparse:
        gaps, slot = _gaps_for(kept)
        stored = torch.zeros(gaps.numel(), dtype=values.dtype)
        stored[slot] = values
        packed = zlib.compress(gaps.numpy().tobytes(), _ZLIB_LEVEL)
        out[name + INDEX_SUFFIX] = torch.frombuffer(bytearray(packed), dtype=torch.uint8)
        values = stored
    if form.bits == 8:
        out[name] = values.to(torch.int8)
    elif form.bits < 8:
        out[name] = _pack(values + form.levels, form.bits)
    else:
        out[name] = values.contiguous()
    return out


def read_stored_shape(
    data: bytes | bytearray | memoryview,
    layout: SafetensorsLayout,
    name: str,
    limits: DecodeLimits = DecodeLimits(),
) -> tuple[int, ...]:
    """The logical shape in `<name>.__shape` of a compact update, read from the raw bytes (no
    tensor is loaded); MalformedContent if it is not an I64 vector of at most `max_rank`
    non-negative sizes."""
    entry = layout.entry(name + SHAPE_SUFFIX)
    if entry is None:
        raise MalformedContent(f"compact tensor {name[:60]!r} has no {SHAPE_SUFFIX} tensor")
    if entry.dtype != "I64" or len(entry.shape) != 1 or entry.shape[0] > limits.max_rank:
        raise MalformedContent(
            f"{SHAPE_SUFFIX} of {name[:60]!r} must be an I64 vector of at most {limits.max_rank} sizes"
        )
    start = layout.data_offset + entry.start
    shape = struct.unpack_from(f"<{entry.shape[0]}q", data, start)
    if any(d < 0 for d in shape):
        raise MalformedContent(f"{SHAPE_SUFFIX} of {name[:60]!r} holds a negative size")
    return tuple(shape)


def _stored_bytes(data: bytes | bytearray | memoryview, layout: SafetensorsLayout, entry: TensorEntry) -> bytes:
    return bytes(data[layout.data_offset + entry.start : layout.data_offset + entry.end])


def _inflate_index(packed: bytes, bound: int, what: str) -> bytes:
    """The gap bytes of an `.__index` zlib stream, never more than `bound` of them produced."""
    inflater = zlib.decompressobj()
    try:
        gaps = inflater.decompress(packed, bound + 1)
    except zlib.error as exc:
        raise MalformedContent(f"{what}: its {INDEX_SUFFIX} is not a valid zlib stream ({_short(exc)})") from None
    if len(gaps) > bound:
        raise MalformedContent(
            f"{what}: its {INDEX_SUFFIX} inflates to over {bound} gaps, more entries than the tensor can hold"
        )
    if not inflater.eof:
        raise MalformedContent(f"{what}: its {INDEX_SUFFIX} zlib stream is truncated")
    if inflater.unused_data:
        raise MalformedContent(f"{what}: {len(inflater.unused_data)} bytes follow its {INDEX_SUFFIX} zlib stream")
    return gaps


def _compact_count(
    data: bytes | bytearray | memoryview, layout: SafetensorsLayout, name: str, form: EncodingForm, numel: int
) -> tuple[int, torch.Tensor | None]:
    """Stored entries of a compact tensor, its stored tensors checked against each other, and a
    sparse tensor's gap bytes (uint8; None for dense forms)."""
    what = f"{'sparse' if form.sparse else 'packed'} tensor {name[:60]!r}"
    value = layout.entry(name)
    assert value is not None
    count, gaps = numel, None
    if form.sparse:
        index = layout.entry(name + INDEX_SUFFIX)
        legacy = layout.entry(name + GAPS_SUFFIX)
        stored = index if index is not None else legacy
        suffix = INDEX_SUFFIX if index is not None else GAPS_SUFFIX
        if stored is None or stored.dtype != "U8" or len(stored.shape) != 1:
            raise MalformedContent(f"{what} needs a U8 vector {suffix}")
        if index is not None:
            # the values bound the entries, so the file's own size bounds what inflating produces
            capacity = value.shape[0] * form.per_byte if len(value.shape) == 1 else 0
            raw_gaps = _inflate_index(_stored_bytes(data, layout, index), min(numel, capacity), what)
        else:
            raw_gaps = _stored_bytes(data, layout, stored)
        count = len(raw_gaps)
        if count > numel:
            raise MalformedContent(f"{what} stores {count} entries for a tensor of {numel}")
        gaps = torch.frombuffer(bytearray(raw_gaps), dtype=torch.uint8) if count else torch.zeros(0, dtype=torch.uint8)
    if value.dtype != form.value_dtype or len(value.shape) != 1:
        raise MalformedContent(f"{what} values must be a {form.value_dtype} vector, not {value.dtype}")
    if value.shape[0] != form.value_length(count):
        raise MalformedContent(
            f"{what} has {value.shape[0]} value entries, its {count} codes need {form.value_length(count)}"
        )
    if form.bits < 32:
        scale = layout.entry(name + SCALE_SUFFIX)
        if scale is None or scale.dtype != "F32" or scale.shape != ():
            raise MalformedContent(f"{what} lacks a 0-dim F32 scale")
    return count, gaps


def _decode_compact(
    name: str,
    raw: Mapping[str, torch.Tensor],
    form: EncodingForm,
    shape: tuple[int, ...],
    count: int,
    gaps: torch.Tensor | None,
) -> torch.Tensor:
    what = f"{'sparse' if form.sparse else 'packed'} tensor {name[:60]!r}"
    numel = math.prod(shape)
    stored = raw[name]
    if form.bits < 32:
        scale = raw[name + SCALE_SUFFIX]
        if not (bool(torch.isfinite(scale)) and float(scale) >= 0):
            raise MalformedContent(f"{what} has scale {float(scale)!r}, expected a finite value >= 0")
        if form.bits == 8:
            codes = stored.to(torch.int16)
        else:
            codes = _unpack(stored, form.bits, count, what) - form.levels
        if bool((codes.abs() > form.levels).any()):
            raise MalformedContent(f"{what} holds a code outside [-{form.levels}, {form.levels}]")
        values = dequantize_q8(codes, scale)
    else:
        values = stored
    if gaps is None:
        return values.reshape(shape)
    if count and int(gaps.min()) == 0:
        raise MalformedContent(f"{what} has a zero index gap (an index repeats or precedes 0)")
    index = gaps.to(torch.int64).cumsum(0) - 1
    if count and int(index[-1]) >= numel:
        raise MalformedContent(f"{what} has index {int(index[-1])}, out of range for {numel} entries")
    dense = torch.zeros(numel, dtype=torch.float32)
    dense[index] = values
    return dense.reshape(shape)


# -- updates ------------------------------------------------------------------------------------


def _check_names(tensors: Mapping[str, torch.Tensor]) -> None:
    if not tensors:
        raise ValueError("an update needs at least one tensor")
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME or name == "__metadata__":
            raise ValueError(f"bad tensor name {name!r:.60}")
        if name.endswith(RESERVED_SUFFIXES):
            raise ValueError(f"tensor names may not end with {name[name.rfind('.'):]!r}: {name!r:.60}")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name!r:.60} is a {type(value).__name__}, not a torch.Tensor")


def encode_update(
    tensors: Mapping[str, torch.Tensor],
    header: UpdateHeader,
    *,
    clip_k: float | None = None,
    keep_fraction: float = 1.0,
) -> bytes:
    """Serialize float32 deltas as safetensors with `header`, in `header.encoding` (see the
    module docstring). `clip_k` defaults to the encoding's `DEFAULT_CLIP_KS` entry;
    `keep_fraction` < 1 prunes to the largest entries (f32 ignores both)."""
    if not isinstance(header, UpdateHeader):
        raise TypeError("header must be an UpdateHeader")
    _check_names(tensors)
    form = ENCODING_FORMS[header.encoding]
    k = DEFAULT_CLIP_KS.get(header.encoding, DEFAULT_CLIP_K) if clip_k is None else clip_k
    out: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        if value.dtype != torch.float32:
            raise TypeError(f"update tensor {name!r:.60} is {value.dtype}, updates are float32")
        value = value.detach().to("cpu").contiguous()
        if header.encoding == "f32":
            out[name] = value
        elif not form.legacy:
            out.update(_encode_compact(name, value, form, k, keep_fraction))
        else:
            q, scale = quantize_q8(value, clip_k=k, keep_fraction=keep_fraction)
            out[name] = q
            out[name + SCALE_SUFFIX] = scale
    return canonical_safetensors(_st_save(out, metadata=_header_metadata("update", header)))


def encode_with_feedback(
    tensors: Mapping[str, torch.Tensor],
    header: UpdateHeader,
    residual: Mapping[str, torch.Tensor] | None,
    *,
    clip_k: float | None = None,
    keep_fraction: float = 1.0,
) -> tuple[bytes, dict[str, torch.Tensor]]:
    """Error feedback for lossy encodings (Seide et al. 2014; Stich et al. 2018 for top-k): encode
    `tensors` plus what the previous round's encoding dropped (`residual`, None at first), and
    return the bytes and the new residual, the part of the corrected update the bytes do not carry.
    Pruned entries are then sent a round later instead of never, which is what keeps top-k
    sparsification close to dense accuracy. The residual never leaves the trainer."""
    corrected = {
        name: value + residual[name] if residual is not None else value for name, value in tensors.items()
    }
    data = encode_update(corrected, header, clip_k=clip_k, keep_fraction=keep_fraction)
    _, sent = decode_update(data)  # our own bytes
    return data, {name: corrected[name] - sent[name] for name in corrected}


def check_update_structure(layout: SafetensorsLayout, header: UpdateHeader) -> list[str]:
    """The logical tensor names of an update, in file order; MalformedContent if the stored
    tensors do not fit the encoding (f32: all F32, no scales; q8: I8 + a 0-dim F32 scale each;
    compact encodings: exactly the auxiliary tensors of the form, see the module docstring)."""
    form = ENCODING_FORMS[header.encoding]
    if not form.legacy:
        return _compact_names(layout, form)
    names = [item.name for item in layout.tensors if not item.name.endswith(SCALE_SUFFIX)]
    scales = {item.name: item for item in layout.tensors if item.name.endswith(SCALE_SUFFIX)}
    if not names:
        raise MalformedContent("the update holds no tensors")
    if header.encoding == "f32":
        if scales:
            raise MalformedContent("an f32 update holds q8 scale tensors")
        for item in layout.tensors:
            if item.dtype != "F32":
                raise MalformedContent(f"f32 update tensor {item.name[:60]!r} is {item.dtype}")
        return names
    by_name = {item.name: item for item in layout.tensors}
    for name in names:
        stored = by_name[name]
        scale = scales.pop(name + SCALE_SUFFIX, None)
        if stored.dtype != "I8":
            raise MalformedContent(f"q8 update tensor {name[:60]!r} is {stored.dtype}, not I8")
        if scale is None or scale.dtype != "F32" or scale.shape != ():
            raise MalformedContent(f"q8 update tensor {name[:60]!r} lacks a 0-dim F32 scale")
    if scales:
        raise MalformedContent(f"scale without a tensor: {next(iter(scales))[:60]!r}")
    return names


def _compact_names(layout: SafetensorsLayout, form: EncodingForm) -> list[str]:
    names = [item.name for item in layout.tensors if not item.name.endswith(RESERVED_SUFFIXES)]
    if not names:
        raise MalformedContent("the update holds no tensors")
    aux = {item.name for item in layout.tensors if item.name.endswith(RESERVED_SUFFIXES)}
    wanted = {name + suffix for name in names for suffix in aux_suffixes_of(form, aux)}
    if aux != wanted:
        odd = min(aux ^ wanted)
        raise MalformedContent(f"auxiliary tensor {odd[:60]!r} is {'missing' if odd in wanted else 'unexpected'}")
    return names


def load_update_tensors(
    data: bytes | bytearray | memoryview,
    layout: SafetensorsLayout,
    header: UpdateHeader,
    limits: DecodeLimits = DecodeLimits(),
) -> dict[str, torch.Tensor]:
    """The float32 tensors of a checked update (dequantized, sparse ones made dense), in file
    order. Compact dense sizes are checked against `limits` before anything is allocated."""
    names = check_update_structure(layout, header)
    form = ENCODING_FORMS[header.encoding]
    if not form.legacy:
        cap = limits.max_decoded_bytes
        plan: dict[str, tuple[tuple[int, ...], int, torch.Tensor | None]] = {}
        total = 0
        for name in names:
            shape = read_stored_shape(data, layout, name, limits)
            numel = 1
            for dim in shape:
                numel *= dim
                if numel * 4 > cap:
                    raise MalformedContent(
                        f"tensor {name[:60]!r} declares shape {list(shape)[:8]}, over the {cap}-byte decoded cap"
                    )
            total += numel * 4
            if total > limits.max_decoded_bytes:
                raise MalformedContent(f"the update decodes to over {limits.max_decoded_bytes} bytes")
            plan[name] = (shape, *_compact_count(data, layout, name, form, numel))
        raw = _load_checked(data, layout)
        return {name: _decode_compact(name, raw, form, *plan[name]) for name in names}
    raw = _load_checked(data, layout)
    if header.encoding == "f32":
        return {name: raw[name] for name in names}
    return {name: dequantize_q8(raw[name], raw[name + SCALE_SUFFIX]) for name in names}


def decode_update(
    data: bytes | bytearray | memoryview, limits: DecodeLimits = DecodeLimits()
) -> tuple[UpdateHeader, dict[str, torch.Tensor]]:
    """Header and float32 tensors of an update file; MalformedContent if it does not parse.

    Checks only the format; whether the update fits a round is `validation.validate_update`.
    """
    layout = read_layout(data, limits)
    header = parse_update_header(layout)
    return header, load_update_tensors(data, layout, header, limits)


# -- models -------------------------------------------------------------------------------------


def encode_model(tensors: Mapping[str, torch.Tensor], header: ModelHeader) -> bytes:
    """Serialize global model weights (any dtype in `DTYPE_SIZES`) with `header`."""
    if not isinstance(header, ModelHeader):
        raise TypeError("header must be a ModelHeader")
    _check_names(tensors)
    out = {}
    for name, value in tensors.items():
        safetensors_dtype(value.dtype)  # refuses dtypes the decoder would not accept
        out[name] = value.detach().to("cpu").contiguous()
    return canonical_safetensors(_st_save(out, metadata=_header_metadata("model", header)))


def decode_model(
    data: bytes | bytearray | memoryview, limits: DecodeLimits = DecodeLimits()
) -> tuple[ModelHeader, dict[str, torch.Tensor]]:
    """Header and tensors (file order) of a global model file; MalformedContent if invalid."""
    layout = read_layout(data, limits)
    header: ModelHeader = _parse_header(layout, "model", ModelHeader)
    return header, _load_checked(data, layout)


def canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with a canonical header: metadata keys sorted, tensors in data
    order, compact JSON padded with spaces to 8 bytes. The safetensors library writes its
    `__metadata__` map in a random order (a Rust HashMap), so two encodings of the same weights
    differ; model bytes must not, or the model CID and digest would change on every run."""
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(bytes(data[8 : 8 + n]))
    out: dict[str, Any] = {}
    meta = header.pop("__metadata__", None)
    if meta is not None:
        out["__metadata__"] = dict(sorted(meta.items()))
    for name, info in sorted(header.items(), key=lambda kv: (tuple(kv[1]["data_offsets"]), kv[0])):
        out[name] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": info["data_offsets"]}
    text = json.dumps(out, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(data[8 + n :])


def _short(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:160]

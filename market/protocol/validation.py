"""`validate_update`: decide whether a trainer's update bytes may enter a round's aggregation.

Checks run in a fixed order and stop at the first failure; each failure has a short stable
reason code (`REASONS`):

    too_large         the bytes exceed max_bytes (checked before anything else is read)
    digest_mismatch   sha256(bytes) differs from the digest committed on chain
    malformed         not a safetensors update this codec accepts (header, offsets, dtypes,
                      header JSON, encoding structure, ...; see `market.codec.read_layout`)
    wrong_project     the header names another project
    wrong_round       ... another round
    wrong_base_model  ... another base (global) model CID (compared as multihashes)
    wrong_trainer     ... another trainer address (case-insensitive)
    wrong_keys        the tensor names differ from the spec (q8: a scale is missing or extra)
    wrong_shape       a tensor's shape differs from the spec
    wrong_dtype       a tensor's stored dtype does not decode to the spec's dtype
    non_finite        a decoded value is NaN or Inf
    norm_too_large    the L2 norm over all decoded values exceeds max_norm
    bad_sample_count  the claimed sample count is <= 0 or above max_samples

Keys, shapes and dtypes are checked from the safetensors header alone, so no tensor memory is
allocated for an update that does not match the spec. Compact encodings (q4, q2, sparse-*) store
flat tensors with the logical shape in a small `<name>.__shape` vector, which is read from the raw
bytes and compared with the spec (`wrong_shape`) before anything is decoded; a missing or extra
auxiliary tensor is `wrong_keys`, a value tensor of another dtype `wrong_dtype`, and every other
inconsistency of a sparse or packed payload (gap/value counts that disagree, a zero gap, an index
out of range, an invalid code, set padding bits, a negative or non-finite scale) is `malformed`.
`validate_update` never raises on bad bytes: every failure is a `UpdateCheck` with a reason. (A
malformed `spec` is a programming error and raises ValueError.)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from market.errors import MalformedContent, UpdateRejected
from market.protocol.codec import (
    ENCODING_FORMS,
    RESERVED_SUFFIXES,
    SCALE_SUFFIX,
    DecodeLimits,
    SafetensorsLayout,
    UpdateHeader,
    aux_suffixes_of,
    load_update_tensors,
    parse_update_header,
    read_layout,
    read_stored_shape,
    safetensors_dtype,
)
from market.storage.base import same_multihash

__all__ = ["REASONS", "TensorSpec", "UpdateCheck", "update_spec", "validate_update"]

REASONS = (
    "too_large",
    "digest_mismatch",
    "malformed",
    "wrong_project",
    "wrong_round",
    "wrong_base_model",
    "wrong_trainer",
    "wrong_keys",
    "wrong_shape",
    "wrong_dtype",
    "non_finite",
    "norm_too_large",
    "bad_sample_count",
)

#: name -> (shape, dtype name), in the model's state_dict order.
TensorSpec = Mapping[str, tuple[tuple[int, ...], str]]

DEFAULT_MAX_SAMPLES = 1_000_000_000


@dataclass(frozen=True)
class UpdateCheck:
    """The outcome of `validate_update`. On acceptance `tensors` are float32, in spec order."""

    accepted: bool
    reason: str | None
    detail: str
    header: UpdateHeader | None
    tensors: dict[str, torch.Tensor] | None
    norm: float | None

    def raise_if_rejected(self) -> None:
        """Raise UpdateRejected(reason, detail) for a rejection."""
        if not self.accepted:
            raise UpdateRejected(self.reason or "malformed", self.detail)


def update_spec(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], str]]:
    """The spec of updates to a model: its state_dict's names and shapes, all float32 deltas."""
    return {name: (tuple(value.shape), "float32") for name, value in state_dict.items()}


def _reject(reason: str, detail: str, header: UpdateHeader | None = None) -> UpdateCheck:
    return UpdateCheck(False, reason, detail, header, None, None)


def _names(items: Iterable[str], limit: int = 3) -> str:
    listed = sorted(str(i)[:60] for i in items)
    more = f" (+{len(listed) - limit} more)" if len(listed) > limit else ""
    return ", ".join(repr(i) for i in listed[:limit]) + more


def validate_update(
    data: bytes,
    *,
    expected_digest: bytes | None,
    project_id: int,
    round: int,
    base_model_cid: str,
    trainer: str,
    spec: TensorSpec,
    max_bytes: int,
    max_norm: float,
    max_header_bytes: int = 1 << 20,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> UpdateCheck:
    """Check `data` against the round it was committed for; see the module docstring."""
    expected = {
        name: (tuple(int(d) for d in shape), safetensors_dtype(dtype))
        for name, (shape, dtype) in spec.items()
    }
    try:
        return _validate(
            data,
            expected_digest=expected_digest,
            project_id=project_id,
            round_=round,
            base_model_cid=base_model_cid,
            trainer=trainer,
            expected=expected,
            max_bytes=max_bytes,
            max_norm=max_norm,
            max_header_bytes=max_header_bytes,
            max_samples=max_samples,
        )
    except MalformedContent as exc:
        return _reject("malformed", exc.detail)
    except Exception as exc:  # noqa: BLE001 - never raise on bad input
        text = " ".join(str(exc).split())[:160] or type(exc).__name__
        return _reject("malformed", f"could not decode the update ({type(exc).__name__}: {text})")


def _validate(
    data: object,
    *,
    expected_digest: bytes | None,
    project_id: int,
    round_: int,
    base_model_cid: str,
    trainer: str,
    expected: dict[str, tuple[tuple[int, ...], str]],
    max_bytes: int,
    max_norm: float,
    max_header_bytes: int,
    max_samples: int,
) -> UpdateCheck:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return _reject("malformed", f"expected bytes, got {type(data).__name__}")
    size = len(data)
    if size > max_bytes:
        return _reject("too_large", f"{size} bytes, over the {max_bytes}-byte cap")

    if expected_digest is not None:
        got = hashlib.sha256(data).digest()
        if got != bytes(expected_digest):
            return _reject(
                "digest_mismatch",
                f"sha256 is {got.hex()[:16]}..., the commitment is {bytes(expected_digest).hex()[:16]}...",
            )

    dense_bytes = 4 * sum(math.prod(shape) for shape, _ in expected.values())
    limits = DecodeLimits(max_bytes=max_bytes, max_header_bytes=max_header_bytes, max_decoded_bytes=dense_bytes)
    layout = read_layout(data, limits)
    header = parse_update_header(layout)

    if header.project_id != project_id:
        return _reject(
            "wrong_project",
            f"header says project {header.project_id}, expected {project_id}",
            header,
        )
    if header.round != round_:
        return _reject(
            "wrong_round", f"header says round {header.round}, expected {round_}", header
        )
    if not _same_cid(header.base_model_cid, base_model_cid):
        return _reject(
            "wrong_base_model",
            f"header says base model {header.base_model_cid[:80]}, expected {str(base_model_cid)[:80]}",
            header,
        )
    if header.trainer.lower() != str(trainer).lower():
        return _reject(
            "wrong_trainer", f"header says trainer {header.trainer}, expected {trainer}", header
        )

    if ENCODING_FORMS[header.encoding].legacy:
        verdict = _check_structure(layout, header, expected)
    else:
        verdict = _check_compact_structure(data, layout, header, expected, limits)
    if verdict is not None:
        return verdict

    decoded = load_update_tensors(data, layout, header, limits)
    tensors = {name: decoded[name] for name in expected}

    # One float64 pass per tensor: a NaN or Inf anywhere makes that tensor's norm non-finite
    # (float32 values squared in float64 cannot overflow), so finiteness needs no second pass.
    norms = {
        name: float(torch.linalg.vector_norm(value, dtype=torch.float64))
        for name, value in tensors.items()
    }
    for name, value in tensors.items():
        if not math.isfinite(norms[name]):
            bad = int((~torch.isfinite(value)).sum())
            return _reject("non_finite", f"tensor {name[:60]!r} holds {bad} NaN/Inf values", header)

    norm = math.sqrt(math.fsum(n * n for n in norms.values()))
    if not norm <= max_norm:
        return _reject(
            "norm_too_large", f"L2 norm {norm:.6g} exceeds the cap {max_norm:.6g}", header
        )

    samples = header.num_samples
    if samples <= 0 or samples > max_samples:
        return _reject(
            "bad_sample_count",
            f"claims {samples} samples; expected 1..{max_samples}",
            header,
        )
    return UpdateCheck(
        True,
        None,
        f"accepted: {len(tensors)} tensors, {size} bytes, norm {norm:.6g}",
        header,
        tensors,
        norm,
    )


def _same_cid(a: str, b: str) -> bool:
    try:
        return same_multihash(a, b)
    except Exception:  # noqa: BLE001 - an unparsable CID matches nothing
        return False


def _check_structure(
    layout: SafetensorsLayout,
    header: UpdateHeader,
    expected: dict[str, tuple[tuple[int, ...], str]],
) -> UpdateCheck | None:
    entries = {item.name: item for item in layout.tensors}
    logical = {name for name in entries if not name.endswith(SCALE_SUFFIX)}
    scales = {name for name in entries if name.endswith(SCALE_SUFFIX)}
    wanted = set(expected)
    if logical != wanted:
        missing, extra = wanted - logical, logical - wanted
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if extra:
            parts.append(f"unexpected {_names(extra)}")
        return _reject("wrong_keys", "; ".join(parts), header)
    wanted_scales = {name + SCALE_SUFFIX for name in wanted} if header.encoding == "q8" else set()
    if scales != wanted_scales:
        missing, extra = wanted_scales - scales, scales - wanted_scales
        parts = []
        if missing:
            parts.append(f"missing q8 scales {_names(missing)}")
        if extra:
            parts.append(f"unexpected scales {_names(extra)} for {header.encoding} encoding")
        return _reject("wrong_keys", "; ".join(parts), header)

    for name, (shape, _) in expected.items():
        got = entries[name].shape
        if got != shape:
            return _reject(
                "wrong_shape",
                f"tensor {name[:60]!r} is {list(got)}, expected {list(shape)}",
                header,
            )
        if header.encoding == "q8" and entries[name + SCALE_SUFFIX].shape != ():
            return _reject("wrong_shape", f"scale of {name[:60]!r} is not a 0-dim tensor", header)

    for name, (_, dtype) in expected.items():
        got_dtype = entries[name].dtype
        if header.encoding == "f32":
            if got_dtype != dtype:
                return _reject(
                    "wrong_dtype", f"tensor {name[:60]!r} is {got_dtype}, expected {dtype}", header
                )
        else:
            if dtype != "F32":
                return _reject(
                    "wrong_dtype",
                    f"tensor {name[:60]!r}: q8 decodes to F32, expected {dtype}",
                    header,
                )
            if got_dtype != "I8" or entries[name + SCALE_SUFFIX].dtype != "F32":
                return _reject(
                    "wrong_dtype",
                    f"q8 tensor {name[:60]!r} is {got_dtype} with a "
                    f"{entries[name + SCALE_SUFFIX].dtype} scale, expected I8 with an F32 scale",
                    header,
                )
    return None


def _check_compact_structure(
    data: bytes | bytearray | memoryview,
    layout: SafetensorsLayout,
    header: UpdateHeader,
    expected: dict[str, tuple[tuple[int, ...], str]],
    limits: DecodeLimits,
) -> UpdateCheck | None:
    form = ENCODING_FORMS[header.encoding]
    entries = {item.name: item for item in layout.tensors}
    logical = {name for name in entries if not name.endswith(RESERVED_SUFFIXES)}
    wanted = set(expected)
    if logical != wanted:
        missing, extra = wanted - logical, logical - wanted
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if extra:
            parts.append(f"unexpected {_names(extra)}")
        return _reject("wrong_keys", "; ".join(parts), header)
    aux = set(entries) - logical
    wanted_aux = {name + suffix for name in wanted for suffix in aux_suffixes_of(form, aux)}
    if aux != wanted_aux:
        missing, extra = wanted_aux - aux, aux - wanted_aux
        parts = []
        if missing:
            parts.append(f"missing {header.encoding} tensors {_names(missing)}")
        if extra:
            parts.append(f"unexpected tensors {_names(extra)} for {header.encoding} encoding")
        return _reject("wrong_keys", "; ".join(parts), header)
    for name, (shape, _) in expected.items():
        got = read_stored_shape(data, layout, name, limits)
        if got != shape:
            return _reject(
                "wrong_shape", f"tensor {name[:60]!r} is {list(got)}, expected {list(shape)}", header
            )
    for name, (_, dtype) in expected.items():
        if dtype != "F32":
            return _reject(
                "wrong_dtype", f"tensor {name[:60]!r}: {header.encoding} decodes to F32, expected {dtype}", header
            )
        got_dtype = entries[name].dtype
        if got_dtype != form.value_dtype:
            return _reject(
                "wrong_dtype",
                f"{header.encoding} tensor {name[:60]!r} stores {got_dtype}, expected {form.value_dtype}",
                header,
            )
    return None

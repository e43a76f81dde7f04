"""Encrypted update envelopes: an update readable only by the recipients the project spec names.

Hybrid public-key encryption from `cryptography`, no hand-made primitives:

- one random 32-byte content key per update; the update bytes are sealed with ChaCha20-Poly1305
  under it (12-byte random nonce);
- the content key is wrapped for every recipient (aggregator, named auditors, arbiter) with HPKE
  (RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305);
- a key commitment SHA-256(domain || content key) is in the header, so every recipient that can
  unwrap its copy gets the same key (ChaCha20-Poly1305 alone is not key-committing), and a content
  key disclosed to the arbiter can be checked against the bytes the trainer committed on chain.

Context binding: the HPKE `info` of every wrap is SHA-256 over the context (project id, round,
trainer address), the recipient list and the key commitment; the content's associated data is the
whole envelope header (recipients, wraps, commitment, nonce, length) followed by the context. An
envelope therefore does not open in another project or round, as another trainer's, with a
recipient added, removed or swapped, or with any byte changed.

Format (integers big-endian), bounded: every length is checked against the bytes present and the
caps below before anything is read or allocated.

    magic        8   b"\\x89MKTENV\\n"
    version      1   1
    suite        1   1 (the suite above)
    count        1   number of recipients, 1..MAX_RECIPIENTS, sorted by name, names unique
    count x:     name length (1 byte, 1..64), name (ASCII [A-Za-z0-9_.:-]),
                 X25519 public key (32), HPKE wrap of the content key (80 = enc 32 + key 32 + tag 16)
    commitment  32
    nonce       12
    length       8   ciphertext length, must be exactly the bytes that follow (plaintext + 16)
    ciphertext

The magic read as a safetensors header length (little-endian u64) is over 2^59, so an envelope
never parses as an update: `decode_update` refuses it with MalformedContent before reading on.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from market.errors import DecryptionFailed, MalformedEnvelope, NotARecipient

__all__ = [
    "ENVELOPE_REASONS",
    "MAGIC",
    "MAX_ENVELOPE_BYTES",
    "MAX_RECIPIENTS",
    "EnvelopeContext",
    "EnvelopeInfo",
    "RecipientEntry",
    "disclose_key",
    "fingerprint",
    "generate_key",
    "inspect_envelope",
    "is_envelope",
    "model_context",
    "open_envelope",
    "open_model",
    "open_update",
    "open_with_content_key",
    "parse_public_key",
    "public_key_hex",
    "require_recipients",
    "seal",
    "seal_model",
]

MAGIC = b"\x89MKTENV\n"
VERSION = 1
SUITE = 1
MAX_RECIPIENTS = 16
MAX_NAME = 64
#: The largest envelope accepted by default (ChaCha20-Poly1305 in `cryptography` takes < 2^31).
MAX_ENVELOPE_BYTES = 1 << 30
#: The reasons of the three envelope errors, beside validation.REASONS.
ENVELOPE_REASONS = ("malformed_envelope", "not_recipient", "undecryptable")

_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_WRAP_BYTES = 32 + _KEY_BYTES + _TAG_BYTES
_FIXED = len(MAGIC) + 3
_TRAILER = _KEY_BYTES + _NONCE_BYTES + 8
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_DOMAIN = b"market/update-envelope/v1"
_MODEL_DOMAIN = b"market/model-envelope/v1\x00"
_NO_TRAINER = "0x" + "00" * 20
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)

PublicKeyLike = X25519PublicKey | str | bytes


# -- keys ---------------------------------------------------------------------------------------


def generate_key() -> X25519PrivateKey:
    """A fresh X25519 key pair (store it with `Keystore.new_encryption_key`)."""
    return X25519PrivateKey.generate()


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_hex(key: X25519PrivateKey | X25519PublicKey) -> str:
    """The 64-hex-digit public key, as the project spec lists recipients."""
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return _raw(public).hex()


def parse_public_key(value: PublicKeyLike) -> X25519PublicKey:
    """An X25519 public key from 32 raw bytes or 64 hex digits (optionally 0x-prefixed)."""
    if isinstance(value, X25519PublicKey):
        return value
    if isinstance(value, str):
        if not _HEX_KEY.match(value):
            raise ValueError(f"public key {value[:20]!r}... is not 64 hex digits")
        value = bytes.fromhex(value.removeprefix("0x"))
    if not isinstance(value, bytes) or len(value) != _KEY_BYTES:
        raise ValueError("an X25519 public key is 32 bytes")
    return X25519PublicKey.from_public_bytes(value)


def fingerprint(key: X25519PrivateKey | X25519PublicKey | bytes) -> str:
    """A short stable name of a public key: the first 8 bytes of SHA-256 of it, in hex."""
    raw = key if isinstance(key, bytes) else bytes.fromhex(public_key_hex(key))
    return hashlib.sha256(raw).hexdigest()[:16]


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvelopeContext:
    """What an envelope is bound to: it opens only for this project, round and trainer, and as
    what it holds (`kind`: an update, or the global model of that round, `model_context`)."""

    project_id: int
    round: int
    trainer: str
    kind: Literal["update", "model"] = "update"

    def __post_init__(self) -> None:
        for name in ("project_id", "round"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 256:
                raise ValueError(f"{name} must be an integer in [0, 2**256)")
        if not isinstance(self.trainer, str) or not _ADDRESS.match(self.trainer):
            raise ValueError(f"trainer must be a 0x-prefixed 20-byte hex address, got {str(self.trainer)[:60]!r}")
        if self.kind not in ("update", "model"):
            raise ValueError(f"kind must be 'update' or 'model', got {str(self.kind)[:20]!r}")

    def to_bytes(self) -> bytes:
        # update contexts keep the bytes they had before models could be sealed
        return (
            (_MODEL_DOMAIN if self.kind == "model" else b"")
            + self.project_id.to_bytes(32, "big")
            + self.round.to_bytes(32, "big")
            + bytes.fromhex(self.trainer[2:])
        )

    def describe(self) -> str:
        if self.kind == "model":
            return f"project {self.project_id}, global model of round {self.round}"
        return f"project {self.project_id}, round {self.round}, trainer {self.trainer}"


def model_context(project_id: int, round_: int) -> EnvelopeContext:
    """The context of round `round_`'s global model (the model that round produced): no trainer,
    and a domain of its own, so an update envelope never opens as a model or the reverse."""
    return EnvelopeContext(project_id, round_, _NO_TRAINER, "model")


@dataclass(frozen=True)
class RecipientEntry:
    """One recipient as the envelope names it."""

    name: str
    public_key: bytes
    wrapped: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


@dataclass(frozen=True)
class EnvelopeInfo:
    """What anyone can read from an envelope without a key (for keyless audits)."""

    version: int
    recipients: tuple[RecipientEntry, ...]
    commitment: bytes
    nonce: bytes
    header: bytes
    ciphertext_offset: int
    ciphertext_bytes: int

    @property
    def recipient_keys(self) -> dict[str, str]:
        """name -> public key hex, comparable with the project spec's recipients."""
        return {r.name: r.public_key.hex() for r in self.recipients}


def _recipients_block(entries: Iterable[tuple[str, bytes]]) -> bytes:
    return b"".join(bytes([len(name)]) + name.encode("ascii") + key for name, key in entries)


def _commitment(content_key: bytes) -> bytes:
    return hashlib.sha256(_DOMAIN + b"/key-commitment" + content_key).digest()


def _wrap_info(context: EnvelopeContext, block: bytes, commitment: bytes) -> bytes:
    return _DOMAIN + b"/wrap" + hashlib.sha256(context.to_bytes() + block + commitment).digest()


# -- seal ---------------------------------------------------------------------------------------


def seal(
    plaintext: bytes, recipients: Mapping[str, PublicKeyLike], context: EnvelopeContext
) -> bytes:
    """Encrypt `plaintext` (an encoded update) for every recipient (name -> X25519 public key,
    as in `ProjectSpec.recipients`), bound to `context`."""
    if not isinstance(context, EnvelopeContext):
        raise TypeError("context must be an EnvelopeContext")
    if not isinstance(plaintext, (bytes, bytearray, memoryview)):
        raise TypeError("plaintext must be bytes")
    if len(plaintext) + _TAG_BYTES > MAX_ENVELOPE_BYTES:
        raise ValueError(f"plaintext of {len(plaintext)} bytes is over the {MAX_ENVELOPE_BYTES}-byte envelope cap")
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise ValueError(f"an envelope needs 1..{MAX_RECIPIENTS} recipients, got {len(recipients)}")
    entries: list[tuple[str, bytes, X25519PublicKey]] = []
    for name in sorted(recipients):
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"bad recipient name {name!r:.70}: 1-64 of [A-Za-z0-9_.:-]")
        key = parse_public_key(recipients[name])
        entries.append((name, _raw(key), key))
    if len({raw for _, raw, _ in entries}) != len(entries):
        raise ValueError("two recipients share a public key: each needs its own")

    content_key = ChaCha20Poly1305.generate_key()
    commitment = _commitment(content_key)
    block = _recipients_block((name, raw) for name, raw, _ in entries)
    info = _wrap_info(context, block, commitment)
    parts = [MAGIC, bytes([VERSION, SUITE, len(entries)])]
    for name, raw, key in entries:
        parts += [bytes([len(name)]), name.encode("ascii"), raw, _SUITE.encrypt(content_key, key, info=info)]
    nonce = os.urandom(_NONCE_BYTES)
    parts += [commitment, nonce, struct.pack(">Q", len(plaintext) + _TAG_BYTES)]
    header = b"".join(parts)
    ciphertext = ChaCha20Poly1305(content_key).encrypt(nonce, bytes(plaintext), header + context.to_bytes())
    return header + ciphertext


# -- parse --------------------------------------------------------------------------------------


def is_envelope(data: bytes | bytearray | memoryview) -> bool:
    """Whether `data` starts like an envelope (it may still be malformed)."""
    return bytes(data[: len(MAGIC)]) == MAGIC


def inspect_envelope(
    data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_ENVELOPE_BYTES
) -> EnvelopeInfo:
    """Parse the envelope header (no key needed); MalformedEnvelope on anything unexpected."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedEnvelope(f"expected bytes, got {type(data).__name__}")
    total = len(data)
    if total > max_bytes:
        raise MalformedEnvelope(f"envelope is {total} bytes, over the {max_bytes}-byte cap")
    if total < _FIXED or not is_envelope(data):
        raise MalformedEnvelope("not an update envelope (no envelope magic): the bytes are not an encrypted update")
    version, suite, count = data[len(MAGIC)], data[len(MAGIC) + 1], data[len(MAGIC) + 2]
    if version != VERSION:
        raise MalformedEnvelope(f"envelope version {version} is not {VERSION}: upgrade to read it")
    if suite != SUITE:
        raise MalformedEnvelope(f"envelope cipher suite {suite} is unknown (expected {SUITE})")
    if not 1 <= count <= MAX_RECIPIENTS:
        raise MalformedEnvelope(f"envelope names {count} recipients, expected 1..{MAX_RECIPIENTS}")
    at = _FIXED
    recipients: list[RecipientEntry] = []
    for _ in range(count):
        if at + 1 > total:
            raise MalformedEnvelope("envelope is truncated inside its recipient list")
        size = data[at]
        if not 1 <= size <= MAX_NAME or at + 1 + size + _KEY_BYTES + _WRAP_BYTES > total:
            raise MalformedEnvelope("envelope recipient entry is truncated or its name length is out of range")
        name_bytes = bytes(data[at + 1 : at + 1 + size])
        name = name_bytes.decode("ascii", errors="replace")
        if not _NAME_RE.match(name):
            raise MalformedEnvelope(f"envelope recipient name {name[:64]!r} is not 1-64 of [A-Za-z0-9_.:-]")
        if recipients and name <= recipients[-1].name:
            raise MalformedEnvelope("envelope recipients are not sorted by name or repeat a name")
        key_at = at + 1 + size
        recipients.append(
            RecipientEntry(
                name,
                bytes(data[key_at : key_at + _KEY_BYTES]),
                bytes(data[key_at + _KEY_BYTES : key_at + _KEY_BYTES + _WRAP_BYTES]),
            )
        )
        at = key_at + _KEY_BYTES + _WRAP_BYTES
    if len({r.public_key for r in recipients}) != len(recipients):
        raise MalformedEnvelope("two envelope recipients share a public key")
    if at + _TRAILER > total:
        raise MalformedEnvelope("envelope is truncated before its ciphertext")
    commitment = bytes(data[at : at + _KEY_BYTES])
    nonce = bytes(data[at + _KEY_BYTES : at + _KEY_BYTES + _NONCE_BYTES])
    (length,) = struct.unpack_from(">Q", data, at + _KEY_BYTES + _NONCE_BYTES)
    at += _TRAILER
    if length != total - at or length < _TAG_BYTES:
        raise MalformedEnvelope(
            f"envelope declares a {length}-byte ciphertext but {total - at} bytes follow (truncated or padded)"
        )
    return EnvelopeInfo(version, tuple(recipients), commitment, nonce, bytes(data[:at]), at, length)


def _fingerprints(info: EnvelopeInfo) -> str:
    return ", ".join(f"{r.name}={r.fingerprint}" for r in info.recipients)


def _select(
    info: EnvelopeInfo, keys: X25519PrivateKey | Sequence[X25519PrivateKey]
) -> tuple[RecipientEntry, X25519PrivateKey]:
    candidates = [keys] if isinstance(keys, X25519PrivateKey) else list(keys)
    by_key = {r.public_key: r for r in info.recipients}
    for key in candidates:
        raw = _raw(key.public_key())
        if raw in by_key:
            return by_key[raw], key
    found = ", ".join(fingerprint(k) for k in candidates) or "none"
    raise NotARecipient(
        f"the envelope is sealed for {_fingerprints(info)} but the key loaded is {found}: load the key"
        " whose public half the project spec lists (after a rotation, keep the retired key in the keystore)"
    )


def _unwrap(info: EnvelopeInfo, keys: X25519PrivateKey | Sequence[X25519PrivateKey], context: EnvelopeContext) -> bytes:
    entry, key = _select(info, keys)
    block = _recipients_block((r.name, r.public_key) for r in info.recipients)
    try:
        content_key = _SUITE.decrypt(entry.wrapped, key, info=_wrap_info(context, block, info.commitment))
    except InvalidTag:
        raise DecryptionFailed(
            f"the content key wrapped for {entry.name!r} ({entry.fingerprint}) does not open for "
            f"{context.describe()}: the envelope was sealed for another project, round or trainer, or altered"
        ) from None
    if len(content_key) != _KEY_BYTES or _commitment(content_key) != info.commitment:
        raise DecryptionFailed(
            f"the content key wrapped for {entry.name!r} does not match the envelope's key commitment:"
            " the trainer wrapped different keys for different recipients"
        )
    return content_key


def _open_content(data: bytes | bytearray | memoryview, info: EnvelopeInfo, content_key: bytes,
                  context: EnvelopeContext) -> bytes:
    ciphertext = bytes(data[info.ciphertext_offset :])
    try:
        return ChaCha20Poly1305(content_key).decrypt(info.nonce, ciphertext, info.header + context.to_bytes())
    except InvalidTag:
        raise DecryptionFailed(
            f"the update ciphertext does not authenticate for {context.describe()}: it was altered, or"
            " sealed for another project, round or trainer"
        ) from None


# -- open ---------------------------------------------------------------------------------------


def open_envelope(
    data: bytes | bytearray | memoryview,
    private_key: X25519PrivateKey | Sequence[X25519PrivateKey],
    context: EnvelopeContext,
    *,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> bytes:
    """The plaintext update of an envelope, for a recipient's key (or any of several keys, e.g.
    the current and retired ones). MalformedEnvelope, NotARecipient or DecryptionFailed."""
    info = inspect_envelope(data, max_bytes=max_bytes)
    return _open_content(data, info, _unwrap(info, private_key, context), context)


def disclose_key(
    data: bytes | bytearray | memoryview,
    private_key: X25519PrivateKey | Sequence[X25519PrivateKey],
    context: EnvelopeContext,
    *,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> bytes:
    """The 32-byte content key of one envelope, checked against its key commitment but without
    decrypting the content: what the aggregator hands the arbiter to prove that this one update
    does not authenticate (`open_with_content_key`), revealing nothing about other updates."""
    info = inspect_envelope(data, max_bytes=max_bytes)
    return _unwrap(info, private_key, context)


def open_with_content_key(
    data: bytes | bytearray | memoryview,
    content_key: bytes,
    context: EnvelopeContext,
    *,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> bytes:
    """Open an envelope with a disclosed content key. The key must match the commitment the
    trainer sealed (DecryptionFailed otherwise), so a disclosed key cannot be forged."""
    info = inspect_envelope(data, max_bytes=max_bytes)
    if not isinstance(content_key, bytes) or _commitment(content_key) != info.commitment:
        raise DecryptionFailed("the disclosed content key does not match the envelope's key commitment")
    return _open_content(data, info, content_key, context)


def require_recipients(info: EnvelopeInfo, recipients: Mapping[str, PublicKeyLike]) -> None:
    """NotARecipient unless the envelope is sealed for exactly the project's recipients (checked
    by the aggregator at fetch and by keyless audits: no auditor or arbiter may be left out)."""
    wanted = {name: _raw(parse_public_key(key)).hex() for name, key in recipients.items()}
    got = info.recipient_keys
    if got != wanted:
        missing = sorted(set(wanted.items()) - set(got.items()))
        extra = sorted(set(got.items()) - set(wanted.items()))
        parts = [f"missing {name}={fingerprint(bytes.fromhex(key))}" for name, key in missing[:3]]
        parts += [f"unexpected {name}={fingerprint(bytes.fromhex(key))}" for name, key in extra[:3]]
        raise NotARecipient(
            f"the envelope's recipients differ from the project spec ({'; '.join(parts)}):"
            " seal for the spec's recipients"
        )


def open_update(
    data: bytes | bytearray | memoryview,
    private_key: X25519PrivateKey | Sequence[X25519PrivateKey],
    context: EnvelopeContext,
    recipients: Mapping[str, PublicKeyLike],
    *,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> bytes:
    """What the aggregator calls at fetch: the envelope must be sealed for exactly the project's
    `recipients` (so auditors and the arbiter can read it too), then it is opened."""
    info = inspect_envelope(data, max_bytes=max_bytes)
    require_recipients(info, recipients)
    return _open_content(data, info, _unwrap(info, private_key, context), context)


# -- global models ------------------------------------------------------------------------------


def seal_model(model: bytes, readers: Mapping[str, PublicKeyLike], project_id: int, round_: int) -> bytes:
    """Round `round_`'s encoded global model sealed for `readers` (`ProjectSpec.model_reader_keys`:
    the recipients and the model readers), bound to `model_context(project_id, round_)`."""
    return seal(model, readers, model_context(project_id, round_))


def open_model(
    data: bytes | bytearray | memoryview,
    private_key: X25519PrivateKey | Sequence[X25519PrivateKey],
    project_id: int,
    round_: int,
    readers: Mapping[str, PublicKeyLike],
    *,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> bytes:
    """The encoded model in a sealed global model: it must be sealed for exactly `readers` (so
    every reader the spec names can replay the lineage), as round `round_`'s model of the project.
    MalformedEnvelope, NotARecipient or DecryptionFailed."""
    context = model_context(project_id, round_)
    info = inspect_envelope(data, max_bytes=max_bytes)
    require_recipients(info, readers)
    return _open_content(data, info, _unwrap(info, private_key, context), context)

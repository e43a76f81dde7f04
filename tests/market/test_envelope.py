"""Encrypted update envelopes and their keys: only named recipients read an update, in its own context."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market.chain.accounts import Keystore
from market.errors import (
    ConfigError,
    DecryptionFailed,
    MalformedContent,
    MalformedEnvelope,
    NotARecipient,
    UpdateRejected,
)
from market.protocol import documents, envelope
from market.protocol.codec import UpdateHeader, decode_update, encode_update
from market.protocol.documents import ProjectSpec, Recipient
from market.protocol.envelope import (
    ENVELOPE_REASONS,
    MAGIC,
    EnvelopeContext,
    disclose_key,
    fingerprint,
    generate_key,
    inspect_envelope,
    is_envelope,
    open_envelope,
    open_update,
    open_with_content_key,
    parse_public_key,
    public_key_hex,
    require_recipients,
    seal,
)
from market.protocol.model_spec import ModelSpec
from market.storage import cid_of

TRAINER = "0x" + "ab" * 20
CONTEXT = EnvelopeContext(7, 3, TRAINER)
KEYS = {name: generate_key() for name in ("aggregator", "arbiter", "auditor.a", "auditor.b", "auditor.c")}
PUBLIC = {name: public_key_hex(key) for name, key in KEYS.items()}


def update_bytes(seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    tensors = {"w": torch.randn(20, 10, generator=g), "b": torch.randn(10, generator=g)}
    return encode_update(tensors, UpdateHeader(7, 3, cid_of(b"base"), TRAINER, 50))


PLAIN = update_bytes()
SEALED = seal(PLAIN, {"aggregator": PUBLIC["aggregator"], "arbiter": PUBLIC["arbiter"]}, CONTEXT)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_round_trip_for_every_recipient(count: int) -> None:
    names = list(KEYS)[:count]
    data = seal(PLAIN, {name: PUBLIC[name] for name in names}, CONTEXT)
    assert is_envelope(data) and not is_envelope(PLAIN)
    for name in names:
        assert open_envelope(data, KEYS[name], CONTEXT) == PLAIN
    info = inspect_envelope(data)
    assert info.recipient_keys == {name: PUBLIC[name] for name in names}
    assert [r.name for r in info.recipients] == sorted(names)


def test_each_seal_is_fresh_and_the_plaintext_is_not_in_it() -> None:
    again = seal(PLAIN, {"aggregator": PUBLIC["aggregator"], "arbiter": PUBLIC["arbiter"]}, CONTEXT)
    assert again != SEALED
    assert PLAIN[8:200] not in SEALED  # the safetensors header is not visible


def test_ciphertext_never_parses_as_an_update() -> None:
    with pytest.raises(MalformedContent, match="over the"):
        decode_update(SEALED)
    (claimed,) = struct.unpack_from("<Q", MAGIC)
    assert claimed > 1 << 59


def test_non_recipient_names_the_fingerprints() -> None:
    stranger = generate_key()
    with pytest.raises(NotARecipient) as caught:
        open_envelope(SEALED, stranger, CONTEXT)
    message = str(caught.value)
    assert caught.value.reason == "not_recipient" and "\n" not in message
    assert fingerprint(stranger) in message and fingerprint(KEYS["aggregator"]) in message


def test_a_rotated_key_list_still_opens_old_envelopes() -> None:
    new = generate_key()
    with pytest.raises(NotARecipient):
        open_envelope(SEALED, [new], CONTEXT)
    assert open_envelope(SEALED, [new, KEYS["aggregator"]], CONTEXT) == PLAIN


@pytest.mark.parametrize(
    "context",
    [
        EnvelopeContext(8, 3, TRAINER),
        EnvelopeContext(7, 4, TRAINER),
        EnvelopeContext(7, 3, "0x" + "cd" * 20),
    ],
    ids=["project", "round", "trainer"],
)
def test_wrong_context_is_decryption_failed(context: EnvelopeContext) -> None:
    with pytest.raises(DecryptionFailed) as caught:
        open_envelope(SEALED, KEYS["aggregator"], context)
    assert caught.value.reason == "undecryptable"
    with pytest.raises(DecryptionFailed):
        disclose_key(SEALED, KEYS["arbiter"], context)


def test_trainer_address_case_does_not_matter() -> None:
    shouted = EnvelopeContext(7, 3, TRAINER.upper().replace("0X", "0x"))
    assert open_envelope(SEALED, KEYS["aggregator"], shouted) == PLAIN


def test_every_flipped_byte_is_refused() -> None:
    info = inspect_envelope(SEALED)
    for at in range(len(SEALED)):
        data = bytearray(SEALED)
        data[at] ^= 0x01
        with pytest.raises(UpdateRejected) as caught:
            open_envelope(bytes(data), KEYS["aggregator"], CONTEXT)
        assert caught.value.reason in ENVELOPE_REASONS
        if at >= info.ciphertext_offset:
            assert isinstance(caught.value, DecryptionFailed)
        if at < len(MAGIC):
            assert isinstance(caught.value, MalformedEnvelope)


def test_truncated_and_padded_envelopes_are_malformed() -> None:
    for size in (0, 5, len(MAGIC), 11, 50, 200, len(SEALED) - 1):
        with pytest.raises(MalformedEnvelope):
            open_envelope(SEALED[:size], KEYS["aggregator"], CONTEXT)
    with pytest.raises(MalformedEnvelope, match="follow"):
        open_envelope(SEALED + b"\0", KEYS["aggregator"], CONTEXT)


def test_huge_declared_length_is_refused_before_reading() -> None:
    info = inspect_envelope(SEALED)
    at = info.ciphertext_offset - 8
    data = SEALED[:at] + struct.pack(">Q", 2**63) + SEALED[at + 8 :]
    with pytest.raises(MalformedEnvelope, match="declares"):
        open_envelope(data, KEYS["aggregator"], CONTEXT)
    with pytest.raises(MalformedEnvelope, match="cap"):
        open_envelope(SEALED, KEYS["aggregator"], CONTEXT, max_bytes=len(SEALED) - 1)


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        (lambda d: d[:8] + b"\x02" + d[9:], "version"),
        (lambda d: d[:9] + b"\x07" + d[10:], "suite"),
        (lambda d: d[:10] + b"\x00" + d[11:], "recipients"),
        (lambda d: d[:10] + b"\xff" + d[11:], "recipients"),
        (lambda d: d[:11] + b"\x00" + d[12:], "name length"),
        (lambda d: d[:12] + b"\xff" + d[13:], "name"),
        (lambda d: b"PK\x03\x04" + d[4:], "magic"),
    ],
)
def test_malformed_headers(patch: object, match: str) -> None:
    with pytest.raises(MalformedEnvelope, match=match):
        inspect_envelope(patch(SEALED))  # type: ignore[operator]


def test_disclosed_key_proves_one_update_to_the_arbiter() -> None:
    key = disclose_key(SEALED, KEYS["aggregator"], CONTEXT)
    assert len(key) == 32
    assert open_with_content_key(SEALED, key, CONTEXT) == PLAIN
    with pytest.raises(DecryptionFailed, match="commitment"):
        open_with_content_key(SEALED, bytes(32), CONTEXT)
    # The trainer sealed garbage: the aggregator discloses the key, anyone sees it fail.
    info = inspect_envelope(SEALED)
    bad = bytearray(SEALED)
    bad[-1] ^= 0x80
    key = disclose_key(bytes(bad), KEYS["aggregator"], CONTEXT)
    with pytest.raises(DecryptionFailed, match="does not authenticate"):
        open_with_content_key(bytes(bad), key, CONTEXT)
    assert info.ciphertext_bytes == len(PLAIN) + 16


def test_require_recipients_matches_the_spec() -> None:
    info = inspect_envelope(SEALED)
    require_recipients(info, {"aggregator": PUBLIC["aggregator"], "arbiter": PUBLIC["arbiter"]})
    with pytest.raises(NotARecipient, match="missing auditor.a"):
        require_recipients(info, {"aggregator": PUBLIC["aggregator"], "arbiter": PUBLIC["arbiter"],
                                  "auditor.a": PUBLIC["auditor.a"]})
    with pytest.raises(NotARecipient, match="unexpected"):
        require_recipients(info, {"aggregator": PUBLIC["aggregator"]})


def test_seal_refuses_bad_recipients() -> None:
    with pytest.raises(ValueError):
        seal(PLAIN, {}, CONTEXT)
    with pytest.raises(ValueError):
        seal(PLAIN, {"a b": PUBLIC["aggregator"]}, CONTEXT)
    with pytest.raises(ValueError):
        seal(PLAIN, {"a": PUBLIC["aggregator"], "b": PUBLIC["aggregator"]}, CONTEXT)
    with pytest.raises(ValueError):
        seal(PLAIN, {f"r{i}": public_key_hex(generate_key()) for i in range(17)}, CONTEXT)
    with pytest.raises(ValueError):
        parse_public_key("zz" * 32)
    with pytest.raises(ValueError):
        EnvelopeContext(1, 1, "0x1234")


def test_keystore_stores_the_encryption_key(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    store.new("alice", "pw")
    public = store.new_encryption_key("alice", "pw")
    key = store.load_encryption_key("alice", "pw")
    assert public_key_hex(key) == public
    assert [e.name for e in store.list()] == ["alice"]
    assert b"PRIVATE KEY" in (tmp_path / "alice.x25519.pem").read_bytes()
    assert (tmp_path / "alice.x25519.pem").stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError, match="wrong password"):
        store.load_encryption_key("alice", "wrong")
    with pytest.raises(ConfigError, match="already has"):
        store.new_encryption_key("alice", "pw")
    with pytest.raises(ConfigError, match="no encryption key"):
        store.load_encryption_key("bob", "pw")


def test_rotation_keeps_old_envelopes_readable(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    old_public = store.new_encryption_key("agg", "pw")
    data = seal(PLAIN, {"aggregator": old_public}, CONTEXT)
    new_public = store.rotate_encryption_key("agg", "pw")
    assert new_public != old_public
    with pytest.raises(NotARecipient) as caught:
        open_envelope(data, store.load_encryption_key("agg", "pw"), CONTEXT)
    assert fingerprint(parse_public_key(old_public)) in str(caught.value)
    assert open_envelope(data, store.encryption_keys("agg", "pw"), CONTEXT) == PLAIN


def test_project_spec_recipients() -> None:
    model = ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10)
    plain = ProjectSpec(model=model)
    assert not plain.encrypted and b"recipients" not in plain.to_bytes() and b"privacy" not in plain.to_bytes()
    spec = ProjectSpec(
        model=model,
        recipients={
            "aggregator": Recipient(role="aggregator", public_key=PUBLIC["aggregator"]),
            "auditor.a": Recipient(role="auditor", public_key=PUBLIC["auditor.a"]),
        },
    )
    assert spec.encrypted and ProjectSpec.from_bytes(spec.to_bytes()) == spec
    data = seal(PLAIN, spec.recipient_keys(), CONTEXT)
    require_recipients(inspect_envelope(data), spec.recipient_keys())
    with pytest.raises(ValueError, match="exactly one aggregator"):
        ProjectSpec(model=model, recipients={"auditor.a": Recipient(role="auditor", public_key=PUBLIC["auditor.a"])})
    with pytest.raises(ValueError, match="share"):
        ProjectSpec(model=model, recipients={
            "aggregator": Recipient(role="aggregator", public_key=PUBLIC["aggregator"]),
            "arbiter": Recipient(role="arbiter", public_key=PUBLIC["aggregator"]),
        })
    with pytest.raises(ValueError, match="hex"):
        Recipient(role="auditor", public_key="AB" * 32)
    assert documents.MAX_RECIPIENTS == envelope.MAX_RECIPIENTS


def test_open_update_checks_the_spec_recipients_first() -> None:
    both = {"aggregator": PUBLIC["aggregator"], "arbiter": PUBLIC["arbiter"]}
    assert open_update(SEALED, KEYS["aggregator"], CONTEXT, both) == PLAIN
    with pytest.raises(NotARecipient, match="missing auditor.a"):
        open_update(SEALED, KEYS["aggregator"], CONTEXT, {**both, "auditor.a": PUBLIC["auditor.a"]})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=len(SEALED)))
def test_fuzz_spliced_bytes_only_ever_raise_envelope_errors(junk: bytes, at: int) -> None:
    for data in (junk, MAGIC + junk, SEALED[:at] + junk, SEALED[:at] + junk + SEALED[at + len(junk):]):
        try:
            opened = open_envelope(data, KEYS["aggregator"], CONTEXT)
        except (MalformedEnvelope, NotARecipient, DecryptionFailed):
            continue
        assert data == SEALED and opened == PLAIN

"""A trainer of a sealed-model project (`ProjectSpec.model_readers`) opens the global model with
its keystore encryption key (current or retired), and gets one line when it has none or an unlisted
one. No chain: the round's base is given, the model sits in an EmbeddedStore."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from market.chain.accounts import Keystore
from market.protocol.codec import ModelHeader, encode_model
from market.protocol.documents import ProjectSpec, Recipient
from market.protocol.envelope import fingerprint, generate_key, public_key_hex, seal_model
from market.protocol.reading import RoundBase
from market.storage import EmbeddedStore
from tests.aggregator.support import MODEL, initial_state
from trainer._session import Session
from trainer.cli.app import app
from trainer.config import TrainerSettings
from trainer.errors import ConfigError, ModelSpecError
from trainer.update import fetch_global_model

PID = 7
PASSWORD = "pw"


@pytest.fixture
def keystore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Keystore:
    monkeypatch.setenv("MARKET_PASSWORD", PASSWORD)
    (tmp_path / "keys").mkdir()
    return Keystore(tmp_path / "keys")


def _spec(readers: dict[str, str]) -> ProjectSpec:
    aggregator = public_key_hex(generate_key())
    return ProjectSpec(model=MODEL.model_copy(update={"initial_weights_cid": "QmInitial"}),
                       recipients={"aggregator": Recipient(role="aggregator", public_key=aggregator)},
                       model_readers=readers)


def _round_one(tmp_path: Path, spec: ProjectSpec) -> tuple[EmbeddedStore, RoundBase]:
    """Round 0's model, sealed as the aggregator publishes it, as round 1's base."""
    model = encode_model(initial_state(), ModelHeader(PID, 1, MODEL.architecture))
    store = EmbeddedStore(tmp_path / "store")
    cid = store.add(seal_model(model, spec.model_reader_keys(), PID, 0))
    return store, RoundBase(1, cid, {}, None)


def _session(keystore: Keystore, name: str | None) -> Session:
    settings = TrainerSettings(keystore=keystore.directory)
    return Session(settings, client=None, account=None, account_name=name)  # type: ignore[arg-type]


def _fetch(session: Session, store: EmbeddedStore, spec: ProjectSpec, base: RoundBase) -> dict[str, torch.Tensor]:
    keys = session.model_keys(spec, PID, base.round - 1)
    return fetch_global_model(None, store, spec, PID, base.round, base=base, model_keys=keys).state  # type: ignore[arg-type]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_keystore_key_opens_the_sealed_model_even_after_a_rotation(tmp_path: Path, keystore: Keystore) -> None:
    spec = _spec({"alice": keystore.new_encryption_key("alice", PASSWORD)})
    store, base = _round_one(tmp_path, spec)
    assert _same(_fetch(_session(keystore, "alice"), store, spec, base), initial_state())
    keystore.rotate_encryption_key("alice", PASSWORD)  # the model was sealed for the retired key
    assert _same(_fetch(_session(keystore, "alice"), store, spec, base), initial_state())


def test_no_key_is_needed_for_public_models_and_the_initial_weights(keystore: Keystore) -> None:
    session = _session(keystore, None)
    assert session.model_keys(_spec({}), PID, 3) == []
    assert session.model_keys(_spec({"owner": public_key_hex(generate_key())}), PID, -1) == []


@pytest.mark.parametrize(("name", "who"), [("bob", "account 'bob'"), (None, "this account")])
def test_no_encryption_key_gives_one_line(tmp_path: Path, keystore: Keystore, name: str | None, who: str) -> None:
    spec = _spec({"alice": keystore.new_encryption_key("alice", PASSWORD)})
    store, base = _round_one(tmp_path, spec)
    with pytest.raises(ConfigError) as info:
        _fetch(_session(keystore, name), store, spec, base)
    message = str(info.value)
    assert message.startswith(f"project {PID} seals its models for its readers; {who}")
    assert f"`trainer account new-key {name or 'NAME'}`" in message and "model_readers" in message
    assert "\n" not in message


def test_a_key_the_owner_did_not_list_names_the_fingerprints(tmp_path: Path, keystore: Keystore) -> None:
    alice = keystore.new_encryption_key("alice", PASSWORD)
    bob = keystore.new_encryption_key("bob", PASSWORD)
    spec = _spec({"alice": alice})
    store, base = _round_one(tmp_path, spec)
    with pytest.raises(ModelSpecError) as info:
        _fetch(_session(keystore, "bob"), store, spec, base)
    message = str(info.value)
    assert f"alice={fingerprint(bytes.fromhex(alice))}" in message
    assert f"the key loaded is {fingerprint(bytes.fromhex(bob))}" in message
    assert "model_readers" in message and "\n" not in message


def test_account_new_key_and_rotate_key_print_the_public_key(keystore: Keystore) -> None:
    env = {"MARKET_PASSWORD": PASSWORD}
    keystore.import_key("alice", "0x" + "11" * 32, PASSWORD)

    def cli(*argv: str) -> Any:
        return CliRunner().invoke(app, ["account", *argv, "--keystore", str(keystore.directory), "--json"], env=env)

    created = cli("new-key", "alice")
    assert created.exit_code == 0, created.output
    first = json.loads(created.output)
    assert first["public_key"] == public_key_hex(keystore.load_encryption_key("alice", PASSWORD))
    assert first["fingerprint"] == fingerprint(bytes.fromhex(first["public_key"]))
    again = cli("new-key", "alice")
    assert again.exit_code == 2 and "rotate it instead" in again.output
    rotated = json.loads(cli("rotate-key", "alice").output)
    assert rotated["public_key"] != first["public_key"]
    assert len(keystore.encryption_keys("alice", PASSWORD)) == 2
    wrong = CliRunner().invoke(app, ["account", "new-key", "alice", "--keystore", str(keystore.directory)],
                               env={"MARKET_PASSWORD": "nope"})
    assert wrong.exit_code == 2 and "wrong password" in wrong.output

"""Global models sealed for the project's model readers (`ProjectSpec.model_readers`): the
aggregator publishes an envelope, reads its own sealed base model back, and only readers open it."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aggregator.audit import audit_project
from aggregator.errors import SettingsError
from aggregator.keyless_audit import UNVERIFIED
from aggregator.round import RoundContext, RoundInputs, compute_from_inputs, gather_inputs, publish_round
from aggregator.service import dev_encryption_key
from aggregator.valset import ValidationSet
from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from lab.inprocess import MODELS, PROJECT_ID, LocalProject, service_config, trainer_address
from market.chain import MarketClient
from market.chain.accounts import Keystore, dev_account
from market.errors import DecryptionFailed, MalformedContent, NotARecipient, UpdateRejected
from market.models import init_model
from market.protocol.codec import ModelHeader, UpdateHeader, decode_model, encode_model, encode_update
from market.protocol.documents import ProjectSpec, Recipient
from market.protocol.envelope import (
    EnvelopeContext,
    generate_key,
    is_envelope,
    model_context,
    open_envelope,
    open_model,
    public_key_hex,
    seal,
    seal_model,
)
from market.protocol.reading import load_record
from market.storage import EmbeddedStore, IpfsStore
from tests.aggregator.support import (
    AGGREGATOR,
    ARBITER,
    VALIDATION,
    ChainProject,
    encode,
    honest_deltas,
    initial_model_bytes,
    make_spec,
)
from tests.conftest import needs_jsipfs
from trainer.participant import Participant

KEYS = {name: generate_key() for name in ("aggregator", "auditor.a", "owner", "trainer.0", "outsider")}
HEX = {name: public_key_hex(k) for name, k in KEYS.items()}
SPEC_MODEL = MODELS["digits"]


def sealed_spec(**changes: object) -> ProjectSpec:
    fields: dict[str, object] = {
        "model": SPEC_MODEL,
        "hyperparams": {"epochs": 1, "lr": 0.05, "batch_size": 32},
        "recipients": {"aggregator": Recipient(role="aggregator", public_key=HEX["aggregator"]),
                       "auditor.a": Recipient(role="auditor", public_key=HEX["auditor.a"])},
        "model_readers": {"owner": HEX["owner"], "trainer.0": HEX["trainer.0"]},
    }
    fields.update(changes)
    return ProjectSpec(**fields)  # type: ignore[arg-type]


def test_the_spec_names_model_readers_beside_the_recipients() -> None:
    spec = sealed_spec()
    assert spec.encrypts_models
    assert set(spec.model_reader_keys()) == {"aggregator", "auditor.a", "owner", "trainer.0"}
    assert ProjectSpec.from_bytes(spec.to_bytes()) == spec
    plain = sealed_spec(model_readers={})
    assert not plain.encrypts_models and plain.model_reader_keys() == {}
    assert b"model_readers" not in plain.to_bytes()  # specs without readers keep their bytes and CID
    with pytest.raises(ValueError, match="need recipients"):
        sealed_spec(recipients={})
    with pytest.raises(ValueError, match="name of a recipient"):
        sealed_spec(model_readers={"aggregator": HEX["owner"]})
    with pytest.raises(ValueError, match="shares a public key"):
        sealed_spec(model_readers={"owner": HEX["aggregator"]})
    with pytest.raises(ValueError, match="64 lowercase hex"):
        sealed_spec(model_readers={"owner": "AB" * 32})


def test_a_sealed_model_opens_only_for_its_readers_as_that_rounds_model() -> None:
    spec = sealed_spec()
    model = encode_model({"w": torch.ones(3)}, ModelHeader(PROJECT_ID, 2, "digits_mlp"))
    blob = seal_model(model, spec.model_reader_keys(), PROJECT_ID, 2)
    assert is_envelope(blob)
    with pytest.raises(MalformedContent):
        decode_model(blob)  # what an outsider fetches is no model
    for reader in ("aggregator", "auditor.a", "owner", "trainer.0"):
        assert open_model(blob, KEYS[reader], PROJECT_ID, 2, spec.model_reader_keys()) == model
    with pytest.raises(NotARecipient):
        open_model(blob, KEYS["outsider"], PROJECT_ID, 2, spec.model_reader_keys())
    with pytest.raises(DecryptionFailed):
        open_model(blob, KEYS["owner"], PROJECT_ID, 3, spec.model_reader_keys())  # another round's model
    with pytest.raises(NotARecipient):
        open_model(blob, KEYS["owner"], PROJECT_ID, 2, spec.recipient_keys())  # readers left out


def test_update_and_model_envelopes_never_open_as_each_other() -> None:
    readers = sealed_spec().model_reader_keys()
    zero = "0x" + "00" * 20
    update_ctx = EnvelopeContext(PROJECT_ID, 2, zero)
    assert update_ctx.to_bytes() != model_context(PROJECT_ID, 2).to_bytes()
    as_update = seal(b"x" * 40, readers, update_ctx)
    with pytest.raises(DecryptionFailed):
        open_envelope(as_update, KEYS["owner"], model_context(PROJECT_ID, 2))
    as_model = seal_model(b"x" * 40, readers, PROJECT_ID, 2)
    with pytest.raises(DecryptionFailed):
        open_envelope(as_model, KEYS["owner"], update_ctx)


def test_the_aggregator_publishes_sealed_models_and_builds_the_next_round_on_them(tmp_path: Path) -> None:
    spec = sealed_spec()
    like = {k: v.detach().clone() for k, v in init_model(SPEC_MODEL, 0).state_dict().items()}
    project = LocalProject(spec=spec, initial_model=encode_model(like, ModelHeader(PROJECT_ID, 0, "digits_mlp")),
                           num_rounds=2, reward_per_round=10**18)
    store = EmbeddedStore(tmp_path / "store")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(60, 64, generator=g), torch.arange(60) % 10
    valset = ValidationSet(x, y, "test:val")
    validation_cid = store.add(valset.to_npz())
    store.add(project.initial_model)
    aggregator_keys = (KEYS["aggregator"],)

    def round_inputs(r: int) -> tuple[RoundContext, RoundInputs]:
        blobs = []
        for i in range(3):
            trainer = trainer_address(i)
            delta = {k: torch.randn(v.shape, generator=g) * 0.01 for k, v in like.items()}
            header = UpdateHeader(PROJECT_ID, r, project.base_model_cid, trainer, 20)
            plain = encode_update(delta, header)
            blobs.append((trainer, seal(plain, spec.recipient_keys(), EnvelopeContext(PROJECT_ID, r, trainer))))
        ctx = dataclasses.replace(project.context(project.reveal(blobs)), decryption_keys=aggregator_keys)
        for blob in project.blobs.values():
            store.add(blob)
        return ctx, gather_inputs(store, ctx, valset=valset, validation_cid=validation_cid)

    config = service_config(score=False)
    _, inputs0 = round_inputs(0)
    computed = compute_from_inputs(inputs0, config)
    published = publish_round(store, computed)
    sealed = store.cat(published.model_cid)
    assert is_envelope(sealed) and sealed != computed.model_bytes
    assert published.record.model_digest == "0x" + hashlib.sha256(computed.model_bytes).hexdigest()
    assert open_model(sealed, KEYS["owner"], PROJECT_ID, 0, spec.model_reader_keys()) == computed.model_bytes

    # round 1 is built on the sealed model: the aggregator opens its base model at fetch
    project.finalize(inputs0, computed)
    project.models[-1] = sealed  # what the chain names is the envelope's CID
    project.blobs[published.model_cid] = sealed
    ctx1, inputs1 = round_inputs(1)
    assert inputs1.base_model == computed.model_bytes
    assert inputs1.previous_base_model == project.initial_model
    keyless = dataclasses.replace(ctx1, decryption_keys=())
    with pytest.raises(SettingsError, match="encrypted|sealed"):
        gather_inputs(store, keyless, valset=valset, validation_cid=validation_cid)


# -- on the real stack --------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning")
@needs_jsipfs
def test_sealed_models_on_the_stack_keyed_audit_replays_the_lineage(
    anvil: Anvil, market: MarketClient, ipfs: IpfsStore, ipfs_node: IpfsNode, deployment_file: Path, tmp_path: Path
) -> None:
    from market.chain import ProjectParams

    state = tmp_path / "aggregator-state"
    keystore = Keystore(tmp_path / "keystore")
    keystore.directory.mkdir()
    owner_key = generate_key()
    recipients = {
        "aggregator": Recipient(role="aggregator", public_key=dev_encryption_key(state, AGGREGATOR)),
        "auditor": Recipient(role="auditor", public_key=keystore.new_encryption_key("auditor", "pw")),
    }
    base_cid = ipfs.add(initial_model_bytes())
    plain = make_spec(base_cid)
    spec = ProjectSpec(model=plain.model, validation=plain.validation, recipients=recipients,
                       model_readers={"owner": public_key_hex(owner_key)})
    spec_cid = ipfs.add(spec.to_bytes())
    params = ProjectParams(
        aggregator=dev_account(AGGREGATOR).address, arbiter=dev_account(ARBITER).address, num_rounds=2,
        reward_per_round=10**18, commit_window=30, reveal_window=30, challenge_window=3, spec_cid=spec_cid,
    )
    pid, _ = market.create_project(params)
    trainers = [dev_account(3 + i) for i in range(3)]
    for a in trainers:
        market.with_account(a).register(pid)
    p = ChainProject(market, anvil.url, ipfs, pid, spec, spec_cid, base_cid, trainers, params)
    parts = {a.address: Participant(p.client_of(a), ipfs, tmp_path / f"t{i}", poll_interval=0.05)
             for i, a in enumerate(trainers)}
    deltas = honest_deltas()
    base = base_cid
    for r in (0, 1):
        if r:
            p.settle_previous()
        states = {a.address: parts[a.address].commit(parts[a.address].prepare(pid, r, encode(deltas[i + 3 * r], pid, r,
                                                                                              base, a.address)))
                  for i, a in enumerate(trainers)}
        p.mine_to(market.project(pid).commit_deadline + 1)
        for addr, st in states.items():
            parts[addr].reveal(st)
        p.mine_to(market.project(pid).reveal_deadline + 1)
        served = subprocess.run(
            [sys.executable, "-m", "aggregator.cli", "serve", str(pid), "--once", "--dev-account", str(AGGREGATOR),
             "--rpc", anvil.url, "--deployment", str(deployment_file), "--ipfs", ipfs_node.api_multiaddr,
             "--state", str(state), "--validation", VALIDATION, "--poll", "0.2"],
            capture_output=True, text=True, timeout=300, check=False)
        assert served.returncode == 0, served.stderr
        event = next(f for f in market.finalized(pid) if f.round == r)
        record = load_record(ipfs, event.record_cid)
        assert all(v.accepted for v in record.verdicts), record.verdicts
        sealed = ipfs.cat(event.model_cid)
        assert is_envelope(sealed)
        with pytest.raises(UpdateRejected):
            decode_model(sealed)  # an outsider fetches no model
        opened = open_model(sealed, owner_key, pid, r, spec.model_reader_keys())
        assert "0x" + hashlib.sha256(opened).hexdigest() == record.model_digest
        base = event.model_cid  # round 1 trains on round 0's sealed model, named by its envelope CID

    keyed = audit_project(market, ipfs, pid, decryption_keys=keystore.encryption_keys("auditor", "pw"))
    assert [r.verdict for r in keyed] == ["pass", "pass"], [r.problems for r in keyed]
    keyless = audit_project(market, ipfs, pid)
    assert [r.verdict for r in keyless] == ["pass", "pass"], [r.problems for r in keyless]
    assert all(any("model digest" in note and UNVERIFIED in note for note in r.unverified) for r in keyless)

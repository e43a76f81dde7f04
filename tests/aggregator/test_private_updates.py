"""Encrypted updates end to end on the real local stack (anvil + js-ipfs): trainers seal through
`Participant`, `aggregator serve --dev-account` opens them with the key file in its state dir, a
wrong-key trainer, a garbage envelope and an envelope of another round are rejected with their
own reasons while the round finalizes for the others; nothing on IPFS parses as an update
without a key; the keyed audit rebuilds every round and the keyless one passes with what it
could not check said round by round."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.audit import audit_project
from aggregator.keyless_audit import UNVERIFIED
from aggregator.service import DEV_KEY_PASSWORD, KeySource, dev_encryption_key
from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from market.chain import MarketClient
from market.chain.accounts import PASSWORD_ENV, Keystore, dev_account
from market.errors import UpdateRejected
from market.protocol.codec import decode_update
from market.protocol.documents import ProjectSpec, Recipient
from market.protocol.envelope import (
    MAGIC,
    EnvelopeContext,
    disclose_key,
    generate_key,
    is_envelope,
    open_with_content_key,
    public_key_hex,
    seal,
)
from market.protocol.privacy import DpPolicy, epsilon_spent, rounds_within_budget
from market.protocol.reading import load_record
from market.storage import IpfsStore
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
from trainer.participant import Participant, PrivacySpent

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning"),
]

PASSWORD = "correct horse"


def _encrypted_project(market: MarketClient, anvil: Anvil, ipfs: IpfsStore, recipients: dict[str, Recipient],
                       trainers: int, privacy: DpPolicy | None = None) -> ChainProject:
    from market.chain import ProjectParams

    base_cid = ipfs.add(initial_model_bytes())
    plain = make_spec(base_cid)
    spec = ProjectSpec(model=plain.model, validation=plain.validation, recipients=recipients, privacy=privacy)
    spec_cid = ipfs.add(spec.to_bytes())
    params = ProjectParams(
        aggregator=dev_account(AGGREGATOR).address, arbiter=dev_account(ARBITER).address, num_rounds=2,
        reward_per_round=10**18, commit_window=30, reveal_window=30, challenge_window=3, spec_cid=spec_cid,
    )
    pid, _ = market.create_project(params)
    accts = [dev_account(3 + i) for i in range(trainers)]
    for a in accts:
        market.with_account(a).register(pid)
    return ChainProject(market, anvil.url, ipfs, pid, spec, spec_cid, base_cid, accts, params)


def _serve(anvil: Anvil, deployment_file: Path, ipfs_node: IpfsNode, project_id: int, state: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "aggregator.cli", "serve", str(project_id), "--once", "--dev-account", str(AGGREGATOR),
        "--rpc", anvil.url, "--deployment", str(deployment_file), "--ipfs", ipfs_node.api_multiaddr,
        "--state", str(state), "--validation", VALIDATION, "--poll", "0.2",
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def _audit_cli(anvil: Anvil, deployment_file: Path, ipfs_node: IpfsNode, project_id: int, *extra: str,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "aggregator.cli", "audit", str(project_id), "--rpc", anvil.url,
            "--deployment", str(deployment_file), "--ipfs", ipfs_node.api_multiaddr, *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, env={**os.environ, **(env or {})})


@needs_jsipfs
def test_encrypted_project_end_to_end(anvil: Anvil, market: MarketClient, ipfs: IpfsStore, ipfs_node: IpfsNode,
                                      deployment_file: Path, tmp_path: Path) -> None:
    state = tmp_path / "aggregator-state"
    keystore = Keystore(tmp_path / "keystore")
    keystore.directory.mkdir()
    recipients = {
        "aggregator": Recipient(role="aggregator", public_key=dev_encryption_key(state, AGGREGATOR)),
        "auditor": Recipient(role="auditor", public_key=keystore.new_encryption_key("auditor", PASSWORD)),
        "arbiter": Recipient(role="arbiter", public_key=keystore.new_encryption_key("arbiter", PASSWORD)),
    }
    p = _encrypted_project(market, anvil, ipfs, recipients, trainers=6)
    pid = p.project_id
    honest, wrong_key, garbage, other_round = p.trainers[:3], p.trainers[3], p.trainers[4], p.trainers[5]
    deltas = honest_deltas()
    parts = {a.address: Participant(p.client_of(a), ipfs, tmp_path / f"t{i}", poll_interval=0.05)
             for i, a in enumerate(p.trainers)}

    # round 0: three honest trainers seal through Participant.prepare (what `trainer submit` does)
    states = {}
    for i, a in enumerate(honest):
        plain = encode(deltas[i], pid, 0, p.base_cid, a.address)
        st = parts[a.address].prepare(pid, 0, plain)
        assert parts[a.address].prepare(pid, 0, plain) == st  # the same update is not sealed and uploaded again
        assert parts[a.address].plain_digest(st) != st.digest  # the commitment binds the ciphertext
        states[a.address] = st
    # a trainer sealing to another project's aggregator key, garbage behind the magic, and an
    # envelope sealed for round 1 submitted in round 0
    other = dict(p.spec.recipient_keys()) | {"aggregator": public_key_hex(generate_key())}
    forged = {
        wrong_key.address: seal(encode(deltas[3], pid, 0, p.base_cid, wrong_key.address), other,
                                EnvelopeContext(pid, 0, wrong_key.address)),
        garbage.address: MAGIC + os.urandom(200),
        other_round.address: seal(encode(deltas[4], pid, 0, p.base_cid, other_round.address), p.spec.recipient_keys(),
                                  EnvelopeContext(pid, 1, other_round.address)),
    }
    for addr, blob in forged.items():
        states[addr] = parts[addr].upload(pid, 0, blob)
    for addr, st in states.items():
        states[addr] = parts[addr].commit(st)
    p.mine_to(market.project(pid).commit_deadline + 1)
    for addr, st in states.items():
        parts[addr].reveal(st)
    p.mine_to(market.project(pid).reveal_deadline + 1)

    out = _serve(anvil, deployment_file, ipfs_node, pid, state)
    assert out.returncode == 0, out.stderr
    (ev0,) = [f for f in market.finalized(pid) if f.round == 0]
    record = load_record(ipfs, ev0.record_cid)
    verdicts = {v.trainer: v for v in record.verdicts}
    assert all(verdicts[a.address].accepted for a in honest)
    assert verdicts[wrong_key.address].reason == "not_recipient"
    assert verdicts[garbage.address].reason == "malformed_envelope"
    assert verdicts[other_round.address].reason == "undecryptable"
    assert sum(record.rewards.values()) == record.allocation > 0
    assert set(record.rewards) >= {a.address for a in honest}

    # the aggregator proves one update does not open by disclosing only that update's key
    agg_keys = KeySource(tmp_path / "unused", state, dev=AGGREGATOR).load()
    blob = ipfs.cat(states[honest[0].address].cid)
    ctx0 = EnvelopeContext(pid, 0, honest[0].address)
    assert decode_update(open_with_content_key(blob, disclose_key(blob, agg_keys, ctx0), ctx0))[0].round == 0

    # round 1: the honest trainers again (their round-0 envelopes are the free-rider reference)
    p.settle_previous()
    for i, a in enumerate(honest):
        st = parts[a.address].prepare(pid, 1, encode(deltas[i + 3], pid, 1, ev0.model_cid, a.address))
        states[a.address] = parts[a.address].commit(st)
    p.mine_to(market.project(pid).commit_deadline + 1)
    for a in honest:
        parts[a.address].reveal(states[a.address])
    p.mine_to(market.project(pid).reveal_deadline + 1)
    out = _serve(anvil, deployment_file, ipfs_node, pid, state)
    assert out.returncode == 0, out.stderr
    record1 = load_record(ipfs, next(f for f in market.finalized(pid) if f.round == 1).record_cid)
    assert all(v.accepted for v in record1.verdicts)

    # IPFS never holds a plaintext update: every revealed CID of the run is an envelope
    cids = [rv.cid for r in (0, 1) for rv in market.reveals(pid, r)]
    assert len(cids) == 9
    for cid in cids:
        data = ipfs.cat(cid)
        assert is_envelope(data)
        with pytest.raises(UpdateRejected):
            decode_update(data)

    # a key holder's audit rebuilds everything; anyone else's passes and says what it could not check
    auditor_keys = keystore.encryption_keys("auditor", PASSWORD)
    keyed = audit_project(market, ipfs, pid, decryption_keys=auditor_keys)
    assert [r.verdict for r in keyed] == ["pass", "pass"], [r.problems for r in keyed]
    assert not any(r.unverified for r in keyed)
    keyless = audit_project(market, ipfs, pid)
    assert [r.verdict for r in keyless] == ["pass", "pass"], [r.problems for r in keyless]
    assert all(any(UNVERIFIED in note for note in r.unverified) for r in keyless)

    # the same through the CLI: --key-file (password from the environment), and without a key
    cli = _audit_cli(anvil, deployment_file, ipfs_node, pid, "--key-file", str(keystore.directory / "auditor.x25519.pem"),
                     "--json", env={PASSWORD_ENV: PASSWORD})
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["ok"] is True
    cli = _audit_cli(anvil, deployment_file, ipfs_node, pid)
    assert cli.returncode == 0, cli.stderr
    assert "not verified" in cli.stderr and UNVERIFIED in cli.stderr


@needs_jsipfs
def test_aggregator_without_its_key_file_says_so(anvil: Anvil, market: MarketClient, ipfs: IpfsStore,
                                                 ipfs_node: IpfsNode, deployment_file: Path, tmp_path: Path) -> None:
    recipients = {
        "aggregator": Recipient(role="aggregator", public_key=public_key_hex(generate_key())),
        "arbiter": Recipient(role="arbiter", public_key=public_key_hex(generate_key())),
    }
    policy = DpPolicy()
    p = _encrypted_project(market, anvil, ipfs, recipients, trainers=1, privacy=policy)
    a = p.trainers[0]
    part = Participant(p.client_of(a), ipfs, tmp_path / "t0")
    assert part.privacy_spent(p.project_id) == PrivacySpent(policy, "project", (), 0.0, rounds_within_budget(policy))
    st = part.commit(part.prepare(p.project_id, 0, encode(honest_deltas()[0], p.project_id, 0, p.base_cid, a.address)))
    p.mine_to(market.project(p.project_id).commit_deadline + 1)
    part.reveal(st)
    p.mine_to(market.project(p.project_id).reveal_deadline + 1)
    # the trainer's spent epsilon comes from its reveals on chain
    spent = part.privacy_spent(p.project_id)
    assert spent is not None and spent.rounds == (0,) and spent.epsilon == pytest.approx(epsilon_spent(policy, 1))

    # no key file at all
    out = _serve(anvil, deployment_file, ipfs_node, p.project_id, tmp_path / "none")
    assert out.returncode == 2 and "no usable key file" in out.stderr, out.stderr
    # a key file, but not the key the spec names for the aggregator
    dev_encryption_key(tmp_path / "other", AGGREGATOR)
    out = _serve(anvil, deployment_file, ipfs_node, p.project_id, tmp_path / "other")
    assert out.returncode == 2 and "is the one project" in out.stderr, out.stderr
    assert DEV_KEY_PASSWORD == "dev"

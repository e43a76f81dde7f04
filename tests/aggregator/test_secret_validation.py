"""Secret per-round validation parts through the service and the audit, on the real stack: the
spec commits to a 2-part split of digits, the service scores round r on part r and discloses it
with round r's record, and the audit verifies each round's part against the commitment."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from aggregator.audit import FAIL, PASS, audit_project
from aggregator.errors import SettingsError
from aggregator.journal import Journal
from aggregator.service import AggregatorService
from aggregator.settings import AggregatorSettings
from aggregator.valset import DISCLOSURE_KEY, SecretParts, check_disclosed_part, load_secret_parts
from devnet.anvil import Anvil
from market.chain import MarketClient, ProjectParams
from market.chain.accounts import dev_account
from market.datasets import builtin_arrays
from market.errors import IntegrityError
from market.protocol.reading import load_record
from market.protocol.valsplit import ValidationCommitment, ValSplit
from market.storage import IpfsStore
from tests.aggregator.support import (
    AGGREGATOR,
    ARBITER,
    MODEL,
    ChainProject,
    encode,
    honest_deltas,
    initial_model_bytes,
    make_spec,
    revert,
    snapshot,
)
from tests.conftest import needs_jsipfs

pytestmark = [pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning")]

KEY = bytes(range(32))
SAMPLES = 150


def split_of(key: bytes = KEY) -> ValSplit:
    x, y = builtin_arrays("digits")
    return ValSplit.make(x, y, 2, size=SAMPLES, key=key)


def key_file(tmp_path: Path, split: ValSplit) -> Path:
    path = tmp_path / "project.valkey.json"
    path.write_bytes(split.key_document("digits"))
    return path


def secret_project(market: MarketClient, anvil_url: str, store: IpfsStore, commitment: ValidationCommitment,
                   trainers: int = 3) -> ChainProject:
    base_cid = store.add(initial_model_bytes())
    spec = make_spec(base_cid).model_copy(update={"validation_data": commitment})
    spec_cid = store.add(spec.to_bytes())
    params = ProjectParams(aggregator=dev_account(AGGREGATOR).address, arbiter=dev_account(ARBITER).address,
                           num_rounds=2, reward_per_round=10**18, commit_window=30, reveal_window=30,
                           challenge_window=3, spec_cid=spec_cid)
    pid, _ = market.create_project(params)
    accts = [dev_account(3 + i) for i in range(trainers)]
    for a in accts:
        market.with_account(a).register(pid)
    return ChainProject(market, anvil_url, store, pid, spec, spec_cid, base_cid, accts, params)


def honest(p: ChainProject, round_: int, base_cid: str) -> dict[str, bytes]:
    deltas = honest_deltas()
    return {t.address: encode(deltas[i], p.project_id, round_, base_cid, t.address) for i, t in enumerate(p.trainers)}


def service(market: MarketClient, store: IpfsStore, p: ChainProject, state: Path, key: Path) -> AggregatorService:
    client = market.with_account(dev_account(AGGREGATOR))
    journal = Journal.for_project(state, 31337, client.address, p.project_id)
    settings = AggregatorSettings(validation_key=str(key), poll=0.01)
    return AggregatorService(client, store, p.project_id, settings, journal, sleep=lambda s: None)


@pytest.mark.integration
@needs_jsipfs
def test_rounds_are_scored_on_their_disclosed_parts_and_a_tampered_part_fails_the_audit(
    anvil: Anvil, market: MarketClient, ipfs: IpfsStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split = split_of()
    key = key_file(tmp_path, split)
    p = secret_project(market, anvil.url, ipfs, split.commitment())
    svc = service(market, ipfs, p, tmp_path / "state", key)

    p.submit(0, honest(p, 0, p.base_cid))
    assert svc.run(once=True) == 1
    ev0 = market.finalized(p.project_id)[0]
    p.settle_previous()
    p.submit(1, honest(p, 1, ev0.model_cid))
    snap = snapshot(anvil.url)
    try:
        assert svc.run(once=True) == 1
        events = sorted(market.finalized(p.project_id), key=lambda f: f.round)
        for r, ev in enumerate(events):
            record = load_record(ipfs, ev.record_cid)
            assert record.aggregation[DISCLOSURE_KEY] == split.disclose(r).model_dump()
            assert record.metrics["validation_samples"] == SAMPLES
            x, y = split.part(r)
            with np.load(io.BytesIO(ipfs.cat(record.validation_cid)), allow_pickle=False) as npz:
                assert np.array_equal(npz["x"], x) and np.array_equal(npz["y"], y)  # part r, as dealt
        assert load_record(ipfs, events[0].record_cid).validation_cid != load_record(ipfs, events[1].record_cid).validation_cid
        audits = audit_project(market, ipfs, p.project_id)
        assert [a.verdict for a in audits] == [PASS, PASS], [a.problems for a in audits]
        assert all(a.checks["validation"] is True for a in audits)
    finally:
        revert(anvil.url, snap)

    # the same round 1 again, by an aggregator that scores it on samples the owner never committed to
    other = split_of(bytes(32))
    honest_part = SecretParts.part

    def tampered(self: SecretParts, r: int):  # type: ignore[no-untyped-def]
        if r != 1:
            return honest_part(self, r)
        return honest_part(SecretParts(other, self.spec), r)[:2] + (self.split.disclose(1),)

    monkeypatch.setattr(SecretParts, "part", tampered)
    assert service(market, ipfs, p, tmp_path / "tampered", key).run(once=True) == 1
    audits = audit_project(market, ipfs, p.project_id)
    assert [a.verdict for a in audits] == [PASS, FAIL]
    assert audits[1].checks["validation"] is False
    assert len(audits[1].problems) == 1, audits[1].problems
    assert audits[1].problems[0].startswith("round 1: validation part 1 does not match the spec's commitment")


def test_a_committed_spec_without_a_key_file_is_one_line(tmp_path: Path) -> None:
    commitment = split_of().commitment()
    with pytest.raises(SettingsError, match="set validation_key in \\[aggregator\\]") as exc:
        load_secret_parts(None, commitment, MODEL)
    assert "\n" not in str(exc.value)
    with pytest.raises(SettingsError, match="cannot read the validation key file"):
        load_secret_parts(tmp_path / "absent.json", commitment, MODEL)
    with pytest.raises(SettingsError, match="another project's key file"):
        load_secret_parts(key_file(tmp_path, split_of(bytes(32))), commitment, MODEL)


def test_disclosure_checks_name_the_round() -> None:
    split = split_of()
    parts = SecretParts(split, MODEL)
    valset, data, disclosure = parts.part(1)
    agg = {DISCLOSURE_KEY: disclosure.model_dump()}
    assert check_disclosed_part(split.commitment(), 1, agg, data) == disclosure
    with pytest.raises(IntegrityError, match="round 1: .* discloses none"):
        check_disclosed_part(split.commitment(), 1, {}, data)
    with pytest.raises(IntegrityError, match="round 0: round 0 discloses validation part 1"):
        check_disclosed_part(split.commitment(), 0, agg, data)
    _, data0, _ = parts.part(0)
    with pytest.raises(IntegrityError, match="round 1: validation part 1 does not match"):
        check_disclosed_part(split.commitment(), 1, agg, data0)
    with pytest.raises(IntegrityError, match="not an .npz"):
        check_disclosed_part(split.commitment(), 1, agg, b"not a zip")
    assert len(valset) == SAMPLES and tuple(valset.x.shape[1:]) == MODEL.input_shape

"""The round computation (`aggregator.round`) on an embedded store with crafted updates: honest ones from a few
steps of real training on `digits`, malformed bytes, a copy, a zero update, a scaled attack, a
stale resend; plus the journal, the validation set and the adaptation rule."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aggregator.journal import Journal, RoundEntry, Stage
from aggregator.round import (
    PIPELINE,
    STAGES,
    ZERO_ADDRESS,
    RoundConfig,
    RoundContext,
    adapt_hyperparams,
    compute_from_inputs,
    compute_round,
    config_from_record,
    gather_inputs,
    publish_round,
)
from aggregator.round import (
    initial_state as initial_adapt_state,
)
from aggregator.settings import (
    AdaptSchedule,
    AggregatorSettings,
    SettingsError,
    load_aggregator_settings,
)
from aggregator.valset import ValidationSet, ValidationSetError, load_validation_set
from market.chain.accounts import dev_account
from market.models import flatten
from market.protocol.codec import decode_model
from market.protocol.documents import RoundRecord, UpdateInput
from market.protocol.merkle import RewardTree
from market.storage import EmbeddedStore
from tests.aggregator.support import (
    ETHER,
    MODEL,
    VALIDATION,
    encode,
    honest_deltas,
    initial_model_bytes,
    initial_state,
    make_spec,
    zero_delta,
)

PID = 7
TRAINERS = [dev_account(i).address for i in range(3, 12)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedStore:
    return EmbeddedStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def base_cid(store: EmbeddedStore) -> str:
    return store.add(initial_model_bytes())


@pytest.fixture(scope="module")
def valset() -> ValidationSet:
    return load_validation_set(VALIDATION, MODEL)


@pytest.fixture(scope="module")
def valset_cid(store: EmbeddedStore, valset: ValidationSet) -> str:
    return store.add(valset.to_npz())


def _input(store: EmbeddedStore, trainer: str, data: bytes, order: int, *, digest: bytes | None = None,
           cid: str | None = None) -> UpdateInput:
    cid = cid or store.add(data)
    return UpdateInput(
        trainer=trainer, cid=cid, digest="0x" + (digest or hashlib.sha256(data).digest()).hex(),
        commit_block=100 + order, commit_log_index=0, reveal_block=200 + order,
    )


def _ctx(base_cid: str, inputs: list[UpdateInput], *, round_: int = 0, available: int = ETHER,
         previous: tuple[UpdateInput, ...] = (), previous_base: str | None = None,
         cumulative: dict[str, int] | None = None, previous_aggregation: dict | None = None) -> RoundContext:
    return RoundContext(
        project_id=PID, round=round_, chain_id=31337, contract="0x" + "ab" * 20, spec=make_spec(base_cid),
        base_model_cid=base_cid, base_hyperparams={}, previous_aggregation=previous_aggregation or {},
        reveal_deadline=150, seed=123456789, inputs=tuple(inputs), previous_inputs=previous,
        previous_base_model_cid=previous_base, cumulative_rewards=cumulative or {}, cumulative_scores={},
        available=available,
    )


@pytest.fixture(scope="module")
def mixed_round(store: EmbeddedStore, base_cid: str) -> tuple[RoundContext, dict[str, str]]:
    """Five honest trainers, then malformed bytes, a copy of trainer 1, a zero update and a x40
    scaled attack (in that commit order)."""
    deltas = honest_deltas()
    inputs, roles = [], {}
    for i in range(5):
        inputs.append(_input(store, TRAINERS[i], encode(deltas[i], PID, 0, base_cid, TRAINERS[i]), i))
        roles[TRAINERS[i]] = "honest"
    crafted = [
        ("malformed", b"\x00\x01 this is not a safetensors file"),
        ("copy", encode(deltas[1], PID, 0, base_cid, TRAINERS[6])),
        ("zero", encode(zero_delta(), PID, 0, base_cid, TRAINERS[7])),
        ("scaled", encode(deltas[0], PID, 0, base_cid, TRAINERS[8], scale=40.0)),
    ]
    for k, (role, data) in enumerate(crafted):
        t = TRAINERS[5 + k]
        inputs.append(_input(store, t, data, 5 + k))
        roles[t] = role
    return _ctx(base_cid, inputs), roles


def test_mixed_round_verdicts_rewards_and_determinism(
    store: EmbeddedStore, mixed_round: tuple[RoundContext, dict[str, str]], valset: ValidationSet, valset_cid: str
) -> None:
    ctx, roles = mixed_round
    stages: list[str] = []
    computed = compute_round(ctx, store, RoundConfig(), valset, valset_cid, on_stage=stages.append)
    assert stages == ["fetch", "validate", "filter", "aggregate", "score", "reward", "adapt"]
    record = publish_round(store, computed).record
    by = {v.trainer: v for v in record.verdicts}
    assert [v.trainer for v in record.verdicts] == [u.trainer for u in ctx.inputs]
    for t, role in roles.items():
        v = by[t]
        if role == "honest":
            assert v.accepted and v.reason is None, v
        else:
            assert not v.accepted
    assert by[TRAINERS[5]].reason == "malformed"
    assert by[TRAINERS[6]].reason == f"copy_of:{TRAINERS[1]}"
    assert by[TRAINERS[7]].reason == "zero_update"
    assert by[TRAINERS[8]].reason == "outlier"
    assert all(v.detail for v in record.verdicts if not v.accepted)

    # rewards: the whole available amount, exactly, to accepted trainers only
    assert record.allocation == ETHER
    assert sum(record.rewards.values()) == record.allocation
    for t, role in roles.items():
        if role != "honest":
            assert record.rewards[t] == 0
    assert set(record.scores) == {t for t, r in roles.items() if r == "honest"}
    assert any(record.rewards[t] > 0 for t in record.scores)
    # the root and the proofs are those of the cumulative amounts
    tree = RewardTree.build(record.cumulative_rewards)
    assert record.rewards_root == "0x" + tree.root.hex()
    assert record.proofs == tree.proofs_hex()
    # the model improved on the validation set and the record says how it was built
    assert record.metrics["accuracy_after"] > record.metrics["accuracy_before"]
    assert record.rule == "fedavg"
    assert record.scorer == "exact_shapley"
    assert record.validation_cid == valset_cid
    assert record.aggregation["server_lr"] == 1.0

    # pure and deterministic: a second run gives byte-identical model and record
    again = compute_round(ctx, store, RoundConfig(), valset, valset_cid)
    assert again.model_bytes == computed.model_bytes
    assert again.record("x").to_bytes() == computed.record("x").to_bytes()
    # a replay from the record's own settings gives the same record as well
    replay = compute_round(ctx, store, config_from_record(record), valset, valset_cid)
    assert replay.record(record.model_cid).to_bytes() == record.to_bytes()


def test_compute_from_inputs_is_the_round_without_io(
    store: EmbeddedStore, mixed_round: tuple[RoundContext, dict[str, str]], valset: ValidationSet, valset_cid: str,
    tmp_path: Path,
) -> None:
    """All the I/O is in gather_inputs: the computation runs on the gathered bytes alone (here
    after the store that served them is gone) and gives compute_round's bytes."""
    ctx, _ = mixed_round
    assert STAGES == ("fetch", *(stage.name for stage in PIPELINE))
    copy = EmbeddedStore(tmp_path / "copy")
    for u in ctx.inputs:
        copy.add(store.cat(u.cid))
    copy.add(store.cat(ctx.base_model_cid))
    inputs = gather_inputs(copy, ctx, valset=valset, validation_cid=valset_cid, config=RoundConfig())
    for path in (tmp_path / "copy").rglob("*"):
        if path.is_file():
            path.unlink()
    pure = compute_from_inputs(inputs, RoundConfig())
    served = compute_round(ctx, store, RoundConfig(), valset, valset_cid)
    assert pure.model_bytes == served.model_bytes
    assert pure.record("m").to_bytes() == served.record("m").to_bytes()


def test_fetch_failures_are_verdicts(store: EmbeddedStore, base_cid: str, valset: ValidationSet, valset_cid: str) -> None:
    deltas = honest_deltas()
    good = encode(deltas[0], PID, 0, base_cid, TRAINERS[0])
    # scaled so its bytes differ from every update other tests put in the shared store
    missing = encode({k: v * 1.5 for k, v in deltas[2].items()}, PID, 0, base_cid, TRAINERS[2])
    other_store = EmbeddedStore(Path(store.root).parent / "elsewhere")
    inputs = [
        _input(store, TRAINERS[0], good, 0),
        _input(store, TRAINERS[1], encode(deltas[1], PID, 0, base_cid, TRAINERS[1]), 1, digest=b"\x11" * 32),
        _input(store, TRAINERS[2], missing, 2, cid=other_store.add(missing)),  # never added to `store`
        _input(store, TRAINERS[3], encode(deltas[3], PID, 1, base_cid, TRAINERS[3]), 3),  # wrong round
        _input(store, TRAINERS[4], encode(deltas[4], PID, 0, base_cid, TRAINERS[0]), 4),  # wrong trainer
    ]
    cfg = RoundConfig(fetch_attempts=1)
    record = compute_round(_ctx(base_cid, inputs), store, cfg, valset, valset_cid).record("m")
    reasons = [v.reason for v in record.verdicts]
    assert reasons == [None, "digest_mismatch", "unavailable", "wrong_round", "wrong_trainer"]
    assert record.rewards[TRAINERS[0]] == record.allocation == ETHER


def test_all_rejected_pays_nobody_and_keeps_cumulative(
    store: EmbeddedStore, base_cid: str, valset: ValidationSet, valset_cid: str
) -> None:
    earlier = {TRAINERS[8]: 5 * ETHER}
    inputs = [
        _input(store, TRAINERS[0], b"garbage", 0),
        _input(store, TRAINERS[1], encode(zero_delta(), PID, 0, base_cid, TRAINERS[1]), 1),
    ]
    computed = compute_round(_ctx(base_cid, inputs, cumulative=earlier), store, RoundConfig(), valset, valset_cid)
    record = computed.record("m")
    # the round's allocation is the chain's fixed one; nobody earned a share, so the tree pays
    # nobody and the allocation waits for the sweep after the claim window
    assert record.allocation == computed.allocation == ETHER
    assert record.scores == {}
    assert record.rewards == {TRAINERS[0]: 0, TRAINERS[1]: 0}
    assert record.cumulative_rewards == {TRAINERS[8]: 5 * ETHER, TRAINERS[0]: 0, TRAINERS[1]: 0}
    assert record.rewards_root == "0x" + RewardTree.build(record.cumulative_rewards).root.hex()
    assert record.metrics["accuracy_after"] == record.metrics["accuracy_before"]  # model unchanged

    # nobody at all, ever: the tree still has a leaf (a zero root is refused on chain)
    empty = compute_round(_ctx(base_cid, []), store, RoundConfig(), valset, valset_cid).record("m")
    assert empty.allocation == ETHER and sum(empty.rewards.values()) == 0
    assert empty.cumulative_rewards == {ZERO_ADDRESS: 0}
    assert int(empty.rewards_root, 16) != 0


def test_stale_resend_of_previous_update_is_a_free_rider(
    store: EmbeddedStore, base_cid: str, valset: ValidationSet, valset_cid: str
) -> None:
    deltas = honest_deltas()
    prev = [_input(store, TRAINERS[i], encode(deltas[i], PID, 0, base_cid, TRAINERS[i]), i) for i in range(3)]
    base1 = store.add(initial_model_bytes(1))  # stands in for round 0's model
    inputs = [
        _input(store, TRAINERS[0], encode(deltas[0], PID, 1, base1, TRAINERS[0]), 0),  # the same delta again
        _input(store, TRAINERS[1], encode(deltas[3], PID, 1, base1, TRAINERS[1]), 1),
        _input(store, TRAINERS[2], encode(deltas[4], PID, 1, base1, TRAINERS[2]), 2),
    ]
    ctx = _ctx(base1, inputs, round_=1, previous=tuple(prev), previous_base=base_cid,
               cumulative={TRAINERS[0]: 3, TRAINERS[5]: 9})
    record = compute_round(ctx, store, RoundConfig(), valset, valset_cid).record("m")
    assert [v.reason for v in record.verdicts] == ["stale_update", None, None]
    assert record.rewards[TRAINERS[0]] == 0
    # cumulative amounts continue from the previous record
    assert record.cumulative_rewards[TRAINERS[5]] == 9
    assert record.cumulative_rewards[TRAINERS[0]] == 3
    assert sum(record.cumulative_rewards.values()) == 12 + record.allocation


def test_fedavg_weights_cap_claimed_samples(store: EmbeddedStore, base_cid: str, valset: ValidationSet, valset_cid: str) -> None:
    """A trainer claiming a billion samples weighs no more than the policy's cap allows."""
    deltas = honest_deltas()
    liar = encode(deltas[0], PID, 0, base_cid, TRAINERS[0], samples=10**9)
    honest = encode(deltas[1], PID, 0, base_cid, TRAINERS[1], samples=250)
    inputs = [_input(store, TRAINERS[0], liar, 0), _input(store, TRAINERS[1], honest, 1)]
    cfg = RoundConfig(rule="fedavg:cap_factor=none")
    computed = compute_round(_ctx(base_cid, inputs), store, cfg, valset, valset_cid)
    record = computed.record("m")
    assert [v.claimed_samples for v in record.verdicts] == [10**9, 250]
    cap = make_spec(base_cid).validation.max_claimed_samples
    w = torch.tensor([cap, 250.0], dtype=torch.float64)
    w = w / w.sum()  # the liar weighs cap / (cap + 250), not 10^9 / (10^9 + 250)
    _, model = decode_model(computed.model_bytes)
    base = flatten(initial_state())
    d = torch.stack([flatten(deltas[0]), flatten(deltas[1])]).double()
    expected = base.double() + (w[:, None] * d).sum(0)
    got = flatten({k: model[k] for k in initial_state()}).double()
    assert torch.allclose(got, expected, atol=1e-6)
    unweighted = base.double() + d[0] * (10**9 / (10**9 + 250)) + d[1] * (250 / (10**9 + 250))
    assert not torch.allclose(got, unweighted, atol=1e-6)


def test_journal_keeps_snapshot_cache_and_never_goes_back(tmp_path: Path) -> None:
    j = Journal.for_project(tmp_path, 31337, "0xABCD", 3)
    e = j.begin(3, 0, snapshot_block=10, available=500)
    e = j.advance(e, Stage.PUBLISHED, record_cid="bafy-record")
    again = j.begin(3, 0, snapshot_block=99, available=1)  # a restart keeps the first snapshot
    assert (again.snapshot_block, again.available, again.stage) == (10, 500, Stage.PUBLISHED)
    assert j.advance(again, Stage.FETCHED).stage == Stage.PUBLISHED
    data = b"update bytes"
    assert j.cached_update(hashlib.sha256(data).digest()) is None
    j.cache_update(data)
    assert j.cached_update(hashlib.sha256(data).digest()) == data
    (j.directory / "updates" / hashlib.sha256(data).hexdigest()).write_bytes(b"corrupt")
    assert j.cached_update(hashlib.sha256(data).digest()) is None
    assert [r.round for r in j.rounds()] == [0]
    assert isinstance(j.load(3, 0), RoundEntry)
    (j.directory / "round-000001.json").write_text("{not json")
    with pytest.raises(Exception, match="malformed journal entry"):
        j.load(3, 1)


def test_validation_set_bytes_are_deterministic_and_never_unpickled(valset: ValidationSet) -> None:
    a = load_validation_set(VALIDATION, MODEL).to_npz()
    assert a == valset.to_npz()
    back = ValidationSet.from_npz(a, MODEL)
    assert torch.equal(back.x, valset.x) and torch.equal(back.y, valset.y)
    with np.load(io.BytesIO(a), allow_pickle=False) as npz:  # plain numpy reads it
        assert npz["x"].shape == (300, 64)
    buf = io.BytesIO()
    np.savez(buf, x=np.array([{"evil": 1}], dtype=object), y=np.zeros(1, dtype=np.int64))
    with pytest.raises(ValidationSetError, match="not a readable .npz"):
        ValidationSet.from_npz(buf.getvalue(), MODEL)
    with pytest.raises(ValidationSetError, match="neither a built-in"):
        load_validation_set("/nonexistent.npz")
    with pytest.raises(ValidationSetError, match="bad validation option"):
        load_validation_set("digits:bogus=1")


def test_adaptation_lowers_server_lr_and_raises_epochs_on_plateau() -> None:
    policy = AdaptSchedule(patience=2, min_delta=0.01, lr_factor=0.5, max_epochs=3)
    state = initial_adapt_state(RoundConfig(server_lr=1.0, adapt=policy), {"lr": 0.1})
    state, hyper = adapt_hyperparams(state, 0.50, policy, {"lr": 0.1})
    assert state["best_accuracy"] == 0.5 and hyper == {"lr": 0.1}
    state, hyper = adapt_hyperparams(state, 0.505, policy, {"lr": 0.1})  # not better by min_delta
    assert state["stale_rounds"] == 1 and state["server_lr"] == 1.0
    state, hyper = adapt_hyperparams(state, 0.50, policy, hyper)
    assert state["server_lr"] == 0.5 and state["epochs"] == 2 and hyper == {"lr": 0.1, "epochs": 2}
    json.dumps(state)  # goes into the record as JSON


def test_settings_reject_unknown_keys_and_bad_values() -> None:
    s = load_aggregator_settings({"rule": "median", "adapt": {"patience": 3}})
    assert s.rule == "median" and s.adapt.patience == 3
    assert s.merged(server_lr=0.5, rule=None).server_lr == 0.5
    with pytest.raises(SettingsError, match="aggregator.rulez"):
        load_aggregator_settings({"rulez": "median"})
    with pytest.raises(SettingsError):
        AggregatorSettings().merged(poll=-1)


def test_record_parses_back(store: EmbeddedStore, mixed_round: tuple[RoundContext, dict[str, str]],
                            valset: ValidationSet, valset_cid: str) -> None:
    ctx, _ = mixed_round
    pub = publish_round(store, compute_round(ctx, store, RoundConfig(), valset, valset_cid))
    assert RoundRecord.from_bytes(store.cat(pub.record_cid)) == pub.record
    assert hashlib.sha256(store.cat(pub.model_cid)).hexdigest() == pub.record.model_digest[2:]

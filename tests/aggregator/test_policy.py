"""The project's aggregation policy on the aggregator's side (issue 13 point 4, issue 11 leftovers):
the protocol's vocabulary agrees with the aggregator's registries and defaults; the service adopts
the spec's policy and refuses an operator setting that contradicts it; the audit fails a record
whose choices differ from the policy (the issue's example: `zero_rel_norm` 0.99 rejects honest
trainers, and replaying what the record declares used to pass); `serve --validation-key`."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aggregator.audit import FAIL, PASS, audit_round
from aggregator.errors import SettingsError
from aggregator.filters import FilterConfig
from aggregator.journal import Journal
from aggregator.policy import config_from_policy, record_deviations, refuse_contradictions
from aggregator.round import RoundConfig, compute_round, load_context
from aggregator.rules import RULES
from aggregator.scoring import SCORERS
from aggregator.service import AggregatorService, available_for, config_from_settings
from aggregator.settings import AggregatorSettings, load_aggregator_settings
from aggregator.valset import load_validation_set
from devnet.anvil import Anvil
from devnet.ipfsnode import IpfsNode
from market._spec import Registry
from market.chain import MarketClient, ProjectParams
from market.chain.accounts import dev_account
from market.protocol.documents import ProjectSpec, Recipient, RoundRecord, ValidationPolicy
from market.protocol.envelope import EnvelopeContext, generate_key, public_key_hex, seal
from market.protocol.policy import (
    DEFAULT_SCORER,
    RULE_NAMES,
    SCORER_NAMES,
    AdaptSchedule,
    FilterThresholds,
    default_validation,
)
from market.protocol.tolerance import DEFAULT_RULE, DefencePolicy
from market.storage import IpfsStore
from tests.aggregator.support import (
    AGGREGATOR,
    ARBITER,
    MODEL,
    VALIDATION,
    ChainProject,
    encode,
    honest_deltas,
    initial_model_bytes,
)
from tests.conftest import needs_jsipfs

POLICY = DefencePolicy(validation=VALIDATION)


# ---------------------------------------------------------------------------------- vocabulary


def _params(reg: Registry[Any], name: str) -> dict[str, frozenset[str]]:
    """Parameter -> the kinds of value it takes (the aggregator's `Real` is int | float: a float)."""
    out = {}
    for key, annotation in reg.parameters(name).items():
        kinds = {a.__name__ for a in (typing.get_args(annotation) or (annotation,))}
        out[key] = frozenset(kinds - {"int"} if "float" in kinds else kinds)
    return out


@pytest.mark.parametrize(("mine", "theirs"), [(RULE_NAMES, RULES), (SCORER_NAMES, SCORERS)])
def test_the_protocols_names_are_the_aggregators(mine: Registry[Any], theirs: Registry[Any]) -> None:
    assert mine.names() == theirs.names()
    assert mine._aliases == theirs._aliases
    for name in theirs.names():
        assert _params(mine, name) == _params(theirs, name), name


def test_policy_defaults_are_the_aggregators_defaults() -> None:
    assert dataclasses.asdict(FilterConfig()) == DefencePolicy().round_filters()
    assert set(FilterThresholds.model_fields) | {"validation_gate", "outlier_min_updates"} == {
        f.name for f in dataclasses.fields(FilterConfig)}
    s = AggregatorSettings()
    assert (DEFAULT_RULE, DEFAULT_SCORER, 1.0) == (s.rule, s.scorer, s.server_lr)
    assert config_from_policy(DefencePolicy(), config_from_settings(s)) == config_from_settings(s)
    assert default_validation("digits") == "digits:size=500,seed=0" and default_validation("mine") is None


# ---------------------------------------------------------------------------------- the service


def _spec(policy: DefencePolicy | None = POLICY) -> ProjectSpec:
    return ProjectSpec(model=MODEL, validation=ValidationPolicy(defence=policy))


def _adopted(settings: AggregatorSettings, spec: ProjectSpec) -> RoundConfig:
    svc = AggregatorService(None, None, 7, settings, None)  # type: ignore[arg-type]
    svc._spec = spec
    return svc.round_config()


def test_the_service_adopts_the_specs_policy_over_its_defaults() -> None:
    spec = _spec(DefencePolicy(rule="median", scorer="leave_one_out", server_lr=0.5, validation=VALIDATION,
                               filters=FilterThresholds(zero_rel_norm=0.02)))
    cfg = _adopted(AggregatorSettings(threads=2), spec)
    assert (cfg.rule, cfg.scorer, cfg.server_lr, cfg.filters.zero_rel_norm, cfg.threads) == (
        "median", "leave_one_out", 0.5, 0.02, 2)
    # the same choice spelled another way, and a table key that agrees, are not contradictions
    assert _adopted(load_aggregator_settings({"rule": "median", "scorer": "loo"}), spec).rule == "median"
    # a spec created before policies runs on the settings, as before
    assert _adopted(AggregatorSettings(rule="krum"), _spec(None)).rule == "krum"


@pytest.mark.parametrize(
    ("table", "flags", "key", "fixed"),
    [
        ({"rule": "krum"}, {}, "rule", "'fedavg'"),
        ({}, {"rule": "trimmed_mean:beta=0.2"}, "rule", "'fedavg'"),
        ({}, {"scorer": "leave_one_out"}, "scorer", "'auto'"),
        ({}, {"server_lr": 0.5}, "server_lr", "1.0"),
        ({"filters": {"zero_rel_norm": 0.99}}, {}, "filters.zero_rel_norm", "0.01"),
        ({"adapt": {"patience": 5}}, {}, "adapt.patience", "2"),
        ({}, {"validation": "digits:size=200,seed=3"}, "validation", f"{VALIDATION!r}"),
    ],
)
def test_a_setting_that_contradicts_the_policy_is_refused_in_one_line(
        table: dict[str, Any], flags: dict[str, Any], key: str, fixed: str) -> None:
    settings = load_aggregator_settings(table).merged(**flags)
    with pytest.raises(SettingsError) as exc:
        _adopted(settings, _spec())
    msg = str(exc.value)
    assert f"setting {key} = " in msg and f"fixes {key} = {fixed}" in msg and "remove the setting" in msg
    assert "\n" not in msg


def test_defaults_are_never_contradictions() -> None:
    # every setting at its default, explicitly merged with no flags: nothing was set
    settings = load_aggregator_settings({"poll": 0.5}).merged(rule=None, scorer=None, server_lr=None)
    assert settings.model_fields_set == {"poll"}
    refuse_contradictions(settings, DefencePolicy(rule="krum:f=1", server_lr=0.3), _spec(), 7)


# ---------------------------------------------------------------------------------- records


def _record(**changes: Any) -> RoundRecord:
    base: dict[str, Any] = {
        "project_id": 1, "round": 0, "chain_id": 31337, "contract": "0x" + "00" * 20, "code_version": "x", "seed": 1,
        "base_model_cid": "Qm", "model_cid": "Qm", "model_digest": "0x", "validation_cid": "Qm", "rule": "fedavg",
        "filters": dataclasses.asdict(FilterConfig()), "scorer": "exact_shapley", "hyperparams": {}, "inputs": [],
        "verdicts": [], "scores": {}, "cumulative_scores": {}, "rewards": {}, "cumulative_rewards": {},
        "allocation": 0, "rewards_root": "0x", "proofs": {}, "metrics": {},
        "aggregation": {"server_lr": 1.0, "adapt": AdaptSchedule().model_dump(), "state_in": {"server_lr": 1.0}},
    }
    return RoundRecord(**(base | changes))


def test_a_record_that_follows_the_policy_has_no_deviation() -> None:
    assert record_deviations(_record(), DefencePolicy()) == []
    assert record_deviations(_record(rule="mean"), DefencePolicy()) == []  # an alias of fedavg


def test_each_choice_a_record_makes_against_the_policy_is_named() -> None:
    filters = dataclasses.asdict(FilterConfig(zero_rel_norm=0.99))
    d = record_deviations(_record(filters=filters), DefencePolicy())
    assert [x.message(1) for x in d] == ["round 1 declares filter zero_rel_norm=0.99; the project's policy fixes 0.01"]
    d = record_deviations(_record(rule="krum", scorer="leave_one_out"), DefencePolicy())
    assert [x.field for x in d] == ["rule", "scorer"]
    agg = {"server_lr": 3.0, "adapt": AdaptSchedule(lr_factor=1.0).model_dump(), "state_in": {"server_lr": 3.0}}
    d = record_deviations(_record(aggregation=agg), DefencePolicy())
    assert {x.field for x in d} == {"adapt lr_factor", "server_lr"}
    # later rounds: the server learning rate is the one the previous record handed on
    later = _record(round=1, aggregation={**agg, "adapt": AdaptSchedule().model_dump()})
    assert record_deviations(later, DefencePolicy(), {"state_out": {"server_lr": 1.0}})[0].field == "aggregation.state_in"
    assert record_deviations(later, DefencePolicy(), {"state_out": {"server_lr": 3.0}}) == []



def test_a_threshold_newer_than_both_spec_and_record_is_no_deviation() -> None:
    """A project created before `pay_claim_cap` existed: its spec and its records name no value
    (they ran without the cap); new rounds of it run with the cap and say so."""
    old = {k: v for k, v in dataclasses.asdict(FilterConfig()).items() if k != "pay_claim_cap"}
    stated = {k: v for k, v in DefencePolicy().filters.model_dump().items() if k != "pay_claim_cap"}
    policy = DefencePolicy().model_copy(update={"filters": type(DefencePolicy().filters)(**stated)})
    assert record_deviations(_record(filters=old), policy) == []
    assert record_deviations(_record(), policy) == []  # a new round of the old project
    # a spec that states the cap fixes it: a record without it departs from it
    assert [x.field for x in record_deviations(_record(filters=old), DefencePolicy().model_copy(
        update={"filters": type(DefencePolicy().filters)(**DefencePolicy().filters.model_dump())}))] == \
        ["filter pay_claim_cap"]


# ---------------------------------------------------------------------------------- on the stack


def policy_project(market: MarketClient, anvil_url: str, store: IpfsStore, spec: ProjectSpec | None = None,
                   trainers: int = 4, sealed: bool = False) -> ChainProject:
    base_cid = store.add(initial_model_bytes())
    spec = (spec or _spec()).model_copy(update={"model": MODEL.model_copy(update={"initial_weights_cid": base_cid})})
    spec_cid = store.add(spec.to_bytes())
    params = ProjectParams(aggregator=dev_account(AGGREGATOR).address, arbiter=dev_account(ARBITER).address,
                           num_rounds=1, reward_per_round=10**18, commit_window=30, reveal_window=30,
                           challenge_window=3, spec_cid=spec_cid)
    pid, _ = market.create_project(params)
    accts = [dev_account(3 + i) for i in range(trainers)]
    for a in accts:
        market.with_account(a).register(pid)
    p = ChainProject(market, anvil_url, store, pid, spec, spec_cid, base_cid, accts, params)
    deltas = honest_deltas()
    updates: dict[str, bytes] = {t.address: encode(deltas[i], pid, 0, base_cid, t.address) for i, t in enumerate(accts)}
    if sealed:
        updates = {a: seal(u, spec.recipient_keys(), EnvelopeContext(pid, 0, a)) for a, u in updates.items()}
    p.submit(0, updates)
    return p


def finalize_with(p: ChainProject, config: RoundConfig, validation: str = VALIDATION, keys: Any = ()) -> RoundRecord:
    """Round 0 computed (correctly) with `config`, published and finalized: a dishonest choice."""
    market, store = p.owner, typing.cast(IpfsStore, p.store)
    valset = load_validation_set(validation, MODEL)
    vcid = store.add(valset.to_npz())
    ctx = load_context(market, store, p.project_id, 0, available_for(market, market.project(p.project_id), 0),
                       decryption_keys=keys)
    computed = compute_round(ctx, store, config, valset, vcid)
    model_cid = store.add(computed.model_bytes)
    record = computed.record(model_cid)
    record_cid = store.add(record.to_bytes())
    market.with_account(dev_account(AGGREGATOR)).finalize_round(p.project_id, 0, model_cid, record_cid, computed.root,
                                                                record.allocation)
    return record


@pytest.mark.integration
@needs_jsipfs
@pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning")
def test_a_record_with_zero_rel_norm_099_fails_the_audit(anvil: Anvil, market: MarketClient, ipfs: IpfsStore) -> None:
    """Issue 13 point 4: the threshold rejects honest trainers; the round replays exactly as the
    record declares, and only the policy check sees the choice."""
    p = policy_project(market, anvil.url, ipfs)
    record = finalize_with(p, RoundConfig(filters=FilterConfig(zero_rel_norm=0.99)))
    assert any(v.reason == "zero_update" for v in record.verdicts)  # honest trainers rejected
    audit = audit_round(market, ipfs, p.project_id, market.finalized(p.project_id)[0])
    assert audit.verdict == FAIL
    assert [c for c, ok in audit.checks.items() if ok is False] == ["policy"]  # the arithmetic holds
    assert audit.problems == ["round 0: round 0 declares filter zero_rel_norm=0.99; the project's policy fixes 0.01"]


@pytest.mark.integration
@needs_jsipfs
@pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning")
def test_the_keyless_audit_checks_the_policy_too(anvil: Anvil, market: MarketClient, ipfs: IpfsStore) -> None:
    """An encrypted project: without a recipient key nothing is rebuilt, but the record's choices
    need no update bytes, so the same deviation fails both audits."""
    key = generate_key()
    spec = _spec().model_copy(update={"recipients": {"agg": Recipient(role="aggregator", public_key=public_key_hex(key))}})
    p = policy_project(market, anvil.url, ipfs, spec, sealed=True)
    finalize_with(p, RoundConfig(filters=FilterConfig(zero_rel_norm=0.99)), keys=[key])
    event = market.finalized(p.project_id)[0]
    want = "round 0: round 0 declares filter zero_rel_norm=0.99; the project's policy fixes 0.01"
    keyless = audit_round(market, ipfs, p.project_id, event)
    assert keyless.verdict == FAIL and keyless.problems == [want] and keyless.unverified
    keyed = audit_round(market, ipfs, p.project_id, event, decryption_keys=[key])
    assert keyed.verdict == FAIL and keyed.problems == [want]


@pytest.mark.integration
@needs_jsipfs
@pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning")
def test_rule_scorer_server_lr_and_validation_set_are_each_checked(anvil: Anvil, market: MarketClient,
                                                                    ipfs: IpfsStore) -> None:
    p = policy_project(market, anvil.url, ipfs)
    finalize_with(p, RoundConfig(rule="median", scorer="leave_one_out", server_lr=0.5), "digits:size=300,seed=2")
    audit = audit_round(market, ipfs, p.project_id, market.finalized(p.project_id)[0])
    assert [c for c, ok in audit.checks.items() if ok is False] == ["policy"]
    text = "\n".join(audit.problems)
    assert "declares rule='median'; the project's policy fixes 'fedavg'" in text
    assert "declares scorer='leave_one_out'; the project's policy fixes 'exact_shapley'" in text
    assert "declares server_lr=0.5; the project's policy fixes 1.0" in text
    assert f"which is not the project's policy's {VALIDATION!r}" in text
    assert len(audit.problems) == 4


@pytest.mark.integration
@needs_jsipfs
@pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning")
def test_the_service_follows_the_policy_and_its_rounds_pass(anvil: Anvil, market: MarketClient, ipfs: IpfsStore,
                                                            tmp_path: Path) -> None:
    spec = _spec(DefencePolicy(rule="median", validation=VALIDATION))
    p = policy_project(market, anvil.url, ipfs, spec)
    agg = market.with_account(dev_account(AGGREGATOR))
    journal = Journal.for_project(tmp_path, 31337, agg.address, p.project_id)
    refused = AggregatorService(agg, ipfs, p.project_id, AggregatorSettings(rule="fedavg", poll=0.01), journal,
                                sleep=lambda s: None)
    with pytest.raises(SettingsError, match="fixes rule = 'median'"):
        refused.run(once=True)
    assert market.finalized(p.project_id) == []  # refused before any round ran
    service = AggregatorService(agg, ipfs, p.project_id, AggregatorSettings(poll=0.01), journal, sleep=lambda s: None)
    assert service.run(once=True) == 1
    audit = audit_round(market, ipfs, p.project_id, market.finalized(p.project_id)[0])
    assert audit.verdict == PASS and audit.checks["policy"] is True, audit.problems


# ---------------------------------------------------------------------------------- --validation-key


@pytest.mark.integration
@needs_jsipfs
@pytest.mark.filterwarnings("ignore:.*'strict' parameter:FutureWarning")
def test_serve_validation_key_flag(anvil: Anvil, market: MarketClient, ipfs: IpfsStore, ipfs_node: IpfsNode,
                                   deployment_file: Path, tmp_path: Path) -> None:
    from aggregator.cli import app
    from tests.aggregator.test_secret_validation import key_file, split_of

    split = split_of()
    spec = _spec(DefencePolicy()).model_copy(update={"validation_data": split.commitment()})
    p = policy_project(market, anvil.url, ipfs, spec, trainers=3)
    argv = ["serve", str(p.project_id), "--once", "--dev-account", str(AGGREGATOR), "--rpc", anvil.url,
            "--deployment", str(deployment_file), "--ipfs", ipfs_node.api_multiaddr, "--state", str(tmp_path / "s")]

    def serve(*extra: str) -> Any:
        return CliRunner().invoke(app, [*argv, *extra])

    other = tmp_path / "other"
    other.mkdir()
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    for extra, says in (
        ((), "pass --validation-key"),
        (("--validation-key", str(tmp_path / "missing.json")), "cannot read the validation key file"),
        (("--validation-key", str(other)), "cannot read the validation key file"),
        (("--validation-key", str(garbage)), "garbage.json"),
        (("--validation-key", str(key_file(other, split_of(bytes(32))))), "it is another project's key file"),
    ):
        out = serve(*extra)
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert out.exit_code != 0 and len(errors) == 1 and says in errors[0], (extra, out.stderr)
    assert market.finalized(p.project_id) == []
    good = serve("--validation-key", str(key_file(tmp_path, split)))
    assert good.exit_code == 0, good.stderr
    assert len(market.finalized(p.project_id)) == 1

"""The project's aggregation policy on the aggregator's side: the service adopts it, the audit checks
every record against it (issue 13 point 4: the audit checks the choices, not only the arithmetic).

The policy is the spec's `validation.defence` (`market.protocol.tolerance.DefencePolicy`, fixed at
creation; its CID is on chain). From it:

- `config_from_policy` is the `RoundConfig` the service runs every round with: rule, every filter
  and pay threshold, scorer, server learning rate of round 0 and its plateau schedule. Only what
  never changes a result (threads, fetch workers and timeouts, user models, the compute backend)
  comes from the operator's settings;
- `refuse_contradictions` turns an operator setting that was explicitly set (pydantic
  `model_fields_set`, so a default never counts) and differs from the policy into one line naming
  the key, the spec's value and what to do;
- `record_deviations` lists every way a round record departs from the policy: rule, each filter
  threshold, scorer, adaptation schedule, round 0's server learning rate and the carried state;
  `validation_deviation` whether the public validation set at the record's `validation_cid` is the
  policy's, byte for byte.

A spec without `validation.defence` (created before policies) fixes nothing: `policy_of` is None,
the service runs on its settings and the audit replays what the record declares, as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from aggregator.errors import SettingsError
from aggregator.filters import FilterConfig
from aggregator.round.config import RoundConfig
from aggregator.rules import make_rule
from aggregator.scoring import SCORERS
from aggregator.settings import AggregatorSettings
from aggregator.valset import load_validation_set, parse_validation
from market.errors import MarketError
from market.protocol.documents import ProjectSpec, RoundRecord
from market.protocol.policy import default_validation
from market.protocol.tolerance import DefencePolicy

__all__ = [
    "Deviation",
    "config_from_policy",
    "policy_of",
    "policy_validation",
    "record_deviations",
    "refuse_contradictions",
    "validation_deviation",
]


def policy_of(spec: ProjectSpec) -> DefencePolicy | None:
    """The policy a spec fixes (None: a spec created before policies, which fixes nothing)."""
    return spec.validation.defence


def policy_validation(policy: DefencePolicy, spec: ProjectSpec) -> str | None:
    """The public validation set the policy names (None: secret parts, or no built-in to default to)."""
    if spec.validation_data is not None:
        return None
    return policy.validation or default_validation(spec.model.dataset)


def config_from_policy(policy: DefencePolicy, base: RoundConfig) -> RoundConfig:
    """`base` (the operator's settings as a RoundConfig) with every choice a round's result
    depends on taken from the policy; what only steers how the round runs (threads, fetching,
    where utilities are computed) stays the operator's."""
    return dataclasses.replace(
        base,
        rule=policy.rule,
        filters=FilterConfig(**policy.round_filters()),
        scorer=policy.scorer,
        server_lr=policy.server_lr,
        adapt=policy.adapt,
    )


# --- canonical forms: two spellings of one choice ("mean" and "fedavg") are the same choice ---------


def _rule(text: str) -> str:
    try:
        return make_rule(text).spec
    except MarketError:
        return text


def _scorer(text: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    try:
        name, kwargs = SCORERS.parse(text)
    except MarketError:
        return text, ()
    return name, tuple(sorted(kwargs.items()))


def _validation(text: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    name, opts = parse_validation(text)
    return name, tuple(sorted({"seed": 0, **opts}.items()))


def refuse_contradictions(settings: AggregatorSettings, policy: DefencePolicy, spec: ProjectSpec,
                          project_id: int) -> None:
    """SettingsError for the first setting the operator set that contradicts the spec's policy."""
    given = settings.model_fields_set
    where = f"project {project_id}'s spec fixes"
    fix = "remove the setting (flag or [aggregator] key): the spec's policy applies"

    def refuse(key: str, mine: Any, theirs: Any) -> None:
        raise SettingsError(f"the aggregator setting {key} = {mine!r} contradicts the policy: {where} {key} = {theirs!r};"
                            f" {fix}")

    if "rule" in given and _rule(settings.rule) != _rule(policy.rule):
        refuse("rule", settings.rule, policy.rule)
    if "scorer" in given and _scorer(settings.scorer) != _scorer(policy.scorer):
        refuse("scorer", settings.scorer, policy.scorer)
    if "server_lr" in given and settings.server_lr != policy.server_lr:
        refuse("server_lr", settings.server_lr, policy.server_lr)
    if "filters" in given:
        fixed = policy.round_filters()
        for key, value in settings.filters.items():
            if key not in fixed:
                raise SettingsError(f"the aggregator setting filters.{key} is no filter threshold; valid keys are"
                                    f" {', '.join(sorted(fixed))} (and the spec's policy fixes each)")
            if value != fixed[key]:
                refuse(f"filters.{key}", value, fixed[key])
    if "adapt" in given:
        schedule = policy.adapt.model_dump()
        for key in sorted(settings.adapt.model_fields_set):
            if getattr(settings.adapt, key) != schedule[key]:
                refuse(f"adapt.{key}", getattr(settings.adapt, key), schedule[key])
    if "validation" in given and settings.validation is not None and spec.validation_data is None:
        fixed_set = policy_validation(policy, spec)
        if fixed_set is None or _validation(settings.validation) != _validation(fixed_set):
            refuse("validation", settings.validation, fixed_set)


@dataclasses.dataclass(frozen=True)
class Deviation:
    """One way a round record departs from the project's policy."""

    field: str
    recorded: Any
    fixed: Any

    def message(self, round_: int) -> str:
        return f"round {round_} declares {self.field}={self.recorded!r}; the project's policy fixes {self.fixed!r}"


def record_deviations(record: RoundRecord, policy: DefencePolicy,
                      previous_aggregation: Mapping[str, Any] | None = None) -> list[Deviation]:
    """Every choice `record` declares that the policy does not fix. `previous_aggregation` is the
    previous round's record `aggregation` (None for round 0, or unknown)."""
    out: list[Deviation] = []
    if _rule(record.rule) != _rule(policy.rule):
        out.append(Deviation("rule", record.rule, _rule(policy.rule)))
    fixed = dataclasses.asdict(FilterConfig(**policy.round_filters()))
    try:
        declared = dataclasses.asdict(FilterConfig.from_record(record.filters))
    except (TypeError, MarketError):
        declared = dict(record.filters)
    stated = policy.filters.model_fields_set
    for key in sorted(set(fixed) | set(declared)):
        if key not in stated and key not in record.filters and key in type(policy.filters).model_fields:
            continue  # a threshold newer than both the spec and the record: neither chose it
        if declared.get(key) != fixed.get(key):
            out.append(Deviation(f"filter {key}", declared.get(key), fixed.get(key)))
    accepted = sum(1 for v in record.verdicts if v.accepted)
    want_scorer = RoundConfig(scorer=policy.scorer).scorer_for(accepted)
    if _scorer(record.scorer) != _scorer(want_scorer):
        out.append(Deviation("scorer", record.scorer, want_scorer))
    agg = record.aggregation
    schedule = policy.adapt.model_dump()
    adapt = agg.get("adapt")
    if not isinstance(adapt, Mapping):
        out.append(Deviation("aggregation.adapt", adapt, schedule))
    else:
        for key in sorted(set(schedule) | set(adapt)):
            if adapt.get(key) != schedule.get(key):
                out.append(Deviation(f"adapt {key}", adapt.get(key), schedule.get(key)))
    raw = agg.get("state_in")
    state_in: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
    if record.round == 0:
        lr = state_in.get("server_lr")
        if lr != policy.server_lr:
            out.append(Deviation("server_lr", lr, policy.server_lr))
    elif previous_aggregation is not None and previous_aggregation.get("state_out") is not None:
        carried = previous_aggregation["state_out"]
        if state_in != carried:
            out.append(Deviation("aggregation.state_in", state_in, carried))
    if "server_lr" in agg and state_in.get("server_lr") is not None and agg["server_lr"] != state_in["server_lr"]:
        out.append(Deviation("aggregation.server_lr", agg["server_lr"], state_in["server_lr"]))
    return out


def validation_deviation(data: bytes, policy: DefencePolicy, spec: ProjectSpec, record: RoundRecord) -> str | None:
    """Why the public validation set `data` (the bytes at the record's `validation_cid`) is not the
    one the policy names; None when it is, or when the spec's validation data is secret parts
    (checked by their disclosure) or names no built-in set."""
    text = policy_validation(policy, spec)
    if text is None:
        return None
    try:
        want = load_validation_set(text, spec.model).to_npz()
    except MarketError as exc:
        return f"the policy's validation set {text!r} cannot be built here ({exc})"
    if hashlib.sha256(data).digest() != hashlib.sha256(want).digest():
        return (f"round {record.round} is scored on the validation set {record.validation_cid}, which is not the"
                f" project's policy's {text!r}")
    return None

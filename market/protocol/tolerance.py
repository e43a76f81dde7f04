"""How many attackers a project's defence tolerates, per round size: "no silent collapse".

A robust rule's guarantee depends on n, and several quietly become "no defence" for small n: the
trimmed mean with beta = 0.1 trims floor(0.1 x n) = 0 updates per side below ten trainers, Krum
needs n > 2f + 2, and the outlier filter gives no verdict below `outlier_min_updates`. This module
states, for a rule spec, the validation gate and n trainers, how many arbitrary (Byzantine)
attackers each layer tolerates, and `check_defence` refuses, at project creation, a defence that
tolerates none for some round size the project allows.

What "tolerates f" means per layer (docs/robustness.md has the proofs' sources and the limits):
- rule: f attackers cannot move the aggregate arbitrarily far (the rule's breakdown point):
  median and geometric median floor((n - 1) / 2); trimmed mean its trim count f = floor(beta n)
  (or f=), at most floor((n - 1) / 2); Krum / Multi-Krum f with n > 2f + 2; FoundationFL its trim
  count (beta 0.2 by default); centered clipping floor(0.1 n) (the bound its analysis gives);
  FedAvg and norm clipping 0 (one update still moves the mean by its own weight).
- gate (the validation gate, on by default): the kept coalition's utility on the round's
  validation data is within the gate's tau of the best candidate coalition's, so updates that make
  the model worse by more than tau stay out of the aggregate. That holds for any number of
  attackers short of all n (n - 1), but only for damage the validation data can see: it needs at
  least `MIN_GATE_SAMPLES` validation samples per round, and backdoors (a trigger absent from
  validation data) and damage within tau stay its limits.
- filters: the outlier filter only flags gross outliers and guarantees nothing; it is stated
  (active or not at n) but never counted.

The layers stack: the defence tolerates the largest count any counted layer tolerates.

`DefencePolicy` is the project's whole aggregation policy, fixed in the spec at creation (its CID is
on chain): besides the rule, the gate and the round sizes, every filter and pay threshold, the
scorer, the server learning rate and its schedule, and the public validation set
(`market.protocol.policy`). The aggregator adopts it and refuses a setting that contradicts it; the
audit fails a round record that declares anything else. A spec whose `validation.defence` lacks a
field (written before that field existed) means that field's default; a spec with no
`validation.defence` at all (created before policies) fixes nothing, and its aggregator's settings
apply as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from market._spec import split_spec
from market.errors import ConfigError
from market.protocol.policy import (
    DEFAULT_SCORER,
    AdaptSchedule,
    FilterThresholds,
    check_rule,
    check_scorer,
    check_validation,
)

__all__ = [
    "DEFAULT_RULE",
    "MIN_GATE_SAMPLES",
    "DefencePolicy",
    "Tolerance",
    "check_defence",
    "describe",
    "rule_tolerance",
    "tolerance",
]

#: The aggregator's default rule (`aggregator.settings`): FedAvg over what the validation gate
#: kept. The gate is the default's defence at every n; a robust rule adds a breakdown bound.
DEFAULT_RULE = "fedavg"
#: Below this many validation samples per round a loss difference is mostly sampling noise
#: (the gate's margin would have to exceed most honest gains): the gate then counts for nothing.
MIN_GATE_SAMPLES = 100
_OUTLIER_MIN_UPDATES = 5

_HALF = {"median", "geomed", "geometric_median", "rfa"}
_NONE = {"fedavg", "mean", "avg", "average", "norm_clip", "clipping"}
_KRUM = {"krum", "multi_krum", "multikrum", "mkrum"}
_TRIMMED = {"trimmed_mean", "trmean"}
_FOUNDATION = {"foundation_fl", "foundationfl"}
_CC = {"centered_clipping", "cc"}


class DefencePolicy(BaseModel):
    """The aggregation policy a project fixes (the spec's `validation.defence`): the rule, the
    validation gate, the outlier filter's threshold and the round sizes it must hold for, then
    every other threshold, the scorer, the server learning rate and schedule and the validation
    set. Defaults are the aggregator's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str = DEFAULT_RULE
    gate: bool = True
    outlier_min_updates: int = Field(default=_OUTLIER_MIN_UPDATES, ge=1)
    #: The smallest and largest number of trainers a round of this project may have.
    min_trainers: int = Field(default=3, ge=1)
    max_trainers: int = Field(default=100, ge=1)
    #: Contribution scorer spec ("auto", "exact_shapley", "gtg_shapley:eps=...", "leave_one_out").
    scorer: str = DEFAULT_SCORER
    #: Round 0's server learning rate (later rounds: `adapt` from it, as the records carry it).
    server_lr: float = Field(default=1.0, gt=0)
    filters: FilterThresholds = FilterThresholds()
    adapt: AdaptSchedule = AdaptSchedule()
    #: The public validation set, a built-in split ("digits:size=500,seed=0"); None: the spec's
    #: dataset, 500 samples, seed 0 (or, with `validation_data`, the committed secret parts).
    validation: str | None = None

    @model_validator(mode="after")
    def _range(self) -> DefencePolicy:
        if self.max_trainers < self.min_trainers:
            raise ValueError(f"max_trainers ({self.max_trainers}) is below min_trainers ({self.min_trainers})")
        return self

    def check_names(self) -> None:
        """Every name the policy uses is known, with known parameters (ConfigError with a
        did-you-mean otherwise): what `market project create` checks besides the tolerance."""
        check_rule(self.rule)
        check_scorer(self.scorer)
        if self.validation is not None:
            check_validation(self.validation)

    def round_filters(self) -> dict[str, Any]:
        """The thresholds as a round record's `filters` field states them (every key)."""
        return {**self.filters.model_dump(), "validation_gate": self.gate, "outlier_min_updates": self.outlier_min_updates}


@dataclass(frozen=True)
class Tolerance:
    """What the defence tolerates in a round of `n` trainers, layer by layer."""

    n: int
    rule: str
    rule_tolerates: int
    gate: bool
    gate_tolerates: int
    outlier_filter_active: bool
    why: str

    @property
    def tolerates(self) -> int:
        return max(self.rule_tolerates, self.gate_tolerates)

    @property
    def fraction(self) -> float:
        return self.tolerates / self.n


def _rule_parts(rule: str) -> tuple[str, dict[str, str]]:
    try:
        name, raw = split_spec(rule, ConfigError)
    except ConfigError as exc:
        raise ConfigError(f"defence rule {rule!r}: {exc}") from None
    raw.pop("clip", None)  # clipping on top of a rule bounds norms; the breakdown is the rule's
    return name, raw


def _int(raw: Mapping[str, str], key: str, rule: str) -> int | None:
    if key not in raw:
        return None
    try:
        return int(raw[key])
    except ValueError:
        raise ConfigError(f"defence rule {rule!r}: {key} must be an integer, got {raw[key]!r}") from None


def _float(raw: Mapping[str, str], key: str, default: float, rule: str) -> float:
    try:
        return float(raw.get(key, default))
    except ValueError:
        raise ConfigError(f"defence rule {rule!r}: {key} must be a number, got {raw[key]!r}") from None


def rule_tolerance(rule: str, n: int) -> tuple[int, str]:
    """(attackers the rule tolerates among n, why) for a rule spec such as "trimmed_mean:beta=0.1"."""
    name, raw = _rule_parts(rule)
    half = max(0, (n - 1) // 2)
    if name in _NONE:
        return 0, f"{name} averages every update: one attacker moves it by its own weight"
    if name in _HALF:
        return half, f"{name} has breakdown floor((n - 1) / 2) = {half}"
    if name in _TRIMMED or name in _FOUNDATION:
        f = _int(raw, "f", rule)
        beta = _float(raw, "beta", 0.1 if name in _TRIMMED else 0.2, rule)
        trim = f if f is not None else math.floor(beta * n + 1e-9)
        trim = max(0, min(trim, half))
        how = f"f={f}" if f is not None else f"floor({beta:g} x {n})"
        return trim, f"{name} trims {how} = {trim} updates per side"
    if name in _KRUM:
        f = _int(raw, "f", rule)
        most = max(0, (n - 3) // 2)
        got = most if f is None else max(0, min(f, most))
        return got, f"{name} needs n > 2f + 2: f = {got} at n = {n}"
    if name in _CC:
        got = math.floor(0.1 * n + 1e-9)
        return got, f"{name}'s analysis bounds a fraction of at most 0.1: {got} at n = {n}"
    raise ConfigError(f"defence rule {rule!r}: no stated tolerance for {name!r}; use median, trimmed_mean, krum,"
                      " multi_krum, geomed, centered_clipping, foundation_fl, norm_clip or fedavg")


def tolerance(policy: DefencePolicy, n: int, *, validation_samples: int | None = None) -> Tolerance:
    """Layer by layer, what `policy` tolerates in a round of `n` trainers. `validation_samples`
    (per round; None: not known yet) below `MIN_GATE_SAMPLES` makes the gate count for nothing."""
    if n < 1:
        raise ConfigError(f"a round has at least one trainer, got n = {n}")
    rule_f, why = rule_tolerance(policy.rule, n)
    gate_ok = policy.gate and (validation_samples is None or validation_samples >= MIN_GATE_SAMPLES)
    gate_f = n - 1 if gate_ok else 0
    if policy.gate and not gate_ok:
        why += f"; the gate has {validation_samples} validation samples per round (< {MIN_GATE_SAMPLES}): it counts for nothing"
    elif gate_ok:
        why += f"; the validation gate keeps out what worsens validation utility for up to n - 1 = {gate_f}"
    else:
        why += "; the validation gate is off"
    return Tolerance(n, policy.rule, rule_f, policy.gate, gate_f, n >= policy.outlier_min_updates, why)


def check_defence(policy: DefencePolicy, *, validation_samples: int | None = None) -> dict[int, Tolerance]:
    """Every name the policy uses, and every round size, checked; raises ConfigError naming the
    unknown name, or the sizes at which the defence tolerates no attacker and how to fix it."""
    policy.check_names()
    table = {n: tolerance(policy, n, validation_samples=validation_samples)
             for n in range(policy.min_trainers, policy.max_trainers + 1)}
    bad = [n for n, t in table.items() if t.tolerates == 0 and n > 1]
    if bad:
        lo, hi = bad[0], bad[-1]
        sizes = f"{lo}" if lo == hi else f"{lo}-{hi}"
        raise ConfigError(
            f"the defence tolerates no attacker in rounds of {sizes} trainers ({table[lo].why}); turn the"
            " validation gate on ([validation.defence] gate = true, with >= "
            f"{MIN_GATE_SAMPLES} validation samples per round), use a rule that tolerates a minority at that size"
            " (median, geomed, trimmed_mean:f=1, krum), or raise min_trainers"
        )
    return table


def describe(policy: DefencePolicy, sizes: tuple[int, ...] = (3, 4, 5, 10, 30, 100), **kw: Any) -> list[str]:
    """One line per round size: what each layer tolerates (for docs and `market project create`)."""
    out = []
    for n in sizes:
        t = tolerance(policy, n, **kw)
        out.append(f"n={n}: rule {t.rule_tolerates} ({t.rule_tolerates / n:.0%}), gate {t.gate_tolerates},"
                   f" outlier filter {'on' if t.outlier_filter_active else 'off'}")
    return out

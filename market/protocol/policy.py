"""The vocabulary of a project's aggregation policy: what the owner fixes in the spec at creation and
the aggregator may not choose (issue 13 point 4).

The policy itself is `market.protocol.tolerance.DefencePolicy` (the spec's `validation.defence`):
the rule and the validation gate with what each tolerates, and beside them the records defined here,
`FilterThresholds` (every other filter and pay threshold) and `AdaptSchedule` (the server learning
rate's plateau schedule, which the aggregator runs as it is). The filter defaults are the
aggregator's (`aggregator.filters.FilterConfig`; a test in tests/aggregator/test_policy.py keeps them
equal), so a spec written before a field existed means that field's default.

The names a policy may use (rules with their parameters, scorers, built-in validation sets) are
registered here with `market._spec.Registry`, the same way the aggregator registers the code behind
them, so `market project create` refuses an unknown name or parameter with a did-you-mean without
importing the aggregator; the same test checks both registries agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from market._spec import Registry, closest, split_spec
from market.datasets import BUILTIN_DATASETS
from market.errors import ConfigError

__all__ = [
    "DEFAULT_SCORER",
    "DEFAULT_VALIDATION_SIZE",
    "RULE_NAMES",
    "SCORER_NAMES",
    "VALIDATION_SETS",
    "AdaptSchedule",
    "FilterThresholds",
    "check_rule",
    "check_scorer",
    "check_validation",
    "default_validation",
]

#: "auto": exact Shapley up to 8 accepted updates, GTG-Shapley above (`aggregator.round.config`).
DEFAULT_SCORER = "auto"
#: The size of the built-in validation split a policy without `validation` names (seed 0).
DEFAULT_VALIDATION_SIZE = 500


class FilterThresholds(BaseModel):
    """Every filter and pay threshold of a round but the two the defence names itself (`gate`,
    `outlier_min_updates`): the round record's `filters` field holds all of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outlier_sigmas: float = Field(default=3.0, gt=0)
    outlier_sigma_floor: float = Field(default=0.15, ge=0)
    zero_abs_norm: float = Field(default=1e-12, ge=0)
    zero_rel_norm: float = Field(default=1e-2, ge=0, lt=1)
    stale_cosine: float = Field(default=0.9999, gt=0, le=1)
    stale_norm_tolerance: float = Field(default=1e-3, ge=0)
    copy_cosine: float = Field(default=0.999, gt=0, le=1)
    copy_rel_distance: float = Field(default=1e-3, ge=0)
    gate_tolerance: float = Field(default=0.3, ge=0)
    gate_floor: float = Field(default=0.02, ge=0)
    gate_exact_max: int = Field(default=8, ge=1)
    gate_noise_z: float = Field(default=3.0, ge=0)
    pay_norm_bound: bool = True
    pay_data_share: float = Field(default=0.75, ge=0, lt=1)
    pay_claim_cap: bool = True


class AdaptSchedule(BaseModel):
    """Plateau adaptation: when validation accuracy has not improved by `min_delta` for
    `patience` rounds, the server learning rate is multiplied by `lr_factor` (not below
    `min_server_lr`) and trainers are asked for `epochs_step` more local epochs (up to
    `max_epochs`). Published in every record, so a replay applies the same policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    patience: int = Field(default=2, ge=1)
    min_delta: float = Field(default=0.005, ge=0)
    lr_factor: float = Field(default=0.5, gt=0, le=1)
    min_server_lr: float = Field(default=0.05, gt=0)
    epochs_step: int = Field(default=1, ge=0)
    max_epochs: int = Field(default=5, ge=1)
    #: Local epochs assumed when the round's hyper-parameters name none (the trainers' default).
    base_epochs: int = Field(default=1, ge=1)


# --- the names a policy may use; parameters typed as the aggregator's dataclasses type them -----


@dataclass(frozen=True)
class _NoParams:
    pass


@dataclass(frozen=True)
class _FedAvg:
    cap: float | None = None
    cap_factor: float | None = 3.0


@dataclass(frozen=True)
class _NormClip:
    bound: float | str = "median"


@dataclass(frozen=True)
class _Trimmed:
    beta: float | None = None
    f: int | None = None


@dataclass(frozen=True)
class _Foundation:
    m: int | None = None
    inner: str = "trimmed_mean"
    beta: float | None = None
    f: int | None = None


@dataclass(frozen=True)
class _Krum:
    f: int | None = None


@dataclass(frozen=True)
class _MultiKrum:
    m: int | None = None
    f: int | None = None


@dataclass(frozen=True)
class _GeoMed:
    eps: float = 1e-5
    max_iter: int = 64
    nu: float | None = None
    init: str = "medoid"


@dataclass(frozen=True)
class _Centered:
    tau: float | None = None
    iters: int = 3
    reference: str = "zero"


@dataclass(frozen=True)
class _ExactShapley:
    max_players: int = 16


@dataclass(frozen=True)
class _GTGShapley:
    eps: float = 0.005
    round_eps: float | None = None
    tolerance: float = 0.1
    min_sweeps: int = 2
    max_sweeps: int = 50
    max_evaluations: int | None = None


@dataclass(frozen=True)
class _Split:
    size: int | None = None
    seed: int = 0


_Entries = tuple[tuple[str, type[Any], tuple[str, ...]], ...]

RULE_NAMES: Registry[Any] = Registry("aggregation rule", error=ConfigError)
_RULES: _Entries = (
    ("fedavg", _FedAvg, ("mean", "avg", "average")),
    ("norm_clip", _NormClip, ("clipping",)),
    ("median", _NoParams, ()),
    ("trimmed_mean", _Trimmed, ("trmean",)),
    ("foundation_fl", _Foundation, ("foundationfl",)),
    ("krum", _Krum, ()),
    ("multi_krum", _MultiKrum, ("multikrum", "mkrum")),
    ("geomed", _GeoMed, ("geometric_median", "rfa")),
    ("centered_clipping", _Centered, ("cc",)),
)
SCORER_NAMES: Registry[Any] = Registry("scorer", error=ConfigError)
_SCORERS: _Entries = (
    ("exact_shapley", _ExactShapley, ("exact", "shapley")),
    ("gtg_shapley", _GTGShapley, ("gtg",)),
    ("leave_one_out", _NoParams, ("loo",)),
    ("equal", _NoParams, ()),
)
for _registry, _entries in ((RULE_NAMES, _RULES), (SCORER_NAMES, _SCORERS)):
    for _name, _cls, _aliases in _entries:
        _registry.add(_name, _cls, _aliases)

VALIDATION_SETS: Registry[Any] = Registry("built-in validation set", error=ConfigError)
for _name in BUILTIN_DATASETS:
    VALIDATION_SETS.add(_name, _Split)

#: `clip=<bound>` goes on any rule (norm clipping as a pre-step).
_RULE_EXTRAS: dict[str, Any] = {"clip": float | str}


def check_rule(text: str) -> str:
    """`text` if it names a known rule with known parameters; else ConfigError with a did-you-mean."""
    RULE_NAMES.parse(text, extras=_RULE_EXTRAS)
    return text


def check_scorer(text: str) -> str:
    if text.strip().lower() != DEFAULT_SCORER:
        try:
            SCORER_NAMES.parse(text)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (or {DEFAULT_SCORER})") from None
    return text


def check_validation(text: str) -> str:
    """A built-in split such as "digits:size=500,seed=0": the one kind of public validation set an
    auditor can rebuild byte for byte, so the one a policy may name."""
    name = split_spec(text, ConfigError)[0]
    if name not in VALIDATION_SETS:
        raise ConfigError(f"validation {text!r} is not a built-in validation set{closest(name, BUILTIN_DATASETS)}; name"
                          f" one of {', '.join(BUILTIN_DATASETS)} (name:size=N,seed=S), or commit secret parts with"
                          " [validation.data]")
    VALIDATION_SETS.parse(text)
    return text


def default_validation(dataset: str | None) -> str | None:
    """The set a policy without `validation` names for a spec's `dataset` (None: not built in)."""
    return f"{dataset}:size={DEFAULT_VALIDATION_SIZE},seed=0" if dataset in BUILTIN_DATASETS else None

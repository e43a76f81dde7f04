"""Scripted trainer behaviours for simulations: honest, poisoning, free-riding, lying.

A simulated trainer runs, each round:

    data = behaviour.transform_dataset(own_data)          # label_flip poisons its data here
    honest = train_local(...) if behaviour.needs_training else None
    delta, claimed_samples = behaviour.produce(honest, context)

`produce` returns the update the trainer submits (float32, keyed and ordered as the global
state) and the sample count it claims. `BehaviourContext` carries what a behaviour may see: the
global state, the previous round's global state, the round, a seed, this trainer's true sample
count and last submission, and for colluders (`alie`, `ipm`) the honest deltas of the colluding
group with the round's number of trainers n and of malicious trainers m.

| name         | update                                                   | claimed samples |
|--------------|----------------------------------------------------------|-----------------|
| `honest`     | the trained delta                                        | true            |
| `label_flip` | trained on labels y -> C-1-y                             | true            |
| `sign_flip`  | -k * honest                                              | true            |
| `gaussian_noise` | N(0, sigma^2) per coordinate (no training)          | true            |
| `scaling`    | factor * honest                                          | true            |
| `alie`       | mean - z * std of the group's honest deltas (Baruch et al., 2019) | true   |
| `ipm`        | -epsilon * mean of the group's honest deltas (Xie et al., 2019)   | true   |
| `free_rider` | zero / stale (its previous delta) / global (zero, as if it sent the global weights back) / delta (last global step), + optional noise | true |
| `copycat`    | another trainer's revealed update, from `source`         | true            |
| `sample_liar`| honest                                                   | factor * true   |

Behaviours are made from strings such as `"scaling:factor=10"` or
`"free_rider:mode=global,noise=1e-6"` by `parse_behaviour`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from market.models import stack_updates, state_delta, unflatten
from trainer.data import Dataset
from trainer.errors import BehaviourError
from trainer.training import TrainResult

__all__ = [
    "ALIE",
    "BEHAVIOURS",
    "IPM",
    "Behaviour",
    "BehaviourContext",
    "Copycat",
    "FreeRider",
    "GaussianNoise",
    "Honest",
    "LabelFlip",
    "SampleLiar",
    "Scaling",
    "SignFlip",
    "Update",
    "alie_z",
    "flip_labels",
    "make_behaviour",
    "parse_behaviour",
]

Update = dict[str, torch.Tensor]


@dataclass(frozen=True)
class BehaviourContext:
    """What a behaviour may look at when it produces its submission."""

    global_state: Mapping[str, torch.Tensor]
    round: int = 0
    #: Seed for this trainer's randomness this round (the simulation derives one per trainer).
    seed: int = 0
    previous_global_state: Mapping[str, torch.Tensor] | None = None
    #: Honest deltas of the colluding group (this trainer's own included, if it trained).
    honest_deltas: Sequence[Mapping[str, torch.Tensor]] = ()
    #: n: trainers submitting this round; m: malicious among them (ALIE's z depends on both).
    num_trainers: int | None = None
    num_malicious: int | None = None
    #: This trainer's true number of samples (what it claims unless it lies).
    num_samples: int | None = None
    #: What this trainer submitted last round, if the simulation tracks it.
    previous_delta: Mapping[str, torch.Tensor] | None = None
    trainer_id: str | None = None


def _noise(like: Mapping[str, torch.Tensor], sigma: float, seed: int, rnd: int) -> Update:
    """N(0, sigma^2) tensors shaped as `like`, deterministic in (seed, round)."""
    state = np.random.SeedSequence([seed & (2**64 - 1), rnd & (2**64 - 1)]).generate_state(2)
    g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return {k: torch.randn(v.shape, generator=g, dtype=torch.float32) * sigma
            for k, v in like.items()}


def _zeros(like: Mapping[str, torch.Tensor]) -> Update:
    return {k: torch.zeros(v.shape, dtype=torch.float32) for k, v in like.items()}


def _ordered(delta: Mapping[str, torch.Tensor], like: Mapping[str, torch.Tensor]) -> Update:
    return {k: delta[k] for k in like}


def flip_labels(ds: Dataset) -> Dataset:
    """The label-flipping poison: y -> C-1-y."""
    return ds.with_labels(ds.num_classes - 1 - ds.y, name=f"{ds.name}:flipped")


def alie_z(n: int, m: int) -> float:
    """ALIE's z_max for n workers of which m are malicious (Baruch et al., 2019, Alg. 3).

    s = floor(n/2 + 1) - m supporters are needed; z = Phi^-1((n - s) / n).
    """
    if not (n >= 2 and 1 <= m < n):
        raise BehaviourError(f"alie needs 2 <= n and 1 <= m < n trainers, got n={n}, m={m}")
    s = math.floor(n / 2 + 1) - m
    if s <= 0:
        raise BehaviourError(f"with m={m} of n={n} malicious the attackers are a majority and "
                             "z is unbounded; pass z= explicitly")
    return NormalDist().inv_cdf((n - s) / n)


class Behaviour(ABC):
    """One scripted behaviour. Subclasses are dataclasses whose fields are their parameters."""

    name: ClassVar[str]

    @property
    def needs_training(self) -> bool:
        """Whether `produce` uses an honest training result (else pass None and save the work)."""
        return True

    def transform_dataset(self, ds: Dataset) -> Dataset:
        """Change the local data before training (identity unless the behaviour poisons data)."""
        return ds

    @abstractmethod
    def produce(self, honest: TrainResult | None,
                context: BehaviourContext) -> tuple[Update, int]:
        """The update to submit and the number of samples to claim."""

    def _honest(self, honest: TrainResult | None) -> TrainResult:
        if honest is None:
            raise BehaviourError(f"behaviour {self.name!r} needs the honest training result; "
                                 "train before calling produce")
        return honest

    def _claim(self, honest: TrainResult | None, context: BehaviourContext) -> int:
        if honest is not None:
            return honest.num_samples
        if context.num_samples is None:
            raise BehaviourError(f"behaviour {self.name!r} did not train, so it needs "
                                 "context.num_samples to claim a sample count")
        return context.num_samples

    def _group(self, honest: TrainResult | None,
               context: BehaviourContext) -> list[Mapping[str, torch.Tensor]]:
        group = list(context.honest_deltas) or ([honest.delta] if honest is not None else [])
        if not group:
            raise BehaviourError(f"behaviour {self.name!r} needs the colluding group's honest "
                                 "deltas (context.honest_deltas) or its own training result")
        return group

    def describe(self) -> str:
        """The string `parse_behaviour` turns back into this behaviour."""
        params = [f"{f.name}={getattr(self, f.name)}" for f in _fields(type(self))
                  if f.init and f.metadata.get("parse", True)]
        return self.name + (":" + ",".join(params) if params else "")


@dataclass
class Honest(Behaviour):
    """Submits what it trained, claims its true sample count."""

    name: ClassVar[str] = "honest"

    def produce(self, honest: TrainResult | None,
                context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        return _ordered(h.delta, context.global_state), h.num_samples


@dataclass
class LabelFlip(Behaviour):
    """Trains honestly on poisoned labels y -> C-1-y (a data transform before training)."""

    name: ClassVar[str] = "label_flip"

    def transform_dataset(self, ds: Dataset) -> Dataset:
        return flip_labels(ds)

    def produce(self, honest: TrainResult | None,
                context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        return _ordered(h.delta, context.global_state), h.num_samples


@dataclass
class SignFlip(Behaviour):
    """Submits -k times its honest delta."""

    k: float = 1.0
    name: ClassVar[str] = "sign_flip"

    def produce(self, honest: TrainResult | None,
                context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        return {key: h.delta[key] * -self.k for key in context.global_state}, h.num_samples


@dataclass
class GaussianNoise(Behaviour):
    """Submits N(0, sigma^2) noise instead of training (deterministic in seed and round)."""

    sigma: float = 1.0
    name: ClassVar[str] = "gaussian_noise"

    @property
    def needs_training(self) -> bool:
        return False

    def produce(self, honest: TrainResult | None,
                context: BehaviourContext) -> tuple[Update, int]:
        noise = _noise(context.global_state, self.sigma, context.seed, context.round)
        return noise, self._claim(honest, context)


@dataclass
class Scaling(Behaviour):
    """Boosts its honest delta by `factor` (model-replacement style)."""

    factor: float = 10.0
    name: ClassVar[str] = "scaling"

    def produce(self, honest: TrainResult | None,
                context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        return {key: h.delta[key] * self.factor for key in context.global_state}, h.num_samples


@dataclass
class ALIE(Behaviour):
    """"A little is enough": per coordinate mean - z * std of the colluding group's honest deltas.

    z defaults to `alie_z(n, m)` from the paper, with n and m from the parameters or else from
    the context. The std is the population one (`ddof=0`), so a group of one gives its mean.
    """

    z: float | None = None
    n: int | None = None
    m: int | None = None
    ddof: int = 0
    name: ClassVar[str] = "alie"

    def z_value(self, context: BehaviourContext) -> float:
        if self.z is not None:
            return self.z
        n = self.n if self.n is not None else context.num_trainers
        m = self.m if self.m is not None else context.num_malicious
        if n is None or m is None:
            raise BehaviourError("alie needs n (trainers) and m (malicious): pass them as "
                                 "parameters, set them in the context, or give z")
        return alie_z(n, m)

    def produce(self, honest: TrainResult | None,
                context: BehaviourContext) -> tuple[Update, int]:
        keys = list(context.global_state)
        stack = stack_updates(self._group(honest, context), keys)
        if self.ddof >= stack.shape[0]:
            raise BehaviourError(f"alie with ddof={self.ddof} needs more than {self.ddof} "
                                 f"honest deltas, got {stack.shape[0]}")
        mean = stack.mean(dim=0)
        std = stack.std(dim=0, correction=self.ddof)
        vec = mean - self.z_value(context) * std
        return unflatten(vec, context.global_state), self._claim(honest, context)


@dataclass
class IPM(Behaviour):
    """Inner-product manipulation: -epsilon times the mean of the group's honest deltas."""

    epsilon: float = 0.1
    name: ClassVar[str] = "ipm"

    def produce(self, honest: TrainResult | None,
                context: BehaviourContext) -> tuple[Update, int]:
        stack = stack_updates(self._group(honest, context), list(context.global_state))
        vec = stack.mean(dim=0) * -self.epsilon
        return unflatten(vec, context.global_state), self._claim(honest, context)


@dataclass
class FreeRider(Behaviour):
    """Claims a reward without (further) training.

    - `zero`: an all-zero delta.
    - `global`: sends the global weights back, i.e. a zero delta; with `noise` > 0 it adds
      N(0, noise^2) to dodge exact-zero checks (noise applies to every mode).
    - `stale`: resends its previous submission (`context.previous_delta`, else the last one this
      object produced, before noise); in its first round it submits the honest result if it has one (it trains
      once, then rides), otherwise zero.
    - `delta`: resends the last global step, global - previous global (Fraboni et al., 2021),
      zero in the first round.
    """

    mode: Literal["zero", "stale", "global", "delta"] = "zero"
    noise: float = 0.0
    name: ClassVar[str] = "free_rider"
    _last: Update | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in ("zero", "stale", "global", "delta"):
            raise BehaviourError(f"free_rider mode {self.mode!r} is unknown; use zero, stale, "
                                 "global or delta")
        if not self.noise >= 0:
            raise BehaviourError(f"free_rider noise must be >= 0, got {self.noise}")

    @property
    def needs_training(self) -> bool:
        return self.mode == "stale" and self._last is None

    def produce(self, honest: TrainResult | None,
                context: BehaviourContext) -> tuple[Update, int]:
        like = context.global_state
        if self.mode == "stale":
            previous = context.previous_delta if context.previous_delta is not None else self._last
            if previous is not None:
                delta = {k: previous[k].detach().clone() for k in like}
            elif honest is not None:
                delta = _ordered(honest.delta, like)
            else:
                delta = _zeros(like)
        elif self.mode == "delta" and context.previous_global_state is not None:
            delta = state_delta(like, context.previous_global_state)
        else:
            delta = _zeros(like)
        self._last = {k: v.detach().clone() for k, v in delta.items()}
        if self.noise > 0:
            noise = _noise(like, self.noise, context.seed, context.round)
            delta = {k: delta[k] + noise[k] for k in like}
        return delta, self._claim(honest, context)


@dataclass
class Copycat(Behaviour):
    """Submits another trainer's revealed update, obtained from `source(context)`.

    Commit-reveal defeats it: a trainer must commit to the hash of its update before the commit
    deadline, and updates are only revealed after that deadline. When the copycat has to
    commit, `source` has nothing to give (returns None), so it falls back (`fallback="zero"`
    submits a zero delta, `"raise"` raises `BehaviourError`); a copy taken after the reveals
    cannot match a commitment made before them, and a late commit is refused.
    """

    source: Callable[[BehaviourContext], Mapping[str, torch.Tensor] | None] | None = field(
        default=None, metadata={"parse": False})
    noise: float = 0.0
    fallback: Literal["zero", "raise"] = "zero"
    name: ClassVar[str] = "copycat"

    @property
    def needs_training(self) -> bool:
        return False

    def produce(self, honest: TrainResult | None,
                context: BehaviourContext) -> tuple[Update, int]:
        like = context.global_state
        copied = self.source(context) if self.source is not None else None
        if copied is None:
            if self.fallback == "raise":
                raise BehaviourError("copycat has no revealed update to copy yet (reveals come "
                                     "after the commit deadline); nothing to submit")
            delta = _zeros(like)
        else:
            delta = {k: copied[k].detach().clone().to(torch.float32) for k in like}
        if self.noise > 0:
            noise = _noise(like, self.noise, context.seed, context.round)
            delta = {k: delta[k] + noise[k] for k in like}
        return delta, self._claim(honest, context)


@dataclass
class SampleLiar(Behaviour):
    """Submits its honest delta but claims `factor` times its samples (to weigh more in FedAvg)."""

    factor: float = 10.0
    name: ClassVar[str] = "sample_liar"

    def produce(self, honest: TrainResult | None,
                context: BehaviourContext) -> tuple[Update, int]:
        h = self._honest(honest)
        return _ordered(h.delta, context.global_state), round(self.factor * h.num_samples)


BEHAVIOURS: dict[str, type[Behaviour]] = {
    cls.name: cls
    for cls in (Honest, LabelFlip, SignFlip, GaussianNoise, Scaling, ALIE, IPM, FreeRider,
                Copycat, SampleLiar)
}


def _fields(cls: type[Behaviour]) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cls)  # type: ignore[arg-type]


def _convert(text: str, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(text, arg, where)
            except BehaviourError as e:
                errors.append(str(e))
        raise BehaviourError("; ".join(errors))
    if origin is Literal:
        if text not in args:
            raise BehaviourError(f"{where} must be one of {', '.join(map(str, args))}, "
                                 f"got {text!r}")
        return text
    if annotation is bool:
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise BehaviourError(f"{where} must be true or false, got {text!r}")
    if annotation in (int, float):
        try:
            value = annotation(text)
        except ValueError:
            raise BehaviourError(f"{where} must be {'an integer' if annotation is int else 'a number'}"
                                 f", got {text!r}") from None
        if annotation is float and not math.isfinite(value):
            raise BehaviourError(f"{where} must be finite, got {text!r}")
        return value
    if annotation is str:
        return text
    raise BehaviourError(f"{where} cannot be given in a behaviour string; set it in code")


def make_behaviour(name: str, **params: Any) -> Behaviour:
    """Construct a behaviour by registry name with keyword parameters."""
    try:
        cls = BEHAVIOURS[name]
    except KeyError:
        raise BehaviourError(f"unknown behaviour {name!r}; use one of "
                             f"{', '.join(BEHAVIOURS)}") from None
    allowed = [f.name for f in _fields(cls) if f.init]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise BehaviourError(f"behaviour {name!r} has no parameter(s) {unknown}; it takes "
                             f"{', '.join(allowed) or 'none'}")
    return cls(**params)


def parse_behaviour(text: str) -> Behaviour:
    """`"name"` or `"name:key=value,key=value"` -> a behaviour, values typed by its fields."""
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if name not in BEHAVIOURS:
        raise BehaviourError(f"unknown behaviour {name!r} in {text!r}; use one of "
                             f"{', '.join(BEHAVIOURS)}")
    cls = BEHAVIOURS[name]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in _fields(cls) if f.init}
    params: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise BehaviourError(f"parameter {item!r} in {text!r} is not key=value; "
                                 "write e.g. 'scaling:factor=10'")
        if key not in fields or not fields[key].metadata.get("parse", True):
            settable = [k for k, f in fields.items() if f.metadata.get("parse", True)]
            raise BehaviourError(f"behaviour {name!r} has no parameter {key!r}; it takes "
                                 f"{', '.join(settable) or 'none'}")
        if key in params:
            raise BehaviourError(f"parameter {key!r} is given twice in {text!r}")
        params[key] = _convert(value.strip(), hints[key], f"{name}.{key}")
    return make_behaviour(name, **params)

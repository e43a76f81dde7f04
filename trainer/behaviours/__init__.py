"""Scripted trainer behaviours for simulations: honest, poisoning, free-riding, colluding, lying.

Each behaviour is a dataclass in a module of its own kind, with a registry `name`, its parameters
as fields, and `needs`: the inputs it reads (see `base`; `trainer.context.fill_context` fills
exactly those). Behaviours are made from spec strings such as `"scaling:factor=10"` or
`"free_rider:mode=global,noise=1e-6"` by `parse_behaviour` (the `market._spec` language).

| name         | update                                                   | claimed samples | needs |
|--------------|----------------------------------------------------------|-----------------|-------|
| `honest`     | the trained delta                                        | true            | honest_update |
| `label_flip` | trained on labels y -> C-1-y                             | true            | honest_update |
| `sign_flip`  | -k * honest                                              | true            | honest_update |
| `gaussian_noise` | N(0, sigma^2) per coordinate (no training)           | true            | - |
| `scaling`    | factor * honest                                          | true            | honest_update |
| `alie`       | mean - z * std of the group's honest deltas (Baruch et al., 2019) | true   | honest_update, colluders |
| `ipm`        | -epsilon * mean of the group's honest deltas (Xie et al., 2019)   | true   | honest_update, colluders |
| `free_rider` | zero / stale (its previous delta) / global (zero, as if it sent the global weights back) / delta (last global step), + optional noise | true | by mode |
| `copycat`    | another trainer's revealed update                        | true            | revealed_updates |
| `sample_liar`| honest                                                   | factor * true   | honest_update |
| `min_max`    | group mean + gamma * p, within the group's max pairwise distance (Shejwalkar & Houmansadr, 2021) | true | honest_update, colluders |
| `min_sum`    | the same within the group's largest summed squared distance       | true   | honest_update, colluders |
| `gate_evader`| -epsilon * group mean + its own noise: damage sized to the validation gate's tolerance | true | honest_update, colluders |
| `stretch`    | factor * honest along its own direction (aims at the rewards)     | true   | honest_update |
| `backdoor`   | trained on its data + trigger-stamped copies labelled `target`, x boost | true | honest_update |
| `sybil`      | identity `index` of `k`: honest on its slice of the owner's data  | true (its slice) | honest_update |

Adding one: write its module (a `Behaviour` dataclass declaring `needs`) and add it to `_ALL`.
"""

from __future__ import annotations

from typing import Any

from market._spec import Registry
from trainer.behaviours.adaptive import GateEvader, MinMax, MinSum
from trainer.behaviours.backdoor import Backdoor, apply_trigger, backdoor_success
from trainer.behaviours.base import NEEDS, Behaviour, BehaviourContext, Update
from trainer.behaviours.collusion import ALIE, IPM, alie_z
from trainer.behaviours.free_riding import Copycat, FreeRider
from trainer.behaviours.honest import Honest
from trainer.behaviours.lying import SampleLiar
from trainer.behaviours.poisoning import GaussianNoise, LabelFlip, Scaling, SignFlip, flip_labels
from trainer.behaviours.reward_gaming import Stretch, Sybil
from trainer.errors import BehaviourError

__all__ = [
    "ALIE",
    "BEHAVIOURS",
    "IPM",
    "NEEDS",
    "REGISTRY",
    "Backdoor",
    "Behaviour",
    "BehaviourContext",
    "Copycat",
    "FreeRider",
    "GateEvader",
    "GaussianNoise",
    "Honest",
    "LabelFlip",
    "MinMax",
    "MinSum",
    "SampleLiar",
    "Scaling",
    "SignFlip",
    "Stretch",
    "Sybil",
    "Update",
    "alie_z",
    "apply_trigger",
    "backdoor_success",
    "flip_labels",
    "make_behaviour",
    "parse_behaviour",
]

_ALL: tuple[type[Behaviour], ...] = (
    Honest, LabelFlip, SignFlip, GaussianNoise, Scaling, ALIE, IPM, FreeRider, Copycat, SampleLiar,
    MinMax, MinSum, GateEvader, Stretch, Backdoor, Sybil,
)

REGISTRY: Registry[Behaviour] = Registry("behaviour", error=BehaviourError)
for _cls in _ALL:
    REGISTRY.add(_cls.name, _cls)

#: name -> class, in registration order.
BEHAVIOURS: dict[str, type[Behaviour]] = {cls.name: cls for cls in _ALL}


def make_behaviour(name: str, **params: Any) -> Behaviour:
    """Construct a behaviour by registry name with keyword parameters."""
    return REGISTRY.create(name, **params)


def parse_behaviour(text: str) -> Behaviour:
    """`"name"` or `"name:key=value,key=value"` -> a behaviour, values typed by its fields."""
    return REGISTRY.build(text)

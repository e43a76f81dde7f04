"""The aggregator's configuration: the `[aggregator]` table of the TOML config file (the same
file whose `[market]` table says where the node, deployment and IPFS API are), flags on top.

A project whose spec fixes the aggregation policy (`validation.defence`: every project `market
project create` makes) takes `rule`, `scorer`, `server_lr`, `validation`, `[aggregator.filters]`
and `[aggregator.adapt]` from its spec: leave them out; one that is set and differs stops the
service with a line naming it (`aggregator.policy`). They apply to specs without a policy.

```toml
[aggregator]
rule = "fedavg"                     # any aggregator.rules spec (default fedavg); clip=median for norm clipping
scorer = "gtg"                      # any aggregator.scoring spec
server_lr = 1.0                     # new model = base + server_lr * aggregate (round 0's value)
validation = "digits:size=500,seed=0"   # or a path to an .npz with x and y
validation_key = "project.valkey.json"  # the owner's key file, when the spec commits to secret parts
poll = 2.0                          # seconds between chain polls
fetch_workers = 4                   # parallel update downloads
fetch_timeout = 30.0                # seconds per download
threads = 1                         # torch/BLAS threads during a round (fixed: results are bytes-exact)
allow_user_models = false           # build `package.module:factory` architectures (runs their code)
compute = "local"                   # "ray": coalition utilities on Ray workers (docs/ray.md; pip install .[ray])
ray_address = "ray://head:10001"    # with compute = "ray"; omit for a private local Ray instance

[aggregator.filters]                # aggregator.filters settings (see that module)
[aggregator.adapt]                  # plateau adaptation of the server learning rate and local epochs
patience = 2
min_delta = 0.005
lr_factor = 0.5
min_server_lr = 0.05
epochs_step = 1
max_epochs = 5
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aggregator.errors import SettingsError
from aggregator.round.adapt import AdaptSchedule
from market._text import first_pydantic_error

__all__ = ["AdaptSchedule", "AggregatorSettings", "SettingsError", "load_aggregator_settings"]


class AggregatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: FedAvg over what the validation gate kept (docs/robustness.md: the trimmed mean costs ~14
    #: points at Dirichlet 0.3 without any attacker); robust rules stay available as a layer.
    rule: str = "fedavg"
    scorer: str = "auto"
    server_lr: float = Field(default=1.0, gt=0)
    #: None: the spec's dataset (mnist5k or digits) with a 500-sample split, seed 0.
    validation: str | None = None
    #: The key file of the spec's secret per-round validation parts (`market.protocol.valsplit`),
    #: which the owner wrote at creation; needed (and used instead of `validation`) when the spec
    #: has `validation_data`.
    validation_key: str | None = None
    poll: float = Field(default=2.0, gt=0)
    fetch_workers: int = Field(default=4, ge=1, le=64)
    fetch_timeout: float = Field(default=30.0, gt=0)
    #: Attempts for an update no provider serves yet (ContentNotFound) before rejecting it.
    fetch_attempts: int = Field(default=3, ge=1)
    threads: int = Field(default=1, ge=1, le=256)
    allow_user_models: bool = False
    compute: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    filters: dict[str, Any] = Field(default_factory=dict)
    adapt: AdaptSchedule = AdaptSchedule()
    #: Longest pause between retries while IPFS or the RPC node is down (seconds).
    max_backoff: float = Field(default=30.0, gt=0)

    def merged(self, **overrides: Any) -> AggregatorSettings:
        """These settings with the flags that were given on top; what was set (in the table or by
        a flag) stays told apart from the defaults (`model_fields_set`)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        try:
            return AggregatorSettings.model_validate(self.model_dump(exclude_unset=True) | clean)
        except ValidationError as exc:
            raise _error(exc, "flags") from None


def _error(exc: ValidationError, where: str) -> SettingsError:
    return SettingsError(f"{where}: {first_pydantic_error(exc, 'aggregator')}; fix the [aggregator] table or the flag")


def load_aggregator_settings(table: dict[str, Any] | None, where: str | Path = "config") -> AggregatorSettings:
    """Settings from a parsed `[aggregator]` table (None: defaults)."""
    try:
        return AggregatorSettings.model_validate(table or {})
    except ValidationError as exc:
        raise _error(exc, str(where)) from None

"""The model spec record, kept free of torch so that reading and writing project documents (and
starting the CLIs) does not import it; `market.models` builds models from it."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PATH_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


class ModelSpec(BaseModel):
    """What model a round trains: published by the aggregator, rebuilt by every trainer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: A registered name (`mnist_cnn`) or a `package.module:factory` path.
    architecture: str
    #: Keyword arguments for the factory (JSON values only, so the spec can travel on chain/IPFS).
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    #: Shape of one sample, without the batch dimension: `(1, 28, 28)`, `(64,)`.
    input_shape: tuple[int, ...]
    num_classes: int = Field(ge=2)
    #: CID of the initial global weights (safetensors); None: `init_model(spec, seed)` weights.
    initial_weights_cid: str | None = None
    #: Name of the task's dataset (`mnist5k`, `digits`, or free text for private data).
    dataset: str | None = None

    @field_validator("architecture")
    @classmethod
    def _architecture_form(cls, v: str) -> str:
        if not (_NAME_RE.match(v) or _PATH_RE.match(v)):
            raise ValueError(
                f"architecture {v!r} is neither a model name (lower_snake_case) nor a "
                "'package.module:factory' path; use one of those forms"
            )
        return v

    @field_validator("input_shape")
    @classmethod
    def _positive_shape(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(d <= 0 for d in v):
            raise ValueError(f"input_shape {v} must be a non-empty tuple of positive sizes")
        return v

    @field_validator("arch_kwargs")
    @classmethod
    def _json_kwargs(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"arch_kwargs must hold JSON values only ({e})") from e
        return v

    @property
    def is_import_path(self) -> bool:
        """True when `architecture` names user code (`package.module:factory`)."""
        return ":" in self.architecture


# ---------------------------------------------------------------------------------------------
# Built-in architectures

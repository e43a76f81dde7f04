"""The project file an owner writes (TOML) and its translation to contract parameters.

```toml
[project]
rounds = 5
reward_per_round = "1 ether"     # or an integer of wei / token base units
token = "ETH"                    # or an ERC-20 address
stake = "0.1 ether"              # optional, per trainer
dispute_bond = "0.05 ether"      # optional
commit_window = 20               # blocks
reveal_window = 20
challenge_window = 10
aggregator = "dev:1"             # an address, or dev:N for anvil's dev account N (local chains only)
arbiter = "dev:2"

[model]                          # the model spec, published on IPFS; its CID goes on chain
architecture = "mnist_cnn"       # a registered name or package.module:factory
input_shape = [1, 28, 28]
num_classes = 10
dataset = "mnist5k"
seed = 0                         # initial weights drawn from this seed unless initial_weights_cid is given

[validation]                     # published with the spec; the aggregator enforces it
max_update_bytes = 50_000_000
max_norm = 100.0

[hyperparams]                    # round 0's training defaults (later rounds: from round records)
epochs = 1
lr = 0.05
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from market.chain import ETH, ProjectParams, checksum
from market.chain.accounts import dev_account
from market.cli.config import parse_amount, read_toml
from market.errors import ConfigError
from market.protocol.documents import ProjectSpec, ValidationPolicy


def resolve_address(value: str, what: str) -> str:
    """An address, or `dev:N` for anvil's dev account N."""
    if isinstance(value, str) and value.startswith("dev:"):
        try:
            return str(dev_account(int(value[4:])).address)
        except ValueError:
            raise ConfigError(f"{what}: {value!r} is not dev:N with N a number") from None
    return checksum(value, what)


class ProjectSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(gt=0, le=2**32 - 1)
    reward_per_round: int | str
    token: str = "ETH"
    stake: int | str = 0
    dispute_bond: int | str = 0
    commit_window: int = Field(gt=0, le=2**32 - 1)
    reveal_window: int = Field(gt=0, le=2**32 - 1)
    challenge_window: int = Field(gt=0, le=2**32 - 1)
    aggregator: str
    arbiter: str

    @field_validator("challenge_window")
    @classmethod
    def _fits(cls, v: int, info: Any) -> int:
        data = info.data
        if "commit_window" in data and "reveal_window" in data and v > data["commit_window"] + data["reveal_window"]:
            raise ValueError("must be <= commit_window + reveal_window (a round cannot close before the last one settles)")
        return v


class ProjectFile(BaseModel):
    """A parsed, validated project file."""

    model_config = ConfigDict(extra="forbid")

    project: ProjectSection
    model: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)
    hyperparams: dict[str, Any] = Field(default_factory=dict)
    spec_cid: str | None = None

    def spec(self, store: Any) -> ProjectSpec:
        """The project spec; initial weights drawn from `[model].seed` and uploaded when the file
        names no `initial_weights_cid`. Weights files of initial models carry project id 0."""
        from market.models import ModelSpec, init_model
        from market.protocol.codec import ModelHeader, encode_model

        table = dict(self.model)
        seed = int(table.pop("seed", 0))
        try:
            model = ModelSpec.model_validate(table)
            policy = ValidationPolicy.model_validate(self.validation)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"[model]/[validation]: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        if model.initial_weights_cid is None:
            net = init_model(model, seed)
            blob = encode_model(net.state_dict(), ModelHeader(project_id=0, round=0, architecture=model.architecture))
            model = model.model_copy(update={"initial_weights_cid": store.add(blob)})
        return ProjectSpec(model=model, validation=policy, hyperparams=self.hyperparams)

    @classmethod
    def load(cls, path: Path) -> ProjectFile:
        data = read_toml(path)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{path}: {where}: {first['msg']}") from None

    def params(self, spec_cid: str, decimals: int = 18) -> ProjectParams:
        p = self.project
        token = ETH if p.token.upper() == "ETH" else checksum(p.token, "token")
        return ProjectParams(
            aggregator=resolve_address(p.aggregator, "aggregator"),
            arbiter=resolve_address(p.arbiter, "arbiter"),
            num_rounds=p.rounds,
            reward_per_round=parse_amount(p.reward_per_round, "reward_per_round", decimals),
            commit_window=p.commit_window,
            reveal_window=p.reveal_window,
            challenge_window=p.challenge_window,
            spec_cid=spec_cid,
            token=token,
            stake=parse_amount(p.stake, "stake", decimals),
            dispute_bond=parse_amount(p.dispute_bond, "dispute_bond", decimals),
        )

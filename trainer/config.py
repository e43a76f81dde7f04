"""The trainer's configuration: the `[trainer]` table of the one config file of all three CLIs
(`market.toml`, or `--config FILE`, or `$MARKET_CONFIG`; read by `market.cli.config`), on top of
its `[market]` table; flags on top of both.

```toml
[market]                                  # shared by every tool (see market.cli.config)
anvil_port = 8545                         # the trainer's rpc follows it ...
ipfs_api_port = 5001                      # ... and its ipfs this one
state = ".market"                         # deployment.json, keystore/ and the trainer's state/trainer

[trainer]
account = "alice"                         # keystore account (password from $MARKET_PASSWORD or a prompt)
data = "digits"                           # mnist5k | digits | path.npz | path.csv | image folder
label_column = "label"                    # CSV data: the label column's name or index (default: the last)
shard = "0/4"                             # simulations: this trainer's part of the data ...
partition = "dirichlet:0.5"               # ... dealt by iid | dirichlet:A | pathological:K | quantity_skew:A
label_noise = 0.0                         # fraction of labels flipped (poor data)
behaviour = "honest"                      # scripted behaviour, e.g. "scaling:factor=10"
allow_model_code = false                  # build `package.module:factory` models (runs their code)
poll_interval = 1.0                       # seconds between chain polls while waiting
wait_timeout = 3600                       # seconds to wait for a deadline or the next round
reconnect_timeout = 300                   # seconds to keep retrying through an RPC or IPFS outage

[trainer.train]                           # defaults; the round record's hyper-parameters win
epochs = 1
batch_size = 32
lr = 0.05
```

The trainer inherits `rpc`, `deployment`, `ipfs` and `keystore` from `[market]` (a `[trainer]` key
of the same name overrides it) and keeps its per-round state in `<[market] state>/trainer` unless
`[trainer] state` says otherwise. Both tables are strict: an unknown key is an error naming the
closest valid one. Relative paths are resolved against the file's directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from market import paths
from market.cli.config import check_keys, read_config, resolve_paths
from market.cli.config import load_settings as load_market_settings
from market.errors import ConfigError as MarketConfigError
from trainer.errors import ConfigError
from trainer.partition import parse_partition
from trainer.training import TrainConfig

__all__ = ["TrainerSettings", "label_column", "load_settings", "parse_partition", "parse_shard"]

_PATH_KEYS = ("deployment", "keystore", "state")


@dataclass(frozen=True)
class TrainerSettings:
    """Where the trainer talks to, who it is, what data it trains on and how."""

    rpc: str = "http://127.0.0.1:8545"
    deployment: Path = paths.DEPLOYMENT_FILE
    ipfs: str = "/ip4/127.0.0.1/tcp/5001/http"
    keystore: Path = field(default_factory=lambda: paths.STATE_DIR / "keystore")
    state: Path = field(default_factory=lambda: paths.STATE_DIR / "trainer")
    account: str | None = None
    data: str | None = None
    label_column: int | str = -1
    shard: str | None = None
    partition: str = "iid"
    partition_seed: int = 0
    label_noise: float = 0.0
    behaviour: str = "honest"
    allow_model_code: bool = False
    threads: int | None = None
    poll_interval: float = 1.0
    wait_timeout: float = 3600.0
    reconnect_timeout: float = 300.0
    rpc_retries: int = 3
    ipfs_retries: int = 5
    train: dict[str, Any] = field(default_factory=dict)
    #: The trainer's own client-level DP (`[trainer.dp]`: market.protocol.privacy.DpPolicy fields),
    #: applied when the project's spec sets no `privacy`; {}: none.
    dp: dict[str, Any] = field(default_factory=dict)

    def merged(self, **overrides: Any) -> TrainerSettings:
        """These settings with every non-None override applied (flags on top of the file)."""
        valid = {f.name for f in fields(self)}
        clean = {k: v for k, v in overrides.items() if v is not None and k in valid}
        for k in _PATH_KEYS:
            if k in clean:
                clean[k] = Path(clean[k])
        if "label_column" in clean:
            clean["label_column"] = label_column(clean["label_column"])
        if "train" in clean:
            clean["train"] = {**self.train, **clean["train"]}
        return replace(self, **clean)

    def train_config(self) -> TrainConfig:
        """The trainer's default hyper-parameters (before the round record's overrides)."""
        return TrainConfig().with_overrides(self.train)

    @property
    def updates_dir(self) -> Path:
        return self.state / "updates"

    def validate(self) -> TrainerSettings:
        if not 0.0 <= self.label_noise <= 1.0:
            raise ConfigError(f"label_noise must be a fraction in [0, 1], got {self.label_noise}")
        if self.poll_interval <= 0 or self.wait_timeout <= 0 or self.reconnect_timeout <= 0:
            raise ConfigError("poll_interval, wait_timeout and reconnect_timeout must be positive numbers of seconds")
        if self.rpc_retries < 0 or self.ipfs_retries < 0:
            raise ConfigError("rpc_retries and ipfs_retries must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if self.shard is not None:
            parse_shard(self.shard)
        parse_partition(self.partition)
        self.train_config()
        return self


_TYPES: dict[str, tuple[type, ...]] = {
    "rpc": (str,), "deployment": (str,), "ipfs": (str,), "keystore": (str,), "state": (str,),
    "account": (str,), "data": (str,), "label_column": (int, str), "shard": (str,), "partition": (str,),
    "partition_seed": (int,), "label_noise": (int, float), "behaviour": (str,),
    "allow_model_code": (bool,), "threads": (int,), "poll_interval": (int, float),
    "wait_timeout": (int, float), "reconnect_timeout": (int, float), "rpc_retries": (int,), "ipfs_retries": (int,),
    "train": (dict,), "dp": (dict,),
}


def label_column(value: int | str) -> int | str:
    """A CSV label column: an index (`-1`, `"0"`) or a header name (`"label"`)."""
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    if isinstance(value, str) and not value.strip():
        raise ConfigError("label_column must be a column name or index, got an empty string")
    return value


def load_settings(path: Path | None = None) -> TrainerSettings:
    """The trainer's settings from the config in force (`path`, else $MARKET_CONFIG, else
    ./market.toml if present; see `market.cli.config.config_path`): its `[market]` table for where
    things are, its `[trainer]` table on top; defaults without a file."""
    try:
        return _load(path)
    except MarketConfigError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from None  # the trainer's branch of the tree, same exit code


def _load(path: Path | None) -> TrainerSettings:
    market = load_market_settings(path)  # strict on [market]; follows ports and the state dir
    base = TrainerSettings(
        rpc=market.rpc, deployment=market.deployment, ipfs=market.ipfs, keystore=market.keystore,
        state=market.state / "trainer",
    )
    found, tables = read_config(path)
    if found is None:
        return base
    table = dict(tables.get("trainer", {}))
    where = f"{found} [trainer]"
    check_keys(table, _TYPES, where)
    for key, value in table.items():
        ok = _TYPES[key]
        if not isinstance(value, ok) or (bool not in ok and isinstance(value, bool)):
            raise ConfigError(
                f"{where}: {key} = {value!r} has the wrong type; expected {' or '.join(t.__name__ for t in ok)}"
            )
    table = resolve_paths(table, _PATH_KEYS, found)
    directory = found.resolve().parent
    data = table.get("data")
    if isinstance(data, str) and (directory / data).exists():
        table["data"] = str((directory / data).resolve())
    if "ipfs" in table and table["ipfs"].startswith("embedded:"):
        table["ipfs"] = "embedded:" + str((directory / table["ipfs"].removeprefix("embedded:")).resolve())
    for k in ("label_noise", "poll_interval", "wait_timeout", "reconnect_timeout"):
        if k in table:
            table[k] = float(table[k])
    return base.merged(**table)


_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """`"i/n"` -> (i, n) with 0 <= i < n."""
    m = _SHARD.match(text)
    if not m:
        raise ConfigError(f"shard {text!r} is not i/n (e.g. 0/4 for the first of four trainers)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"shard {text!r}: need 0 <= i < n, e.g. 0/4 .. 3/4")
    return i, n

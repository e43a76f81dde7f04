"""The trainer's configuration: a TOML file (`trainer.toml` by default) with flags on top.

```toml
[trainer]
rpc = "http://127.0.0.1:8545"
deployment = ".market/deployment.json"
ipfs = "/ip4/127.0.0.1/tcp/5001/http"     # or http://127.0.0.1:5001, or embedded:DIR
keystore = ".market/keystore"
state = ".market/trainer"                 # per-round submission state and update files
account = "alice"                         # keystore account (password from $MARKET_PASSWORD or a prompt)
data = "digits"                           # mnist5k | digits | path.npz | path.csv | image folder
shard = "0/4"                             # simulations: this trainer's part of the data ...
partition = "dirichlet:0.5"               # ... dealt by iid | dirichlet:A | pathological:K | quantity_skew:A
label_noise = 0.0                         # fraction of labels flipped (poor data)
behaviour = "honest"                      # scripted behaviour, e.g. "scaling:factor=10"
poll_interval = 1.0                       # seconds between chain polls while waiting
wait_timeout = 3600                       # seconds to wait for a deadline or the next round

[trainer.train]                           # defaults; the round record's hyper-parameters win
epochs = 1
batch_size = 32
lr = 0.05
```

Precedence: flag > environment (`$TRAINER_CONFIG` names the file) > file > built-in default.
Relative paths in the file are resolved against the file's directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from market import paths
from trainer.errors import ConfigError
from trainer.training import TrainConfig

__all__ = ["CONFIG_ENV", "DEFAULT_FILE", "TrainerSettings", "load_settings", "parse_partition", "parse_shard"]

CONFIG_ENV = "TRAINER_CONFIG"
DEFAULT_FILE = Path("trainer.toml")
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
    shard: str | None = None
    partition: str = "iid"
    partition_seed: int = 0
    label_noise: float = 0.0
    behaviour: str = "honest"
    allow_model_code: bool = False
    threads: int | None = None
    poll_interval: float = 1.0
    wait_timeout: float = 3600.0
    rpc_retries: int = 3
    ipfs_retries: int = 5
    train: dict[str, Any] = field(default_factory=dict)

    def merged(self, **overrides: Any) -> TrainerSettings:
        """These settings with every non-None override applied (flags on top of the file)."""
        valid = {f.name for f in fields(self)}
        clean = {k: v for k, v in overrides.items() if v is not None and k in valid}
        for k in _PATH_KEYS:
            if k in clean:
                clean[k] = Path(clean[k])
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
        if self.poll_interval <= 0 or self.wait_timeout <= 0:
            raise ConfigError("poll_interval and wait_timeout must be positive numbers of seconds")
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
    "account": (str,), "data": (str,), "shard": (str,), "partition": (str,),
    "partition_seed": (int,), "label_noise": (int, float), "behaviour": (str,),
    "allow_model_code": (bool,), "threads": (int,), "poll_interval": (int, float),
    "wait_timeout": (int, float), "rpc_retries": (int,), "ipfs_retries": (int,), "train": (dict,),
}


def load_settings(path: Path | None = None) -> TrainerSettings:
    """Settings from `path`, $TRAINER_CONFIG, or ./trainer.toml if present; defaults otherwise."""
    explicit = path or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    candidate = explicit or DEFAULT_FILE
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"config file {candidate} does not exist: create it or drop --config")
        return TrainerSettings()
    try:
        doc = tomllib.loads(candidate.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{candidate} is not valid TOML ({exc}): fix the file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {candidate} ({exc.strerror}): check its permissions") from None
    table = doc.get("trainer", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{candidate}: [trainer] must be a table")
    unknown = sorted(set(table) - set(_TYPES))
    if unknown:
        raise ConfigError(f"{candidate}: unknown key(s) {unknown} in [trainer]; allowed: {', '.join(_TYPES)}")
    for key, value in table.items():
        ok = _TYPES[key]
        if not isinstance(value, ok) or (bool not in ok and isinstance(value, bool)):
            raise ConfigError(
                f"{candidate}: [trainer] {key} = {value!r} has the wrong type; expected {' or '.join(t.__name__ for t in ok)}"
            )
    base = candidate.resolve().parent
    for k in _PATH_KEYS:
        if k in table:
            table[k] = (base / table[k]).resolve()
    data = table.get("data")
    if isinstance(data, str) and (base / data).exists():
        table["data"] = str((base / data).resolve())
    if "ipfs" in table and table["ipfs"].startswith("embedded:"):
        rest = table["ipfs"].removeprefix("embedded:")
        table["ipfs"] = "embedded:" + str((base / rest).resolve())
    for k in ("label_noise", "poll_interval", "wait_timeout"):
        if k in table:
            table[k] = float(table[k])
    return TrainerSettings().merged(**table)


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


def parse_partition(text: str) -> tuple[str, dict[str, Any]]:
    """`iid`, `dirichlet:0.5`, `pathological:2`, `quantity_skew:1.0` (or `name:key=value,...`)."""
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    positional = {"dirichlet": ("alpha", float), "pathological": ("classes_per_trainer", int),
                  "quantity_skew": ("alpha", float)}
    if name not in ("iid", *positional):
        raise ConfigError(f"unknown partition {name!r}: use iid, dirichlet:ALPHA, pathological:K or quantity_skew:ALPHA")
    params: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            if name not in positional or params:
                raise ConfigError(f"partition {text!r}: {item!r} is not key=value")
            key, value = positional[name][0], item
        key = key.strip()
        kind = float if key in ("alpha", "exponent") else int
        try:
            params[key] = kind(value)
        except ValueError:
            raise ConfigError(f"partition {text!r}: {key} must be {'a number' if kind is float else 'an integer'}, got {value!r}") from None
    return name, params

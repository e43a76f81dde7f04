"""Configuration: a TOML file (`market.toml` by default) with command-line flags on top.

Precedence: flag > environment variable > config file > built-in default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from market import paths
from market.errors import ConfigError

CONFIG_ENV = "MARKET_CONFIG"
UNITS = {"wei": 0, "gwei": 9, "ether": 18, "eth": 18}


def parse_amount(value: Any, what: str = "amount", decimals: int = 18) -> int:
    """'1.5 ether', '20 gwei', '1000' (base units), or an int -> base units."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected an amount like '1 ether' or an integer of wei, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{what} must not be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{what}: expected an amount like '1 ether' or an integer of wei, got {value!r}")
    parts = value.strip().split()
    try:
        number = Decimal(parts[0])
    except (InvalidOperation, IndexError):
        raise ConfigError(f"{what}: cannot read {value!r}; write e.g. '1 ether', '20 gwei' or '1000'") from None
    if len(parts) == 1:
        exp = 0
    elif len(parts) == 2 and parts[1].lower() in UNITS:
        exp = UNITS[parts[1].lower()] if parts[1].lower() != "ether" or decimals == 18 else decimals
    elif len(parts) == 2 and parts[1].lower() == "tokens":
        exp = decimals
    else:
        raise ConfigError(f"{what}: unknown unit in {value!r}; use wei, gwei, ether or tokens")
    scaled = number.scaleb(exp)
    if scaled < 0 or scaled != scaled.to_integral_value():
        raise ConfigError(f"{what}: {value!r} is not a whole, non-negative number of base units")
    return int(scaled)


@dataclass(frozen=True)
class Settings:
    """Where things are: the node, the deployment, the IPFS API, the stack's state directory."""

    rpc: str = "http://127.0.0.1:8545"
    deployment: Path = paths.DEPLOYMENT_FILE
    ipfs: str = "/ip4/127.0.0.1/tcp/5001/http"
    state: Path = paths.STATE_DIR
    anvil_port: int = 8545
    ipfs_api_port: int = 5001
    block_time: float | None = None
    keystore: Path = field(default_factory=lambda: paths.STATE_DIR / "keystore")

    def merged(self, **overrides: Any) -> Settings:
        """These settings with every non-None override applied."""
        valid = {f.name for f in fields(self)}
        clean = {k: v for k, v in overrides.items() if v is not None and k in valid}
        for k in ("deployment", "state", "keystore"):
            if k in clean:
                clean[k] = Path(clean[k])
        return replace(self, **clean)


def load_settings(path: Path | None = None) -> Settings:
    """Settings from `path`, $MARKET_CONFIG, or ./market.toml if present; defaults otherwise.

    The file's `[market]` table holds the keys of Settings; relative paths are resolved against the
    file's directory.
    """
    explicit = path or (Path(os.environ[CONFIG_ENV]) if CONFIG_ENV in os.environ else None)
    candidate = explicit or Path("market.toml")
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"config file {candidate} does not exist: create it or drop --config")
        return Settings()
    table = read_toml(candidate).get("market", {})
    base = candidate.resolve().parent
    for k in ("deployment", "state", "keystore"):
        if k in table:
            table[k] = (base / table[k]).resolve()
    try:
        return Settings().merged(**table)
    except TypeError as exc:
        raise ConfigError(f"{candidate}: {exc}") from None


def read_toml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None

"""Configuration: ONE TOML file for all three CLIs (`market.toml` by default), flags on top.

```toml
[market]        # where things are: every tool reads it (rpc, deployment, ipfs, keystore, ...)
[trainer]       # the trainer's own keys (trainer.config); it inherits rpc/deployment/ipfs/keystore
[aggregator]    # the aggregator's own keys (aggregator.settings)
[profile]       # overrides of the chain profile `[market] profile` names (market.chain.profiles)
```

The file is strict: an unknown table or key is an error naming the closest valid one, so a typo
never silently falls back to a default. Precedence: flag > environment variable > config file >
built-in default. The file is `--config`, else `$MARKET_CONFIG`, else `./market.toml` if present.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from market import paths
from market._spec import closest, convert
from market.chain.profiles import FIELDS as PROFILE_FIELDS
from market.chain.profiles import ChainProfile, for_chain, profile
from market.errors import ConfigError

CONFIG_ENV = "MARKET_CONFIG"
DEFAULT_FILE = Path("market.toml")
#: The tables a config file may hold, one per tool.
TABLES = ("market", "trainer", "aggregator", "dashboard", "profile")
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
    #: the chain profile (`[market] profile` + `[profile]`, or --profile); None: the deployment's,
    #: else the built-in profile of the node's chain
    profile: ChainProfile | None = None

    def merged(self, **overrides: Any) -> Settings:
        """These settings with every non-None override applied (a --profile spec string replaces
        the file's profile and its `[profile]` overrides)."""
        valid = {f.name for f in fields(self)}
        clean = {k: v for k, v in overrides.items() if v is not None and k in valid}
        if isinstance(clean.get("profile"), str):
            clean["profile"] = profile(clean["profile"])
        for k in ("deployment", "state", "keystore"):
            if k in clean:
                clean[k] = Path(clean[k])
        return replace(self, **clean)


def config_path(path: Path | None = None) -> Path | None:
    """The config file in force: `path` (--config), else $MARKET_CONFIG, else ./market.toml if it
    exists, else None. A file named explicitly must exist."""
    explicit = path or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if explicit is not None:
        if not Path(explicit).exists():
            raise ConfigError(f"config file {explicit} does not exist: create it, or drop --config / ${CONFIG_ENV}")
        return Path(explicit)
    return DEFAULT_FILE if DEFAULT_FILE.exists() else None


def check_keys(table: dict[str, Any], valid: Any, where: str) -> None:
    """Refuse a key of `table` that is not in `valid`, naming the closest valid one."""
    for key in table:
        if key not in valid:
            raise ConfigError(
                f"{where}: unknown key {key!r}{closest(key, valid)}; valid keys are {', '.join(sorted(valid))}"
            )


def read_config(path: Path | None = None) -> tuple[Path | None, dict[str, dict[str, Any]]]:
    """(file, its tables) for the config in force; `({}` when there is no file). Unknown tables
    are refused."""
    found = config_path(path)
    if found is None:
        return None, {}
    data = read_toml(found)
    for name, value in data.items():
        if name not in TABLES:
            raise ConfigError(f"{found}: unknown table [{name}]{closest(name, TABLES)}; valid tables are "
                              + ", ".join(f"[{t}]" for t in TABLES))
        if not isinstance(value, dict):
            raise ConfigError(f"{found}: {name!r} must be a table ([{name}]), got {type(value).__name__}")
    return found, data


def resolve_paths(table: dict[str, Any], keys: Any, file: Path) -> dict[str, Any]:
    """`table` with the path-valued `keys` resolved against the directory of `file`."""
    base = file.resolve().parent
    return {k: (base / v).resolve() if k in keys and isinstance(v, str) else v for k, v in table.items()}


_PATH_KEYS = ("deployment", "state", "keystore")


def _follow(table: dict[str, Any]) -> dict[str, Any]:
    """`table` with the keys that follow others filled in unless set: `rpc` follows `anvil_port`,
    `ipfs` follows `ipfs_api_port`, `deployment` and `keystore` live in `state`. A file that names
    other ports or another state directory then never leaves a tool talking to the default node
    (on a shared machine, someone else's chain)."""
    out = dict(table)
    if "anvil_port" in out and "rpc" not in out:
        out["rpc"] = f"http://127.0.0.1:{out['anvil_port']}"
    if "ipfs_api_port" in out and "ipfs" not in out:
        out["ipfs"] = f"/ip4/127.0.0.1/tcp/{out['ipfs_api_port']}/http"
    if "state" in out:
        out.setdefault("deployment", Path(out["state"]) / "deployment.json")
        out.setdefault("keystore", Path(out["state"]) / "keystore")
    return out


def load_settings(path: Path | None = None) -> Settings:
    """Settings from the `[market]` table of the config in force (see `config_path`); defaults
    without a file. Relative paths are resolved against the file's directory."""
    found, tables = read_config(path)
    if found is None:
        return Settings()
    table = tables.get("market", {})
    check_keys(table, {f.name for f in fields(Settings)}, f"{found} [market]")
    table = _follow(resolve_paths(table, _PATH_KEYS, found))
    if "profile" in table or "profile" in tables:
        table["profile"] = load_profile(table.get("profile"), tables.get("profile", {}), found)
    try:
        return Settings().merged(**table)
    except TypeError as exc:
        raise ConfigError(f"{found} [market]: {exc}") from None


_AMOUNT_KEYS = ("priority_fee_wei", "max_fee_wei")


def load_profile(name: Any, overrides: dict[str, Any], found: Path) -> ChainProfile:
    """The profile `[market] profile` names (default: by `[profile] chain_id`, else "local") with the
    `[profile]` table on top. Keys are checked like every table's; fee keys take amounts ("0.01 gwei")."""
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{found} [market]: profile must be a profile name like \"base-sepolia\", got {name!r}")
    check_keys(overrides, PROFILE_FIELDS, f"{found} [profile]")
    typed: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in _AMOUNT_KEYS and isinstance(value, str) and value.strip().lower() != "none":
            typed[key] = parse_amount(value, f"{found} [profile] {key}")
        else:
            typed[key] = convert(str(value), PROFILE_FIELDS[key], f"{found} [profile] {key}", ConfigError)
    try:
        if name is None and "chain_id" in typed:
            return for_chain(typed["chain_id"]).with_overrides(**typed)
        return profile(name or "local", typed)
    except ConfigError as exc:
        raise ConfigError(f"{found}: {exc}") from None


def read_toml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None

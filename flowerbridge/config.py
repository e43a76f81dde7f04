"""The bridge's configuration: a few keys of the Flower app's run config (`[tool.flwr.app.config]`
in its pyproject.toml, or `flwr run --run-config`) and, on a deployed SuperNode, of its node config
(`flower-supernode --node-config`). Everything else (where the node, deployment and IPFS API are,
the aggregator's rule and scorer, the trainer's keystore) stays in the one `market.toml`.

Run config (the same for the ServerApp and every ClientApp of a run):

    market-project = 1          # the project id; 0 turns the bridge off (plain Flower) ...
    market-project-file = ""    # ... unless this names a project file: the ServerApp creates the
    market-owner = "dev:0"      #   project (as market-owner) once every node is up (see below)
    market-config = ""          # path of market.toml; "" means $MARKET_CONFIG, else ./market.toml
    market-aggregator = "dev:1" # the aggregator: a keystore account name, or dev:N (local chains only)
    market-dev-trainers = 3     # simulations: supernode k (partition-id k) trains as dev account 3 + k

Node config (a deployed SuperNode; wins over market-dev-trainers):

    market-account = "alice"    # this node's trainer: a keystore account name, or dev:N
    market-config = "/etc/market.toml"   # this node's market.toml, if not the run's

Why the ServerApp may create the project: a round's windows count blocks from the moment the round
opens, round 0's from the project's creation. A simulation's first ClientApps start only after
Flower has started Ray and its actors (over a minute on a loaded two-core machine), so a project
created before `flwr run` needs a round-0 commit window longer than that start, and every later
round idles through the same long window. Created by the ServerApp after every node has answered
a warm-up message, the project can use windows sized to training alone.

Keystore accounts read their password from $MARKET_PASSWORD (no prompt runs inside Flower).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerbridge.errors import BridgeConfigError

__all__ = ["KEYS", "NODE_KEYS", "Account", "BridgeConfig", "parse_account"]

#: The run-config keys the bridge reads, with what each holds.
KEYS = {
    "market-project": "the project id (0: plain Flower, no market)",
    "market-project-file": "a project file the ServerApp creates the project from (market-project must be 0)",
    "market-owner": "the owner who creates the project of market-project-file: a keystore name or dev:N",
    "market-config": "path of market.toml (\"\": $MARKET_CONFIG, else ./market.toml)",
    "market-aggregator": "the aggregator's keystore account name, or dev:N on a local chain",
    "market-dev-trainers": "simulations: supernode k trains as dev account N + k (-1: off)",
}
#: The node-config keys a deployed SuperNode may set.
NODE_KEYS = {
    "market-account": "this node's trainer: a keystore account name, or dev:N on a local chain",
    "market-config": "this node's market.toml, when it is not the run's",
}


@dataclass(frozen=True)
class Account:
    """Who signs: keystore account `name`, or anvil dev account `dev` (local chains only)."""

    name: str | None = None
    dev: int | None = None

    def describe(self) -> str:
        return f"dev account {self.dev}" if self.dev is not None else f"keystore account {self.name!r}"


def parse_account(value: Any, key: str) -> Account:
    """`dev:N` (as in project files) or a keystore account name."""
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not text:
        raise BridgeConfigError(f"{key} is {value!r}: set it to a keystore account name or dev:N")
    if text.startswith("dev:"):
        index = text[4:]
        if not index.isdigit():
            raise BridgeConfigError(f"{key} = {text!r}: a dev account is dev:N with N a number, e.g. dev:1")
        return Account(dev=int(index))
    return Account(name=text)


def _int(config: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BridgeConfigError(f"{key} = {value!r} is not a whole number: {KEYS[key]}")
    try:
        number = int(value)
    except ValueError:
        raise BridgeConfigError(f"{key} = {value!r} is not a whole number: {KEYS[key]}") from None
    if number < minimum:
        raise BridgeConfigError(f"{key} = {number} must be at least {minimum}: {KEYS[key]}")
    return number


def _path(value: Any, key: str, what: str = "the market.toml the stack uses") -> Path | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BridgeConfigError(f"{key} = {value!r} is not a path: set it to {what}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise BridgeConfigError(f"{key} = {value!r}: no such file; point it at {what} (an absolute path: Flower"
                                " runs the apps in directories of its own)")
    return path.resolve()


@dataclass(frozen=True)
class BridgeConfig:
    """The bridge's keys of one run, checked."""

    project_id: int
    market_config: Path | None = None
    aggregator: Account = Account(dev=1)
    #: the project file the ServerApp creates the project from (project_id is then 0)
    project_file: Path | None = None
    owner: Account = Account(dev=0)
    #: dev account of the supernode with partition-id 0 in a simulation (None: no dev trainers)
    dev_trainers: int | None = None

    @property
    def enabled(self) -> bool:
        return self.project_id > 0 or self.project_file is not None

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> BridgeConfig:
        unknown = sorted(k for k in run_config if k.startswith("market-") and k not in KEYS)
        if unknown:
            raise BridgeConfigError(f"unknown run-config key {unknown[0]!r}: the bridge's keys are {', '.join(KEYS)}")
        project = _int(run_config, "market-project", 0, 0)
        dev = _int(run_config, "market-dev-trainers", -1, -1)
        aggregator = run_config.get("market-aggregator", "dev:1")
        project_file = _path(run_config.get("market-project-file"), "market-project-file", "a project file")
        if project_file is not None and project:
            raise BridgeConfigError(f"market-project = {project} and market-project-file are both set: give the id of a"
                                    " project that exists, or the file of one the ServerApp creates, not both")
        return cls(
            project_id=project,
            market_config=_path(run_config.get("market-config"), "market-config"),
            aggregator=parse_account(aggregator, "market-aggregator"),
            dev_trainers=None if dev < 0 else dev,
            project_file=project_file,
            owner=parse_account(run_config.get("market-owner", "dev:0"), "market-owner"),
        )

    def trainer_account(self, node_config: Mapping[str, Any]) -> Account:
        """This node's trainer: its node config's `market-account`, else (a simulation) the dev
        account `market-dev-trainers + partition-id`."""
        if "market-account" in node_config:
            return parse_account(node_config["market-account"], "market-account (node config)")
        if self.dev_trainers is not None and "partition-id" in node_config:
            return Account(dev=self.dev_trainers + int(node_config["partition-id"]))
        raise BridgeConfigError(
            "this SuperNode has no trainer account: set market-account in its node config"
            " (flower-supernode --node-config \"market-account='NAME'\"), or market-dev-trainers in a simulation"
        )

    def node_market_config(self, node_config: Mapping[str, Any]) -> Path | None:
        """The market.toml this node reads: its node config's, else the run's."""
        if "market-config" in node_config:
            return _path(node_config["market-config"], "market-config (node config)")
        return self.market_config

"""Typer options and small helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from trainer.config import TrainerSettings, load_settings
from trainer.errors import ConfigError
from trainer.state import RoundState, Stage

ConfigOpt = typer.Option(
    None, "--config", "-c", help="The config file: its [market] and [trainer] tables (default ./market.toml or $MARKET_CONFIG).")
IpfsOpt = typer.Option(None, "--ipfs", help="IPFS RPC API (multiaddr or http://127.0.0.1:5001) or embedded:DIR.")
StateOpt = typer.Option(None, "--state", help="Directory for per-round submission state and update files.")
KeystoreOpt = typer.Option(None, "--keystore", help="Keystore directory (default .market/keystore).")
AccountOpt = typer.Option(None, "--account", "-a", help="Keystore account name (password from $MARKET_PASSWORD or a prompt).")
AddressOpt = typer.Option(None, "--address", help="Show this address's view (read-only; no password needed).")
TimeoutOpt = typer.Option(None, "--timeout", help="Seconds to wait for a deadline or the next round (default 3600).")
UpdateOpt = typer.Option(None, "--update", help="Update file (default: the open round's file `trainer train` wrote).")
ProjectArg = typer.Argument(..., metavar="PROJECT", help="Project id.")

# train options (shared by `train` and `run`)
DataOpt = typer.Option(None, "--data", help="mnist5k | digits | path.npz | path.csv | image folder (default: the spec's built-in dataset).")
ShardOpt = typer.Option(None, "--shard", help="Simulations: use part i of n of the data, e.g. 0/4.")
PartitionOpt = typer.Option(None, "--partition", help="How --shard deals the data: iid, dirichlet:0.5, pathological:2, quantity_skew:1.")
PartitionSeedOpt = typer.Option(None, "--partition-seed", help="Seed of the partition and label noise (same for all simulated trainers).")
NoiseOpt = typer.Option(None, "--label-noise", help="Simulations: fraction of labels flipped to another class.")
BehaviourOpt = typer.Option(None, "--behaviour", help="Scripted behaviour: honest (default), label_flip, sign_flip:k=1, scaling:factor=10, ...")
EncodingOpt = typer.Option("f32", "--encoding", help="Update encoding: f32 or q8 (8-bit, ~4x smaller).")
EpochsOpt = typer.Option(None, "--epochs", help="Default local epochs (the round record's hyper-parameters win).")
BatchOpt = typer.Option(None, "--batch-size", help="Default batch size.")
LrOpt = typer.Option(None, "--lr", help="Default learning rate.")
OptimizerOpt = typer.Option(None, "--optimizer", help="Default optimizer: sgd or adam.")
SeedOpt = typer.Option(None, "--seed", help="Training seed (default: derived from trainer, project and round).")
ThreadsOpt = typer.Option(None, "--threads", help="torch intra-op threads for training.")
ModelCodeOpt = typer.Option(
    None, "--allow-user-models/--no-user-models", "--allow-model-code/--no-model-code",
    help="Build the spec's `package.module:factory` architecture (runs that code; only for code you trust).")
LabelColumnOpt = typer.Option(None, "--label-column", help="CSV data: the label column's name or index (default: the last).")


def settings(config: Path | None, train: dict[str, Any] | None = None, **flags: Any) -> TrainerSettings:
    """The config file's settings with the given flags (None: not given) on top, validated."""
    train = {k: v for k, v in (train or {}).items() if v is not None}
    return load_settings(config).merged(train=train or None, **flags).validate()


def train_flags(epochs: int | None, batch_size: int | None, lr: float | None, optimizer: str | None, seed: int | None) -> dict[str, Any]:
    return {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer, "seed": seed}


def check_encoding(encoding: str) -> None:
    if encoding not in ("f32", "q8"):
        raise ConfigError(f"--encoding must be f32 or q8, got {encoding!r}")


def state_json(state: RoundState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    out: dict[str, Any] = {
        "round": state.round, "stage": state.stage.value, "cid": state.cid, "digest": state.digest,
        "commit_tx": state.commit_tx, "reveal_tx": state.reveal_tx,
    }
    if state.stage == Stage.REVEALED:
        out["salt"] = state.salt  # public once revealed; secret before
    return out

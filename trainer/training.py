"""Local training: start from the global weights, train on the trainer's data, return the delta.

`train_local` is deterministic: the same model, global state, data, config and seed give a
bit-identical delta on CPU (for one torch build and thread count: a different number of intra-op
threads may change float summation order). Shuffling uses its own `torch.Generator`; any
randomness inside the model (dropout) draws from the global RNG, which is seeded from the config
inside `torch.random.fork_rng`, so the caller's RNG state is left untouched.

The loop is the plain PyTorch one: the epoch's permutation is drawn once and split into index
tensors, batches are gathered with one `index_select`, and no `.item()` runs per step (losses are
kept as tensors and summed once per epoch). No DataLoader, no worker processes.

FedProx (Li et al., 2020) adds `mu/2 * ||w - w_global||^2` to the local objective; its gradient
`mu * (w - w_global)` is added to each parameter's gradient after `backward()`, which is exactly
equivalent and skips building the term into the autograd graph. The reported loss is the data
cross-entropy without the proximal term.

The aggregator publishes hyper-parameters in the round record; `overrides` (or
`TrainConfig.with_overrides`) applies them on top of the trainer's defaults, refusing unknown
keys, wrong types and out-of-range values.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from market.errors import ConfigError as MarketConfigError
from market.models import ModelSpec, build_model, flatten, init_model
from trainer.data import Dataset, fit_to_spec
from trainer.errors import ConfigError, EmptyDataset, ModelSpecError, TrainingError

__all__ = [
    "ProgressCallback",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "train_local",
]


class TrainConfig(BaseModel):
    """Local training hyper-parameters. Strict types: `1` is not `True`, `"0.1"` is not `0.1`."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    epochs: int = Field(default=1, ge=1, le=10_000)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=0.05, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    #: SGD momentum (ignored by Adam).
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    #: FedProx proximal weight; 0 is plain FedAvg local training.
    fedprox_mu: float = Field(default=0.0, ge=0)
    seed: int = Field(default=0, ge=0, lt=2**63)
    #: Stop after this many optimizer steps in all (across epochs); None: run every epoch fully.
    max_batches: int | None = Field(default=None, ge=1)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> TrainConfig:
        """This config with `overrides` applied; `ConfigError` names any bad key or value."""
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"hyper-parameter overrides must be a mapping, got "
                              f"{type(overrides).__name__}")
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            raise ConfigError(f"unknown hyper-parameter(s) {unknown}; allowed: "
                              f"{', '.join(type(self).model_fields)}")
        try:
            return type(self).model_validate({**self.model_dump(), **dict(overrides)})
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}={err.get('input')!r}: {err['msg']}"
                for err in e.errors()
            )
            raise ConfigError(f"bad hyper-parameter value(s): {problems}; fix the overrides") \
                from None


@dataclass(frozen=True)
class TrainProgress:
    """One optimizer step done. `epoch_loss` is set on an epoch's last step (mean CE)."""

    step: int
    total_steps: int
    epoch: int
    epochs: int
    epoch_loss: float | None = None


ProgressCallback = Callable[[TrainProgress], None]


@dataclass(frozen=True)
class TrainResult:
    """The update (float32 delta per state entry, state_dict order) and how it was made."""

    delta: dict[str, torch.Tensor]
    #: Samples the trainer holds (FedAvg's weight n_k), not samples seen.
    num_samples: int
    #: Mean cross-entropy over the last epoch's samples (without the FedProx term).
    loss: float
    steps: int
    epoch_losses: tuple[float, ...] = ()
    config: TrainConfig | None = None


def _prepare_model(model: ModelSpec | nn.Module, global_state: Mapping[str, torch.Tensor] | None,
                   seed: int) -> nn.Module:
    if isinstance(model, ModelSpec):
        try:
            if global_state is None:
                net = init_model(model, seed)
            else:
                with torch.random.fork_rng(devices=[]):
                    net = build_model(model)
        except MarketConfigError as e:
            raise ModelSpecError(str(e)) from e
    elif isinstance(model, nn.Module):
        net = copy.deepcopy(model)
    else:
        raise ModelSpecError(f"expected a ModelSpec or an nn.Module, got {type(model).__name__}")
    ref = net.state_dict()
    bad = {k: str(v.dtype) for k, v in ref.items() if v.dtype != torch.float32}
    if bad:
        raise ModelSpecError(f"model state entries {bad} are not float32; updates must be "
                             "float32 (and BatchNorm is not supported)")
    if global_state is not None:
        if global_state.keys() != ref.keys():
            raise ModelSpecError(
                f"global state does not fit the model: missing {sorted(set(ref) - set(global_state))}"
                f", unexpected {sorted(set(global_state) - set(ref))}; fetch the round's weights "
                "for this model spec"
            )
        for k, v in global_state.items():
            if v.shape != ref[k].shape or v.dtype != torch.float32:
                raise ModelSpecError(
                    f"global tensor {k!r} is {v.dtype} {tuple(v.shape)}, the model wants float32 "
                    f"{tuple(ref[k].shape)}; fetch the round's weights for this model spec"
                )
        net.load_state_dict(global_state, strict=True)
    return net


def _optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ModelSpecError("the model has no trainable parameters; nothing to train")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def train_local(model: ModelSpec | nn.Module, global_state: Mapping[str, torch.Tensor] | None,
                dataset: Dataset, config: TrainConfig | None = None, *,
                overrides: Mapping[str, Any] | None = None,
                progress: ProgressCallback | None = None,
                num_threads: int | None = None) -> TrainResult:
    """Train from `global_state` on `dataset`; return the delta (trained minus global).

    `model` is a `ModelSpec` (built here; the dataset is checked against it) or a module used
    as a template (deep-copied: the caller's module is not changed). `global_state` None starts
    from the spec's `init_model(spec, seed)` weights, or the module's own. `num_threads` sets
    torch's intra-op threads for this call only (restored after); pin it for deltas that are
    bit-identical across machines with different core counts, or 1 on a busy machine.
    """
    if num_threads is None:
        return _train(model, global_state, dataset, config, overrides, progress)
    if num_threads < 1:
        raise ConfigError(f"num_threads must be at least 1, got {num_threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        return _train(model, global_state, dataset, config, overrides, progress)
    finally:
        torch.set_num_threads(before)


def _train(model: ModelSpec | nn.Module, global_state: Mapping[str, torch.Tensor] | None,
           dataset: Dataset, config: TrainConfig | None, overrides: Mapping[str, Any] | None,
           progress: ProgressCallback | None) -> TrainResult:
    cfg = (config or TrainConfig()).with_overrides(overrides)
    if isinstance(model, ModelSpec):
        dataset = fit_to_spec(dataset, model, reshape=False)
    n = len(dataset)
    if n == 0:
        raise EmptyDataset(f"dataset {dataset.name!r} has no samples; nothing to train on")
    net = _prepare_model(model, global_state, cfg.seed)
    start = {k: v.detach().clone() for k, v in net.state_dict().items()}

    bs = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_batches is not None:
        total = min(total, cfg.max_batches)
    epochs = math.ceil(total / steps_per_epoch)
    mu = cfg.fedprox_mu
    named = [(p, start[k]) for k, p in net.named_parameters() if p.requires_grad and k in start]
    x, y = dataset.x, dataset.y

    epoch_losses: list[float] = []
    step = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        opt = _optimizer(net, cfg)
        net.train()
        for epoch in range(epochs):
            batches = torch.randperm(n, generator=gen).split(bs)
            batches = batches[: total - step]
            losses: list[torch.Tensor] = []
            for idx in batches:
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(x.index_select(0, idx)), y.index_select(0, idx))
                loss.backward()
                if mu > 0:
                    for p, g in named:
                        if p.grad is not None:
                            p.grad.add_(p.detach(), alpha=mu).sub_(g, alpha=mu)
                opt.step()
                losses.append(loss.detach())
                step += 1
                if progress is not None and idx is not batches[-1]:
                    progress(TrainProgress(step, total, epoch + 1, epochs))
            sizes = torch.tensor([len(b) for b in batches], dtype=torch.float32)
            epoch_loss = float(torch.stack(losses) @ sizes / sizes.sum())
            epoch_losses.append(epoch_loss)
            if progress is not None:
                progress(TrainProgress(step, total, epoch + 1, epochs, epoch_loss))

    delta = {k: (v.detach() - start[k]) for k, v in net.state_dict().items()}
    if not (math.isfinite(epoch_losses[-1]) and bool(torch.isfinite(flatten(delta)).all())):
        raise TrainingError(f"training diverged (last epoch loss {epoch_losses[-1]}, non-finite "
                            "weights); lower lr or check the data")
    return TrainResult(delta=delta, num_samples=n, loss=epoch_losses[-1], steps=step,
                       epoch_losses=tuple(epoch_losses), config=cfg)

"""Accuracy and loss of a model on a dataset, the way the aggregator and trainers measure it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from market.errors import ConfigError

__all__ = ["evaluate", "sample_losses"]


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1024) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of `model` on `(x, y)`, in eval mode without gradients."""
    n = int(y.shape[0])
    if n == 0 or x.shape[0] != n:
        raise ConfigError(f"cannot evaluate on x with {x.shape[0]} rows and y with {n} labels; "
                          "pass a non-empty dataset with one label per row")
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64)
    loss = torch.zeros((), dtype=torch.float64)
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                xb, yb = x[start:start + batch_size], y[start:start + batch_size]
                out = model(xb)
                loss += F.cross_entropy(out, yb, reduction="sum").double()
                correct += (out.argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    return correct.item() / n, loss.item() / n


def sample_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The cross-entropy of every sample of `(x, y)` under `model` (float64 `[n]`), in eval mode
    without gradients: what a paired comparison of two models on the same samples needs."""
    n = int(y.shape[0])
    if n == 0 or x.shape[0] != n:
        raise ConfigError(f"cannot evaluate on x with {x.shape[0]} rows and y with {n} labels; "
                          "pass a non-empty dataset with one label per row")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [F.cross_entropy(model(x[s:s + batch_size]), y[s:s + batch_size], reduction="none").double()
                     for s in range(0, n, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts)

"""The model, the data and the training loop: what an existing Flower app already has.

The model and data come from the market's built-ins (`market.models.zoo`, `market.datasets`), so
the project's spec (`examples/flower/project.toml`) names the same architecture and dataset and
the aggregator validates on the same kind of data.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from market.datasets import builtin_arrays
from market.models import evaluate
from market.models.zoo import init_model
from market.protocol.model_spec import ModelSpec

SPEC = ModelSpec(architecture="digits_mlp", input_shape=(64,), num_classes=10, dataset="digits")
#: The last rows of the digits are every client's test set; the rest is split between clients.
TEST_ROWS = 297


def new_model(seed: int = 0) -> nn.Module:
    return init_model(SPEC, seed)


def load_partition(partition_id: int, num_partitions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Client `partition_id`'s share (IID, fixed seed) of the training rows."""
    x, y = builtin_arrays("digits")
    order = np.random.default_rng(0).permutation(len(y) - TEST_ROWS)
    part = np.array_split(order, num_partitions)[partition_id]
    return torch.from_numpy(x[part].copy()), torch.from_numpy(y[part].copy())


def load_test() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = builtin_arrays("digits")
    return torch.from_numpy(x[-TEST_ROWS:].copy()), torch.from_numpy(y[-TEST_ROWS:].copy())


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch_size: int,
          seed: int) -> float:
    """Plain minibatch SGD; returns the last epoch's mean loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    mean = 0.0
    for _ in range(epochs):
        total, order = 0.0, torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        mean = total / len(y)
    return mean


def test(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, loss)."""
    return evaluate(model, x, y)

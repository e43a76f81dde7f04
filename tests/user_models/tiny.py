"""User model factories loaded by path in tests/test_trainer_models.py."""

from __future__ import annotations

from torch import nn


def make_tiny(input_shape: tuple[int, ...], num_classes: int, hidden: int = 8) -> nn.Module:
    """A two-layer MLP; takes the spec's shape and classes plus an `arch_kwargs` width."""
    features = 1
    for d in input_shape:
        features *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def only_kwargs(width: int = 4) -> nn.Module:
    """A factory that does not take input_shape/num_classes: gets only arch_kwargs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.Linear(width, 10))


def with_batchnorm(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], 8), nn.BatchNorm1d(8),
                         nn.Linear(8, num_classes))


def with_double(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], num_classes)).double()


def not_a_module(input_shape: tuple[int, ...], num_classes: int) -> str:
    return "not a model"


NOT_CALLABLE = 42

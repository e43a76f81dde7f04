"""Models: the architecture registry (`zoo`), tensor plumbing (`tensors`) and `evaluate`."""

from __future__ import annotations

from market.models.evaluate import evaluate, sample_losses
from market.models.tensors import (
    TensorSpec,
    apply_delta,
    flatten,
    stack_updates,
    state_delta,
    tensor_spec,
    unflatten,
)
from market.models.zoo import (
    MnistCNN,
    ModelFactory,
    ModelSpec,
    build_model,
    init_model,
    load_factory,
    model_names,
    register_model,
)

__all__ = [
    "MnistCNN",
    "ModelFactory",
    "ModelSpec",
    "TensorSpec",
    "apply_delta",
    "build_model",
    "evaluate",
    "flatten",
    "init_model",
    "load_factory",
    "model_names",
    "register_model",
    "sample_losses",
    "stack_updates",
    "state_delta",
    "tensor_spec",
    "unflatten",
]

"""Tensor plumbing both sides share: flatten a state dict into one row, stack updates, deltas.

See docs/CONVENTIONS.md: an update is a float32 delta per state entry, keyed and ordered as the
model's `state_dict()`, and a stack of n updates is `[n, d]`, rows being `flatten(update)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from market.errors import UpdateRejected

__all__ = ["TensorSpec", "apply_delta", "flatten", "stack_updates", "state_delta", "tensor_spec", "unflatten"]

TensorSpec = dict[str, tuple[tuple[int, ...], str]]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def tensor_spec(model: nn.Module | Mapping[str, torch.Tensor]) -> TensorSpec:
    """`{name: (shape, dtype)}` in `state_dict()` order, dtype as a string like `"float32"`."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return {k: (tuple(v.shape), _dtype_name(v.dtype)) for k, v in state.items()}


def _mismatch(detail: str) -> UpdateRejected:
    return UpdateRejected("layout_mismatch", detail)


def _check_same_layout(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                       what: str) -> None:
    if a.keys() != b.keys():
        missing = sorted(set(b) - set(a))
        extra = sorted(set(a) - set(b))
        raise _mismatch(f"{what}: missing tensors {missing}, unexpected tensors {extra}; "
                        "both must have the model's state_dict keys")
    for k, v in a.items():
        if v.shape != b[k].shape:
            raise _mismatch(f"{what}: tensor {k!r} has shape {tuple(v.shape)}, expected "
                            f"{tuple(b[k].shape)}; both must come from the same model spec")


def flatten(state: Mapping[str, torch.Tensor], keys: Iterable[str] | None = None) -> torch.Tensor:
    """Concatenate the tensors named by `keys` (default: `state`'s order) into a float32 `[d]`."""
    order = list(state) if keys is None else list(keys)
    parts = []
    for k in order:
        try:
            t = state[k]
        except KeyError:
            raise _mismatch(f"tensor {k!r} is missing; an update must hold every model tensor") \
                from None
        parts.append(t.detach().reshape(-1).to(torch.float32))
    if not parts:
        return torch.zeros(0, dtype=torch.float32)
    return torch.cat(parts)


def unflatten(vec: torch.Tensor, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `flatten`: split `[d]` into tensors shaped (and typed) as `like`; copies."""
    if vec.dim() != 1:
        raise _mismatch(f"expected a flat vector, got shape {tuple(vec.shape)}; pass one row")
    sizes = [v.numel() for v in like.values()]
    if vec.numel() != sum(sizes):
        raise _mismatch(f"vector has {vec.numel()} values, the model has {sum(sizes)}; "
                        "use the model spec the vector was made for")
    out: dict[str, torch.Tensor] = {}
    for (k, ref), chunk in zip(like.items(), torch.split(vec.detach(), sizes), strict=True):
        out[k] = chunk.reshape(ref.shape).to(ref.dtype, copy=True)
    return out


def stack_updates(updates: Sequence[Mapping[str, torch.Tensor]],
                  keys: Iterable[str] | None = None) -> torch.Tensor:
    """Stack n updates into a float32 `[n, d]`, each row `flatten(update, keys)`."""
    if not updates:
        raise _mismatch("no updates to stack; pass at least one")
    order = list(updates[0]) if keys is None else list(keys)
    return torch.stack([flatten(u, order) for u in updates])


def state_delta(new: Mapping[str, torch.Tensor],
                old: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`new - old` per tensor, in `old`'s order (the update convention: local minus global)."""
    _check_same_layout(new, old, "state_delta")
    return {k: (new[k].detach() - o.detach()).to(torch.float32) for k, o in old.items()}


def apply_delta(state: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor],
                lr: float = 1.0) -> dict[str, torch.Tensor]:
    """`state + lr * delta` per tensor, as a new dict in `state`'s order."""
    _check_same_layout(delta, state, "apply_delta")
    return {k: torch.add(s.detach(), delta[k].detach().to(s.dtype), alpha=lr)
            for k, s in state.items()}

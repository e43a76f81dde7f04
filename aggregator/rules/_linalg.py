"""Input checks every rule and filter shares (`as_stack`, `as_weights`) and the single-threaded
BLAS switch. The arithmetic itself lives in `market.protocol.numerics`
(exact fixed-point kernels, the same bits on every machine).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from aggregator.errors import InvalidUpdates

_controller: Any = None


def single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
    """Run numpy's BLAS on one thread inside the block.

    Two reasons: results then do not depend on the machine's core count (a multi-threaded GEMM
    splits its sums differently), which an auditor re-running a round needs; and on a small,
    busy machine a multi-threaded GEMM whose threads get descheduled is 5-20x slower than one
    thread (measured on the 2-core box: 0.2 s single vs 0.7-4.5 s threaded under load for a
    100 x 1M Gram matrix). Without threadpoolctl (a scikit-learn dependency) it does nothing.
    """
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        except Exception:  # noqa: BLE001  # pragma: no cover - threadpoolctl ships with scikit-learn
            _controller = False
    if _controller is False:
        return contextlib.nullcontext()
    return _controller.limit(limits=1, user_api="blas")  # type: ignore[no-any-return]


def as_stack(updates: torch.Tensor) -> torch.Tensor:
    """`updates` as a contiguous float32 CPU tensor `[n, d]`, n >= 1, d >= 1 (no copy when it is one)."""
    if not isinstance(updates, torch.Tensor):
        raise InvalidUpdates(
            f"updates must be a torch.Tensor [n, d], got {type(updates).__name__}; "
            "stack the flattened updates with torch.stack"
        )
    if updates.dim() != 2 or updates.shape[0] < 1 or updates.shape[1] < 1:
        raise InvalidUpdates(
            f"updates must have shape [n, d] with n, d >= 1, got {tuple(updates.shape)}; "
            "stack one flattened update per row"
        )
    if not updates.is_floating_point():
        raise InvalidUpdates(f"updates must be floating point, got {updates.dtype}; send float32 deltas")
    x = updates.detach()
    if x.device.type != "cpu":
        x = x.cpu()
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    return x.contiguous()


def as_weights(weights: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """Validated non-negative finite float64 weights `[n]`, or None."""
    if weights is None:
        return None
    w = torch.as_tensor(weights).detach().to("cpu", torch.float64).reshape(-1)
    if w.numel() != n:
        raise InvalidUpdates(f"got {w.numel()} weights for {n} updates; pass one weight per row")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise InvalidUpdates("weights must be finite and non-negative; fix the sample counts")
    return w

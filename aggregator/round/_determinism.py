"""The one switch that makes a round's arithmetic reproducible on any machine of the same build."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from aggregator.rules import _linalg as la

__all__ = ["deterministic"]


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Deterministic torch algorithms on `threads` threads, single-threaded BLAS; restored after."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with la.single_threaded_blas():
            yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)

"""Where a grid's points run: `market simulate --backend local|ray [--address ADDR] [--workers N]`.

- `local` (the default): in this process, one point after the other, as before; `--workers N`
  above 1 runs N points at a time in a pool of fresh processes.
- `ray`: every point is a Ray task (one CPU each). `--address` joins a running cluster
  ("ray://head:10001" or "head:6379"); without it a private Ray instance is started on loopback
  for the run (`--workers` CPUs, default all of this machine's; no dashboard, no usage stats)
  and stopped after it. A driver that already called `ray.init` keeps its runtime.

Both return the points' results in the grid's order, whatever order they finish in, and run the
same function on the same arguments: a point's result depends on its seed alone, never on the
backend (`tests/lab/test_ray_backend.py`).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aggregator.ray_scoring import ray_module, start_ray
from market.errors import ConfigError

__all__ = ["BACKENDS", "Backend", "LocalBackend", "RayBackend", "open_backend"]

T = TypeVar("T")
R = TypeVar("R")

BACKENDS = ("local", "ray")


class Backend(Protocol):
    @property
    def name(self) -> str: ...

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """`[fn(x) for x in items]`, maybe in parallel; results in `items` order."""
        ...


@dataclass(frozen=True)
class LocalBackend:
    workers: int = 1
    name: str = "local"

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if self.workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ProcessPoolExecutor(min(self.workers, len(items)), mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(fn, items))


@dataclass(frozen=True)
class RayBackend:
    """Points as Ray tasks on the runtime this process is connected to (see `open_backend`)."""

    name: str = "ray"

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        ray = ray_module()
        task = ray.remote(num_cpus=1, max_retries=0)(fn)
        refs = [task.remote(x) for x in items]
        try:
            return list(ray.get(refs))
        except ray.exceptions.RayTaskError as exc:
            # the point's own error (a SimulationError, a ConfigError...), with its exit code
            cause: Any = exc.cause
            raise cause from None


@contextmanager
def open_backend(name: str, *, address: str | None = None, workers: int | None = None) -> Iterator[Backend]:
    """The backend `name`, ready to map; a Ray runtime this call started is shut down after."""
    if name not in BACKENDS:
        raise ConfigError(f"--backend must be one of {list(BACKENDS)}, got {name!r}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if name == "local":
        if address:
            raise ConfigError("--address names a Ray cluster: use it with --backend ray")
        yield LocalBackend(workers or 1)
        return
    ray = ray_module()
    started = start_ray(address, num_cpus=None if address else workers)
    try:
        yield RayBackend()
    finally:
        if started:
            ray.shutdown()

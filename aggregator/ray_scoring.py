"""Coalition evaluations on Ray workers: `[aggregator] compute = "ray"` (optional extra `ray`).

Large rounds spend their time in the validation gate's and the scorer's coalition utilities: a
forward pass over the validation set per coalition. `RayExecutor` measures the coalitions a
scorer or the gate asks for ahead of use (`aggregator.scoring.prefetch`) as Ray tasks: the
round's update stack, base model, weights and evaluator go to the object store once per utility,
each task measures one contiguous chunk with the very code that measures locally
(`CoalitionUtility` rebuilt on the worker, under `deterministic(threads)`), and the values come
back in the order asked. The round then uses them exactly where and when it would have measured
them, so on workers of the same build and CPU kind the record is byte-identical to a local one;
on other CPUs a value may differ in its last bits, within the audit's tolerances, as between any
two machines.

The workers unpickle what the driver sent them (Ray's transport): a Ray cluster is part of the
aggregator's own machine park, never a shared or public one.

`address=None` starts a private local Ray instance (loopback, no dashboard, no usage stats) on
first use and stops it when the process exits; an address ("ray://host:10001" or "host:6379")
joins that cluster. A driver that already called `ray.init` keeps its own runtime.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

from aggregator.round._determinism import deterministic
from aggregator.scoring import CoalitionUtility
from aggregator.settings import SettingsError
from market._text import one_line

__all__ = ["COMPUTE_BACKENDS", "RayExecutor", "executor_for", "ray_module", "start_ray"]

COMPUTE_BACKENDS = ("local", "ray")

#: Payloads a worker process has already unpacked, by token (the last few utilities only).
_WORKER_PAYLOADS: dict[str, CoalitionUtility] = {}
_WORKER_KEEP = 4


def ray_module() -> Any:
    """The `ray` package, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SettingsError("Ray is not installed; install the extra: pip install .[ray]") from None
    return ray


def start_ray(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Connect to `address`, or start a private local instance; True when this call started or
    joined a runtime the caller must `ray.shutdown()`, False when one was already running."""
    ray = ray_module()
    if address and address != "auto":
        _check_reachable(address)
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        raise SettingsError(f"cannot start or reach {where} ({one_line(exc)}); check the address and that the cluster runs") from None
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line error now for an address nothing listens on (ray.init would retry for minutes)."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise SettingsError(f"Ray address {address!r} is not host:port or ray://host:port; give the head node's address")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise SettingsError(f"no Ray cluster answers at {address!r} ({one_line(exc)}); check the address and that the cluster runs") from None


def _evaluate_chunk(token: str, boxed: list[Any], coalitions: list[tuple[int, ...]], threads: int) -> list[float]:
    """On a worker: the utility's measurement of each coalition (no ledger, no cache)."""
    utility = _WORKER_PAYLOADS.get(token)
    if utility is None:
        import ray

        aggregate_fn, evaluate_fn, updates, global_vector, weights = ray.get(boxed[0])
        utility = CoalitionUtility(aggregate_fn, evaluate_fn, updates, global_vector, weights)
        while len(_WORKER_PAYLOADS) >= _WORKER_KEEP:
            _WORKER_PAYLOADS.pop(next(iter(_WORKER_PAYLOADS)))
        _WORKER_PAYLOADS[token] = utility
    with deterministic(threads):
        return [float(utility.evaluate_fn(utility.model(frozenset(c)))) for c in coalitions]


class RayExecutor:
    """A `CoalitionExecutor` over the CPUs of a Ray runtime (see the module doc)."""

    def __init__(self, threads: int = 1, workers: int | None = None):
        self.ray = ray_module()
        if not self.ray.is_initialized():
            raise SettingsError("RayExecutor needs a running Ray runtime; call start_ray(address) first")
        self.threads = threads
        self._workers = workers
        self._remote = self.ray.remote(num_cpus=1)(_evaluate_chunk)
        self._payloads: weakref.WeakKeyDictionary[CoalitionUtility, tuple[str, Any]] = weakref.WeakKeyDictionary()

    @property
    def workers(self) -> int:
        if self._workers is None:
            self._workers = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        return self._workers

    def _payload(self, utility: CoalitionUtility) -> tuple[str, Any]:
        found = self._payloads.get(utility)
        if found is None:
            ref = self.ray.put((utility.aggregate_fn, utility.evaluate_fn, utility.updates, utility.global_vector,
                                utility.weights))
            found = (uuid.uuid4().hex, ref)
            self._payloads[utility] = found
        return found

    def evaluate(self, utility: CoalitionUtility, coalitions: Sequence[frozenset[int]]) -> list[float]:
        if not coalitions:
            return []
        token, ref = self._payload(utility)
        items = [tuple(sorted(c)) for c in coalitions]
        chunks = min(self.workers, len(items))
        size, extra = divmod(len(items), chunks)
        refs, start = [], 0
        for k in range(chunks):
            stop = start + size + (1 if k < extra else 0)
            # boxed in a list so Ray hands the worker the reference, not a fresh copy per task
            refs.append(self._remote.remote(token, [ref], items[start:stop], self.threads))
            start = stop
        return [v for part in self.ray.get(refs) for v in part]


_EXECUTORS: dict[tuple[str | None, int], RayExecutor] = {}
_LOCK = threading.Lock()


def executor_for(compute: str, address: str | None, threads: int) -> RayExecutor | None:
    """The executor `compute` names: None for "local"; for "ray", one per (address, threads) for
    the life of the process, on a runtime started (and stopped at exit) on first use."""
    if compute == "local":
        return None
    if compute != "ray":
        raise SettingsError(f"compute must be one of {list(COMPUTE_BACKENDS)}, got {compute!r}")
    with _LOCK:
        key = (address, threads)
        ray = ray_module()
        if not ray.is_initialized():
            _EXECUTORS.clear()  # their runtime was shut down
        if key not in _EXECUTORS:
            if start_ray(address):
                atexit.register(ray.shutdown)
            _EXECUTORS[key] = RayExecutor(threads)
        return _EXECUTORS[key]

"""Every byte a round reads from the content store, fetched in one place (`gather_inputs`).

What comes back is a `RoundInputs`: the context, this round's revealed updates (bytes verified
against their revealed sha256, or the reason there are none), the previous round's updates of
the same trainers (the free-rider reference), the base model and the model before it (the last
global step), and the validation set. From there on the round is a pure function
(`compute.compute_from_inputs`); an in-memory simulation builds `RoundInputs` itself.

A malformed or missing update never stops a round: content failures become reasons. Only an
outage (`StorageUnavailable`: the node does not answer at all) raises, so the service can pause.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from aggregator.round.config import RoundConfig
from aggregator.round.context import ReadStore, RoundContext
from aggregator.valset import ValidationSet
from market.errors import (
    ContentNotFound,
    ContentTooLarge,
    IntegrityError,
    InvalidCid,
    StorageError,
    StorageUnavailable,
)
from market.protocol.documents import UpdateInput
from market.storage import fetch_verified

__all__ = ["Fetched", "RoundInputs", "UpdateCache", "digest_of", "fetch_updates", "gather_inputs"]


class UpdateCache(Protocol):
    def cached_update(self, digest: bytes) -> bytes | None: ...
    def cache_update(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class Fetched:
    """One revealed update after the fetch: its bytes, or why there are none."""

    input: UpdateInput
    data: bytes | None
    reason: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class RoundInputs:
    """Everything `compute_from_inputs` needs besides the config: chain data and fetched bytes."""

    context: RoundContext
    #: this round's revealed updates, in `context.inputs` (commit) order
    updates: tuple[Fetched, ...]
    #: the previous round's updates of this round's trainers (free-rider reference)
    previous_updates: tuple[Fetched, ...]
    base_model: bytes
    #: the model round r-1 was built on (base - previous base = the last global step); None in round 0
    previous_base_model: bytes | None
    valset: ValidationSet
    validation_cid: str


def digest_of(u: UpdateInput) -> bytes:
    return bytes.fromhex(u.digest.removeprefix("0x"))


def _fetch_one(
    store: ReadStore, u: UpdateInput, max_bytes: int, timeout: float, attempts: int, cache: UpdateCache | None
) -> Fetched:
    digest = digest_of(u)
    if cache is not None:
        data = cache.cached_update(digest)
        if data is not None:
            return Fetched(u, data)
    last = ""
    for _ in range(attempts):
        try:
            data = fetch_verified(store, u.cid, digest, max_bytes, timeout=timeout)  # type: ignore[arg-type]
        except ContentNotFound as exc:
            last = str(exc)
            continue
        except ContentTooLarge as exc:
            return Fetched(u, None, "too_large", str(exc))
        except InvalidCid as exc:
            return Fetched(u, None, "invalid_cid", str(exc))
        except IntegrityError as exc:
            return Fetched(u, None, "digest_mismatch", str(exc))
        except StorageUnavailable:
            raise  # the node itself is down: an outage, the round waits
        except StorageError as exc:
            # this content only (a directory CID, a transfer that times out, ...): retry, then
            # reject, so that no trainer can stall the round with a CID the node cannot serve
            last = str(exc)
            continue
        if cache is not None:
            cache.cache_update(data)
        return Fetched(u, data)
    return Fetched(u, None, "unavailable", last or f"no provider served {u.cid}")


def fetch_updates(
    store: ReadStore,
    inputs: Sequence[UpdateInput],
    *,
    max_bytes: int,
    workers: int = 4,
    timeout: float = 30.0,
    attempts: int = 3,
    cache: UpdateCache | None = None,
) -> list[Fetched]:
    """Fetch every revealed update in parallel (at most `workers` at once), each checked against
    its revealed sha256 and bounded by `max_bytes`. Content failures become reasons (after
    `attempts` tries for content no provider serves); only StorageUnavailable (the node does not
    answer at all) propagates, as an outage."""
    if not inputs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(inputs))), thread_name_prefix="fetch") as pool:
        futures = [pool.submit(_fetch_one, store, u, max_bytes, timeout, attempts, cache) for u in inputs]
        return [f.result() for f in futures]


def base_model_limit(ctx: RoundContext) -> int:
    """Bound on a base model's bytes: twice the largest update the policy allows."""
    return 2 * ctx.spec.validation.max_update_bytes


def gather_inputs(
    store: ReadStore,
    ctx: RoundContext,
    *,
    valset: ValidationSet,
    validation_cid: str,
    config: RoundConfig | None = None,
    cache: UpdateCache | None = None,
) -> RoundInputs:
    """All the I/O of round `ctx.round`: this round's updates, each trainer's previous update
    (one attempt: a reference, not an input that earns anything), the base model and the one
    before it. `config` only says how hard to try (workers, timeout, attempts)."""
    cfg = config or RoundConfig()
    policy = ctx.spec.validation
    updates = fetch_updates(
        store, ctx.inputs, max_bytes=policy.max_update_bytes, workers=cfg.fetch_workers,
        timeout=cfg.fetch_timeout, attempts=cfg.fetch_attempts, cache=cache,
    )
    trainers = {u.trainer.lower() for u in ctx.inputs}
    wanted = [u for u in ctx.previous_inputs if u.trainer.lower() in trainers]
    previous: list[Fetched] = []
    if wanted and ctx.previous_base_model_cid is not None:
        previous = fetch_updates(
            store, wanted, max_bytes=policy.max_update_bytes, workers=cfg.fetch_workers,
            timeout=cfg.fetch_timeout, attempts=1, cache=cache,
        )
    limit = base_model_limit(ctx)
    base = store.cat(ctx.base_model_cid, max_bytes=limit, timeout=cfg.fetch_timeout)
    before = None
    if ctx.previous_base_model_cid is not None:
        before = store.cat(ctx.previous_base_model_cid, max_bytes=limit, timeout=cfg.fetch_timeout)
    return RoundInputs(
        context=ctx, updates=tuple(updates), previous_updates=tuple(previous), base_model=base,
        previous_base_model=before, valset=valset, validation_cid=validation_cid,
    )

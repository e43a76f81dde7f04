"""Every byte a round reads from the content store, fetched in one place (`gather_inputs`).

What comes back is a `RoundInputs`: the context, this round's revealed updates (bytes verified
against their revealed sha256, or the reason there are none), the previous round's updates of
the same trainers (the free-rider reference), the base model and the model before it (the last
global step), and the validation set. From there on the round is a pure function
(`compute.compute_from_inputs`); an in-memory simulation builds `RoundInputs` itself.

A malformed or missing update never stops a round: content failures become reasons. Only an
outage (`StorageUnavailable`: the node does not answer at all) raises, so the service can pause.

In a project whose spec names recipients, every update is an envelope
(`market.protocol.envelope`): its sha256 is checked against the revealed digest as fetched, then
it is opened with the reader's keys (`RoundContext.decryption_keys`); an envelope that is not
sealed for exactly the spec's recipients, or does not open, is rejected with the envelope's own
reason (`malformed_envelope`, `not_recipient`, `undecryptable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from aggregator.errors import SettingsError
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
    UpdateRejected,
)
from market.protocol.documents import UpdateInput
from market.storage import fetch_verified

__all__ = ["Fetched", "RoundInputs", "UpdateCache", "digest_of", "fetch_updates", "gather_inputs", "open_fetched"]


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
    #: `data` is the plaintext opened from an envelope whose bytes matched the revealed digest
    #: (so the digest is not checked again on `data`).
    opened: bool = False


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


def open_fetched(fetched: Sequence[Fetched], ctx: RoundContext, round_: int) -> list[Fetched]:
    """Open the envelopes of round `round_` of an encrypted project with the reader's keys (the
    fetched bytes as they are in a plaintext project). A reader without keys cannot build such a
    round: SettingsError, never a round of rejections."""
    spec = ctx.spec
    if not spec.encrypted:
        return list(fetched)
    if not ctx.decryption_keys:
        raise SettingsError(
            f"project {ctx.project_id}'s updates are encrypted and no decryption key was given: pass the recipient's"
            " --account (its keystore encryption key), or see docs/privacy.md for --dev-account"
        )
    from market.protocol.envelope import EnvelopeContext, open_update

    recipients = spec.recipient_keys()
    out = []
    for f in fetched:
        if f.data is None:
            out.append(f)
            continue
        envelope_ctx = EnvelopeContext(ctx.project_id, round_, f.input.trainer)
        try:
            plain = open_update(f.data, ctx.decryption_keys, envelope_ctx, recipients,
                                max_bytes=spec.validation.max_update_bytes)
        except UpdateRejected as exc:
            # the record must not depend on which recipient opened it (an auditor rebuilds it with
            # its own key), and a failed wrap names the recipient: say what every reader sees
            detail = exc.detail if exc.reason != "undecryptable" else (
                f"the envelope does not open for {envelope_ctx.describe()}: it was sealed for another project, round"
                " or trainer, altered, or its wrapped key does not match its key commitment")
            out.append(replace(f, data=None, reason=exc.reason, detail=detail))
            continue
        out.append(replace(f, data=plain, opened=True))
    return out


def open_model_bytes(data: bytes, ctx: RoundContext, round_: int) -> bytes:
    """A base model as fetched, opened if it is round `round_`'s sealed model
    (`ProjectSpec.model_readers`; the initial weights stay as the owner published them). A reader
    who cannot open it cannot build the round: SettingsError."""
    from market.protocol.envelope import is_envelope, open_model

    if not ctx.spec.encrypts_models or round_ < 0 or not is_envelope(data):
        return data
    if not ctx.decryption_keys:
        raise SettingsError(
            f"project {ctx.project_id}'s global models are sealed and no decryption key was given: pass a recipient's"
            " --account (its keystore encryption key)"
        )
    try:
        return open_model(data, ctx.decryption_keys, ctx.project_id, round_, ctx.spec.model_reader_keys(),
                          max_bytes=2 * ctx.spec.validation.max_update_bytes + (1 << 20))
    except UpdateRejected as exc:
        raise SettingsError(
            f"the sealed model of project {ctx.project_id} round {round_} does not open with this key ({exc.detail}):"
            " use a key the spec names, or dispute the round"
        ) from None


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
    trainers = {u.trainer.lower() for u in ctx.inputs}
    wanted = [u for u in ctx.previous_inputs if u.trainer.lower() in trainers]
    limit = base_model_limit(ctx)
    # The base models and the previous updates (journal hits, mostly) load beside this round's
    # updates: the round waits for the slowest of them, not for their sum.
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="gather") as side:
        base_f = side.submit(store.cat, ctx.base_model_cid, max_bytes=limit, timeout=cfg.fetch_timeout)
        before_f = None if ctx.previous_base_model_cid is None else side.submit(
            store.cat, ctx.previous_base_model_cid, max_bytes=limit, timeout=cfg.fetch_timeout)
        previous_f = None if not wanted or ctx.previous_base_model_cid is None else side.submit(
            fetch_updates, store, wanted, max_bytes=policy.max_update_bytes, workers=cfg.fetch_workers,
            timeout=cfg.fetch_timeout, attempts=1, cache=cache)
        fetched = fetch_updates(
            store, ctx.inputs, max_bytes=policy.max_update_bytes, workers=cfg.fetch_workers,
            timeout=cfg.fetch_timeout, attempts=cfg.fetch_attempts, cache=cache,
        )
        previous_fetched = previous_f.result() if previous_f is not None else []
        base = base_f.result()
        before = before_f.result() if before_f is not None else None
    updates = open_fetched(fetched, ctx, ctx.round)
    previous = open_fetched(previous_fetched, ctx, ctx.round - 1) if previous_fetched else []
    # round r trains on round r-1's model, the model before it is round r-2's
    base = open_model_bytes(base, ctx, ctx.round - 1)
    before = None if before is None else open_model_bytes(before, ctx, ctx.round - 2)
    return RoundInputs(
        context=ctx, updates=tuple(updates), previous_updates=tuple(previous), base_model=base,
        previous_base_model=before, valset=valset, validation_cid=validation_cid,
    )

"""Reading a project's protocol state from chain + content store: the spec, each round's base
model and hyper-parameters, records, and which rounds are settled. Used alike by trainers, the
aggregator and auditors, so they can never disagree about what a round was built on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from market.chain import Finalized, MarketClient, RoundStatus
from market.errors import ProtocolError
from market.protocol.documents import ProjectSpec, RoundRecord

SPEC_MAX_BYTES = 1_000_000
RECORD_MAX_BYTES = 50_000_000


class ReadableStore(Protocol):
    def cat(self, cid: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes: ...


def load_spec(client: MarketClient, store: ReadableStore, project_id: int) -> ProjectSpec:
    created = client.project_created(project_id)
    return ProjectSpec.from_bytes(store.cat(created.spec_cid, max_bytes=SPEC_MAX_BYTES))


def load_record(store: ReadableStore, cid: str) -> RoundRecord:
    return RoundRecord.from_bytes(store.cat(cid, max_bytes=RECORD_MAX_BYTES))


@dataclass(frozen=True)
class RoundBase:
    """What round `round` trains from."""

    round: int
    model_cid: str
    hyperparams: dict[str, Any]
    previous: Finalized | None


def round_base(
    client: MarketClient, store: ReadableStore, project_id: int, round_: int, spec: ProjectSpec | None = None
) -> RoundBase:
    """Round 0 starts from the spec's initial weights; round r from round r-1's model, with the
    hyper-parameters round r-1's record published."""
    spec = spec or load_spec(client, store, project_id)
    if round_ == 0:
        if not spec.model.initial_weights_cid:
            raise ProtocolError(f"project {project_id}'s spec names no initial weights CID: the owner must publish them")
        return RoundBase(0, spec.model.initial_weights_cid, dict(spec.hyperparams), None)
    finalized = {f.round: f for f in client.finalized(project_id)}
    prev = finalized.get(round_ - 1)
    if prev is None:
        raise ProtocolError(f"round {round_ - 1} of project {project_id} is not finalized: round {round_} has not opened")
    record = load_record(store, prev.record_cid)
    return RoundBase(round_, prev.model_cid, dict(record.hyperparams), prev)


def is_settled(client: MarketClient, project_id: int, round_: int, now: int) -> bool:
    """Whether round `round_` is final and claimable at block `now`: finalized (possibly disputed,
    dismissed or corrected) and past the contract's `settlesAfter` (the challenge window, and the
    ruling deadline of any dispute opened in it)."""
    r = client.round(project_id, round_)
    if r.status in (RoundStatus.NONE, RoundStatus.EXPIRED, RoundStatus.VOIDED):
        return False
    return now > client.settles_after(project_id, round_)

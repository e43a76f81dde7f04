"""Reading a project's protocol state from chain + content store: the spec, each round's base
model and hyper-parameters, records, and which rounds are settled. Used alike by trainers, the
aggregator and auditors, so they can never disagree about what a round was built on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from market.chain import DisputeStatus, Finalized, MarketClient, RoundStatus
from market.errors import ProtocolError, StorageError
from market.protocol.documents import ProjectSpec, RoundRecord

SPEC_MAX_BYTES = 1_000_000
RECORD_MAX_BYTES = 50_000_000


class ReadableStore(Protocol):
    def cat(self, cid: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes: ...


def correction_of(client: MarketClient, store: ReadableStore, finalized: Finalized, root: bytes) -> tuple[str, bytes, RoundRecord]:
    """The corrected record of round `finalized.round` whose rewards root on chain is now `root`
    (an upheld dispute replaced the finalized one): the record the round's latest upheld ruling
    names as its reasonCID (`market resolve --record`), checked to be this round's and to declare
    that root. Returns (CID, bytes, record). A store that is away raises its own (retryable) error;
    anything else that is missing or does not match is a ProtocolError."""
    pid, r = finalized.project_id, finalized.round
    upheld = [d for d in client.rulings(pid) if d.round == r and d.outcome == DisputeStatus.UPHELD]
    if not upheld or not upheld[-1].reason_cid:
        raise ProtocolError(
            f"round {r}'s rewards root was corrected to 0x{root.hex()} but no upheld ruling names a corrected record:"
            " the arbiter must uphold with `market resolve --record CID`"
        )
    cid = upheld[-1].reason_cid
    data = store.cat(cid, max_bytes=RECORD_MAX_BYTES)
    try:
        record = RoundRecord.from_bytes(data)
    except StorageError as exc:  # it was read: what is wrong is the document, not the store
        raise ProtocolError(f"round {r}'s correction {cid} (the ruling's reasonCID) is not a round record: {exc}") from exc
    if (record.project_id, record.round) != (pid, r) or record.rewards_root.lower().removeprefix("0x") != root.hex():
        raise ProtocolError(
            f"round {r}'s correction {cid} is the record of project {record.project_id} round {record.round} with root"
            f" {record.rewards_root}, not round {r}'s corrected record with root 0x{root.hex()}: ask the arbiter for it"
        )
    return cid, data, record


def paying_record(client: MarketClient, store: ReadableStore, finalized: Finalized) -> RoundRecord:
    """The record round `finalized.round` pays by, and so the cumulative amounts the next round
    builds on: the finalized record, or its correction when an upheld dispute replaced the root."""
    root = client.round(finalized.project_id, finalized.round).rewards_root
    if root.lower().removeprefix("0x") == finalized.rewards_root.hex():
        return load_record(store, finalized.record_cid)
    return correction_of(client, store, finalized, bytes.fromhex(root.removeprefix("0x")))[2]


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

"""Publishing a computed round: the model, then the record naming the model's CID."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aggregator.round.compute import Computed
from aggregator.round.context import ReadStore
from market.protocol.documents import RoundRecord

__all__ = ["Published", "WriteStore", "publish_round"]


@dataclass(frozen=True)
class Published:
    model_cid: str
    record_cid: str
    record_bytes: bytes
    record: RoundRecord


class WriteStore(ReadStore, Protocol):
    def add(self, data: bytes) -> str: ...


def publish_round(store: WriteStore, computed: Computed) -> Published:
    """Add (and so pin) the model, then the record naming the model's CID. Same bytes, same CIDs:
    publishing again after a restart changes nothing, except for a sealed model
    (`Computed.published_model`), whose envelope is new each time; the record names the one added."""
    model_cid = store.add(computed.published_model())
    record = computed.record(model_cid)
    data = record.to_bytes()
    record_cid = store.add(data)
    return Published(model_cid, record_cid, data, record)

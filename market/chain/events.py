"""A paged reader of the market's event log, from the deployment block on, with a cursor.

`MarketClient`'s event helpers ask the node for one event kind from block 0 to `latest` in one
`eth_getLogs` call. A viewer that follows many projects over a long history needs the opposite:
every event of the contract, read once, in block pages a node will answer (public nodes cap a
`getLogs` range or its result count), then only what is new. `LogReader.poll()` does that and
remembers where it stopped; `LogReader.cursor` can be saved and given back to resume.

Logs are fetched with the provider's raw `eth_getLogs` and decoded here with eth-abi from the
ABI, rather than through web3's result formatters and per-log `process_log`, which are an order
of magnitude slower on histories of tens of thousands of logs.
A page that fails (node down, range too large) raises ChainError and leaves the cursor at the
first block not yet read, so the next poll retries it; a page the node refuses as too large is
split in two before giving up.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from eth_abi import decode
from eth_utils import event_abi_to_log_topic, to_checksum_address
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint

from market.errors import ChainError

__all__ = ["DEFAULT_PAGE", "ChainEvent", "EventDecoder", "LogReader", "topic_filter"]

#: Blocks per `eth_getLogs` call: what common public nodes accept (many cap ranges at 2k-10k).
DEFAULT_PAGE = 2_000
_MIN_PAGE = 16


@dataclass(frozen=True)
class ChainEvent:
    """One decoded log: the event's name, its arguments by name, and where it was emitted."""

    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int
    tx_hash: str

    @property
    def project_id(self) -> int | None:
        value = self.args.get("projectId")
        return int(value) if value is not None else None


def _type_of(param: dict[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(_type_of(c) for c in param["components"]) + ")" + kind[len("tuple"):]
    return kind


@functools.lru_cache(maxsize=65_536)
def _checksum(address: str) -> str:
    # keccak per call: a history names the same few hundred addresses tens of thousands of times
    return str(to_checksum_address(address))


def _named(param: dict[str, Any], value: Any) -> Any:
    kind = str(param["type"])
    if kind == "tuple":
        return {c["name"]: _named(c, v) for c, v in zip(param["components"], value, strict=True)}
    if kind == "address":
        return _checksum(value)
    return value


def _topic(param: dict[str, Any], topic: bytes) -> Any:
    """An indexed argument: one 32-byte word for value types (eth-abi only for the rest)."""
    kind = str(param["type"])
    if kind.startswith("uint"):
        return int.from_bytes(topic, "big")
    if kind == "address":
        return _checksum("0x" + topic[12:].hex())
    if kind == "bool":
        return topic[-1] == 1
    if kind == "bytes32":
        return topic
    return _named(param, decode([_type_of(param)], topic)[0])


def _word(param: dict[str, Any], value: Any) -> str:
    """An indexed value-type argument as the 32-byte topic a log carries for it."""
    kind = str(param["type"])
    if kind.startswith(("uint", "int")):
        return "0x" + int(value).to_bytes(32, "big", signed=kind.startswith("int")).hex()
    if kind == "address":
        return "0x" + bytes(12).hex() + to_checksum_address(value)[2:].lower()
    if kind == "bool":
        return "0x" + int(bool(value)).to_bytes(32, "big").hex()
    if kind == "bytes32":
        return "0x" + _bytes(value).hex()
    raise ValueError(f"cannot filter on indexed {kind} argument {param['name']!r}: filter on value types only")


def topic_filter(abi: Iterable[dict[str, Any]], events: str | Iterable[str], **args: Any) -> list[Any]:
    """The `topics` of an `eth_getLogs` query for `events` (one name, or several sharing the
    filtered arguments) whose indexed arguments equal `args`: the node filters, so a reader gets
    only the logs it asked for instead of every log of the contract."""
    names = [events] if isinstance(events, str) else list(events)
    by_name = {str(e["name"]): e for e in abi if e.get("type") == "event"}
    topics: list[Any] = [["0x" + event_abi_to_log_topic(by_name[n]).hex() for n in names]]  # type: ignore[arg-type]
    indexed = [p for p in by_name[names[0]]["inputs"] if p["indexed"]]
    unknown = set(args) - {p["name"] for p in indexed}
    if unknown:
        raise ValueError(f"{names[0]} has no indexed argument {', '.join(sorted(unknown))}")
    last = max((i for i, p in enumerate(indexed) if p["name"] in args), default=-1)
    wanted = [p["name"] for p in indexed[:last + 1]]
    for n in names[1:]:
        if [p["name"] for p in by_name[n]["inputs"] if p["indexed"]][:last + 1] != wanted:
            raise ValueError(f"events {names} do not index {sorted(args)} in the same positions")
    for p in indexed[:last + 1]:
        topics.append(_word(p, args[p["name"]]) if p["name"] in args else None)
    return topics


@dataclass(frozen=True)
class _Event:
    name: str
    indexed: list[dict[str, Any]]
    plain: list[dict[str, Any]]
    plain_types: list[str]


class EventDecoder:
    """Decodes the logs of one contract ABI by their first topic."""

    def __init__(self, abi: Iterable[dict[str, Any]]):
        self._events: dict[bytes, _Event] = {}
        for e in abi:
            if e.get("type") == "event":
                plain = [p for p in e["inputs"] if not p["indexed"]]
                self._events[event_abi_to_log_topic(e)] = _Event(  # type: ignore[arg-type]
                    str(e["name"]), [p for p in e["inputs"] if p["indexed"]], plain, [_type_of(p) for p in plain])

    def decode(self, log: dict[str, Any]) -> ChainEvent | None:
        """The event in `log` (raw JSON-RPC or web3-formatted), or None for a log of an event the
        ABI does not declare."""
        topics = [_bytes(t) for t in log["topics"]]
        if not topics or topics[0] not in self._events:
            return None
        ev = self._events[topics[0]]
        args: dict[str, Any] = {}
        for p, topic in zip(ev.indexed, topics[1:], strict=True):
            args[p["name"]] = _topic(p, topic)
        if ev.plain:
            for p, v in zip(ev.plain, decode(ev.plain_types, _bytes(log["data"])), strict=True):
                args[p["name"]] = _named(p, v)
        tx = log["transactionHash"]
        return ChainEvent(
            ev.name, args, _int(log["blockNumber"]), _int(log["logIndex"]),
            tx if isinstance(tx, str) else "0x" + bytes(tx).hex(),
        )


def _bytes(value: Any) -> bytes:
    return bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


@dataclass
class LogReader:
    """Every log of `address` from `start_block` on, read in pages of `page` blocks.

    `cursor` is the first block not read yet. `confirmations` holds back the newest blocks (0 on
    local chains; a few on chains that reorganise). `topics` (from `topic_filter`) narrows the
    logs to some events and arguments; empty: every log of the contract.
    """

    w3: Web3
    address: str
    abi: list[dict[str, Any]]
    start_block: int = 0
    page: int = DEFAULT_PAGE
    confirmations: int = 0
    topics: list[Any] = field(default_factory=list)
    cursor: int = field(init=False)

    def __post_init__(self) -> None:
        if self.page < 1 or self.start_block < 0 or self.confirmations < 0:
            raise ValueError("LogReader needs page >= 1, start_block >= 0 and confirmations >= 0")
        self.cursor = self.start_block
        self._address = to_checksum_address(self.address)
        self._decoder = EventDecoder(self.abi)

    def head(self) -> int:
        """The newest block this reader will read up to."""
        try:
            return int(self.w3.eth.block_number) - self.confirmations
        except Exception as exc:  # connection refused, timeouts: the node is away
            raise ChainError(f"reading the block number failed ({type(exc).__name__}): is the node up?") from exc

    def read_to_latest(self) -> list[ChainEvent]:
        """Everything from the cursor to the node's newest block in one `eth_getLogs` call, without
        asking for the head first: for a local chain (no paging, no confirmations). The cursor
        does not move."""
        return self._decoded(self._get(self.cursor, None))

    def _decoded(self, logs: list[Any]) -> list[ChainEvent]:
        events = [e for e in (self._decoder.decode(dict(log)) for log in logs) if e is not None]
        events.sort(key=lambda e: (e.block_number, e.log_index))
        return events

    def poll(self, to_block: int | None = None) -> list[ChainEvent]:
        """Everything emitted from the cursor up to `to_block` (default: the head), in order."""
        return list(self.iter_new(to_block))

    def iter_new(self, to_block: int | None = None) -> Iterator[ChainEvent]:
        """Like `poll`, page by page: the cursor advances after each page is yielded in full."""
        end = self.head() if to_block is None else to_block
        while self.cursor <= end:
            last = min(end, self.cursor + self.page - 1)
            yield from self._decoded(self._get(self.cursor, last))
            self.cursor = last + 1

    def _get(self, first: int, last: int | None) -> list[Any]:
        """Logs of blocks `first`..`last` (None: the newest block)."""
        try:
            narrow = {"topics": self.topics} if self.topics else {}
            if not isinstance(self.w3.provider, HTTPProvider):  # the in-process eth-tester chain
                return list(self.w3.eth.get_logs(
                    {"address": self._address, "fromBlock": first, "toBlock": "latest" if last is None else last,
                     **narrow}))  # type: ignore[typeddict-item]
            # the raw call: web3's result formatters cost more than decoding itself on long histories
            to = "latest" if last is None else hex(last)
            query = {"address": self._address, "fromBlock": hex(first), "toBlock": to, **narrow}
            answer = self.w3.provider.make_request(RPCEndpoint("eth_getLogs"), [query])
            if "error" in answer:
                raise ChainError(f"eth_getLogs: {answer['error']}")
            return list(answer["result"])
        except Exception as exc:
            if last is not None and last - first + 1 > _MIN_PAGE and _too_large(exc):
                middle = (first + last) // 2
                return self._get(first, middle) + self._get(middle + 1, last)
            raise ChainError(
                f"reading logs of blocks {first}-{'latest' if last is None else last} failed"
                f" ({type(exc).__name__}: {exc}): "
                f"is the node up? the reader retries from block {first} on the next poll"
            ) from exc


def _too_large(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("too many", "range", "limit", "exceed", "too large"))

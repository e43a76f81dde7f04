"""The dashboard's live state: connections to the chain and the content store (opened lazily,
reopened after an outage), the event index kept current by a background follower, and a cache of
round records.

Everything addressed by a CID is immutable, so records are cached by CID for the life of the
process (a bounded LRU for whole records, summaries kept for good): a 100-round history is read
from IPFS once. Failures are never cached: a record that could not be fetched is retried on the
next request.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashboard.index import EventIndex
from market._text import one_line
from market.chain import MarketClient, ProjectInfo, connect
from market.chain.deployment import Deployment
from market.chain.events import DEFAULT_PAGE, LogReader
from market.errors import ChainError, ContentNotFound, InvalidCid, MarketError, StorageError
from market.protocol.documents import RoundRecord
from market.protocol.reading import load_record
from market.storage import Store, open_store

__all__ = ["Dashboard", "DashboardConfig", "Health", "RecordSummary"]

log = logging.getLogger("dashboard")

#: getProject fields that never change after createProject
_FIXED = frozenset({"commit_window", "reveal_window", "challenge_window", "finalize_window", "rule_window",
                    "claim_window", "num_rounds", "reward_per_round", "stake", "dispute_bond", "commit_deposit",
                    "aggregator_bond", "budget", "token"})


@dataclass(frozen=True)
class DashboardConfig:
    rpc: str
    deployment: Path
    ipfs: str
    poll: float = 1.0
    page: int = DEFAULT_PAGE
    #: Seconds to wait for IPFS: a dead node must not hold a page for the store's full retry schedule.
    ipfs_timeout: float = 5.0
    record_cache: int = 512



@dataclass
class Health:
    """Whether the chain and the store answered last time, and why not."""

    chain_ok: bool = False
    chain_error: str | None = "not connected yet"
    ipfs_ok: bool = True
    ipfs_error: str | None = None
    head: int | None = None
    synced_at: float | None = None

    @property
    def ok(self) -> bool:
        return self.chain_ok and self.ipfs_ok


@dataclass(frozen=True)
class RecordSummary:
    """What the project pages need from a round record (small enough to keep for every round)."""

    round: int
    accuracy: float | None
    accepted: int
    rejected: int
    reasons: dict[str, int]
    rewards: dict[str, int]
    cumulative_rewards: dict[str, int]
    scores: dict[str, float]
    cumulative_scores: dict[str, float]
    #: trainer -> None when accepted, else the rejection code
    verdicts: dict[str, str | None]

    @classmethod
    def of(cls, record: RoundRecord) -> RecordSummary:
        reasons: dict[str, int] = {}
        for v in record.verdicts:
            if not v.accepted:
                code = (v.reason or "?").split(":")[0]
                reasons[code] = reasons.get(code, 0) + 1
        acc = record.metrics.get("accuracy_after", record.metrics.get("accuracy"))
        accepted = sum(1 for v in record.verdicts if v.accepted)
        return cls(record.round, float(acc) if acc is not None else None, accepted, len(record.verdicts) - accepted,
                   reasons, dict(record.rewards), dict(record.cumulative_rewards), dict(record.scores),
                   dict(record.cumulative_scores),
                   {v.trainer: None if v.accepted else (v.reason or "?").split(":")[0] for v in record.verdicts})


@dataclass
class _Conn:
    client: MarketClient
    deployment: Deployment


@dataclass
class Dashboard:
    config: DashboardConfig
    health: Health = field(default_factory=Health)
    index: EventIndex = field(default_factory=EventIndex)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._conn: _Conn | None = None
        self._reader: LogReader | None = None
        self._store: Store | None = None
        self._records: OrderedDict[str, RoundRecord] = OrderedDict()
        self._summaries: dict[str, RecordSummary] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._block_times: dict[int, int] = {}
        # ipfshttpclient warns per request (see aggregator.audit_cli); the store's own
        # catch_warnings is not thread-safe, and the dashboard fetches from many threads
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*'strict' parameter")

    # ------------------------------------------------------------------ connections

    def client(self) -> MarketClient:
        """The market client; raises ChainError (or DeploymentError) while the node is away."""
        with self.lock:
            if self._conn is None:
                dep = Deployment.load(self.config.deployment)
                w3 = connect(self.config.rpc, timeout=5.0)
                self._conn = _Conn(dep.client(w3), dep)
                self._reader = LogReader(w3, dep.address, self._conn.client.abi, start_block=dep.block_number,
                                         page=self.config.page)
                self.index = EventIndex()  # a new reader starts from the deployment block again
            return self._conn.client

    def store(self) -> Store:
        with self.lock:
            if self._store is None:
                if self.config.ipfs.startswith("embedded:"):
                    self._store = open_store(self.config.ipfs)
                else:
                    t = self.config.ipfs_timeout
                    self._store = open_store(self.config.ipfs, timeout=max(t, 10.0), find_timeout=t, retries=1,
                                             backoff=0.1)
            return self._store

    # ------------------------------------------------------------------ following the chain

    def sync(self) -> None:
        """Read new events into the index. Records the outcome in `health` instead of raising."""
        try:
            self.client()
            reader = self._reader
            if reader is None:  # client() sets it; a concurrent failure may have reset the connection
                return
            head = reader.head()
            with self.lock:
                if head < reader.cursor - 1:
                    # the chain went back (restarted without its state): check the deployment again
                    # and re-read the log from scratch
                    log.warning("chain head %d is behind the cursor %d: re-reading the log", head, reader.cursor)
                    self._conn, self._reader = None, None
                    self.index = EventIndex()
                    return
                for event in reader.iter_new(head):
                    self.index.apply(event)
                missing = [p for p in self.index.projects.values() if not p.params]
            for p in missing:  # fixed at creation: one view per project, ever
                info = self.client().project(p.project_id)
                with self.lock:
                    p.params = {k: v for k, v in info.to_json().items() if k in _FIXED}
            with self.lock:
                self.health.head = head
                self.health.chain_ok, self.health.chain_error = True, None
                self.health.synced_at = time.time()
        except MarketError as exc:
            self._chain_down(exc)
        self._warm_records()

    def _chain_down(self, exc: BaseException) -> None:
        with self.lock:
            if self.health.chain_ok or self.health.chain_error != one_line(exc):
                log.warning("chain: %s", one_line(exc))
            self.health.chain_ok, self.health.chain_error = False, one_line(exc)
            if not isinstance(exc, ChainError):  # a deployment problem: reconnect from scratch next time
                self._conn = None

    def _warm_records(self) -> None:
        """Fetch the records of newly finalized rounds, so pages never wait for IPFS on a hot path."""
        with self.lock:
            cids = [r.finalized.record_cid for p in self.index.projects.values() for r in p.rounds.values()
                    if r.finalized is not None and r.finalized.record_cid not in self._summaries]
        for cid in cids:
            if self._stop.is_set() or self.summary(cid) is None:
                break

    def start(self) -> None:
        """Follow the chain in a background thread every `config.poll` seconds."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="dashboard-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sync()
            self._stop.wait(self.config.poll)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self.lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    # ------------------------------------------------------------------ reads

    def project_info(self, project_id: int) -> ProjectInfo:
        try:
            info = self.client().project(project_id)
        except ChainError as exc:
            self._chain_down(exc)
            raise
        return info

    def record(self, cid: str) -> RoundRecord:
        """The round record at `cid` (cached); raises StorageError (and marks IPFS down) on failure."""
        with self.lock:
            hit = self._records.get(cid)
            if hit is not None:
                self._records.move_to_end(cid)
                return hit
        try:
            record = load_record(self.store(), cid)
        except StorageError as exc:
            self._ipfs_state(exc)
            raise
        self._ipfs_state(None)
        with self.lock:
            self._records[cid] = record
            while len(self._records) > self.config.record_cache:
                self._records.popitem(last=False)
            self._summaries.setdefault(cid, RecordSummary.of(record))
        return record

    def summary(self, cid: str) -> RecordSummary | None:
        """The record's summary, or None while it cannot be fetched (the reason is in `health`)."""
        with self.lock:
            hit = self._summaries.get(cid)
        if hit is not None:
            return hit
        try:
            return RecordSummary.of(self.record(cid))
        except MarketError:
            return None

    def cat(self, cid: str, max_bytes: int) -> bytes:
        try:
            data = self.store().cat(cid, max_bytes=max_bytes, timeout=self.config.ipfs_timeout)
        except StorageError as exc:
            self._ipfs_state(exc)
            raise
        self._ipfs_state(None)
        return data

    def check_ipfs(self) -> None:
        """Ask the store whether it answers (for the status endpoint)."""
        try:
            version: Callable[[], Any] | None = getattr(self.store(), "version", None)
            if version is not None:
                version()
        except MarketError as exc:
            self._ipfs_state(exc)
            return
        self._ipfs_state(None)

    def _ipfs_state(self, exc: BaseException | None) -> None:
        if isinstance(exc, (ContentNotFound, InvalidCid)):
            return  # the node answered: a missing record is the record's problem, not the node's
        with self.lock:
            self.health.ipfs_ok = exc is None
            self.health.ipfs_error = None if exc is None else one_line(exc)

    def block_time(self, block: int) -> int | None:
        """The timestamp of `block` (cached: a mined block's time never changes)."""
        if block in self._block_times:
            return self._block_times[block]
        try:
            ts = int(self.client().w3.eth.get_block(block)["timestamp"])
        except Exception:  # noqa: BLE001 - only an estimate; pages show blocks without it
            return None
        self._block_times[block] = ts
        return ts

    def seconds_per_block(self) -> float | None:
        """Recent average block interval, for "time left" estimates (None on an automining chain
        that has not mined recently)."""
        head = self.health.head
        if head is None or head < 2:
            return None
        back = max(0, head - 20)
        t1, t0 = self.block_time(head), self.block_time(back)
        if t1 is None or t0 is None or t1 <= t0:
            return None
        return (t1 - t0) / (head - back)

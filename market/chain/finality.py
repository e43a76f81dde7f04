"""Reading the event log of a chain that reorganises: only buried blocks, and re-reading on a fork.

`LogReader` reads up to head - confirmations, so a reorg shallower than the profile's
confirmations never reaches a reader. A deeper one (an L2 sequencer replaying its unsafe head, an
L1 reorg past the depth chosen) would leave the reader holding events of blocks that no longer
exist. `ReorgAwareReader` remembers the hash of the last block each poll read; before reading on,
it asks the node for that block again. A different hash means the chain forked under what was
read: it walks back through the hashes it remembers to the newest block still on the chain,
rewinds the cursor to the block after it, re-reads from there, and says so (`Batch.reorg_from`):
every event the caller got from that block on is void and the batch holds their replacements.

A block hash commits to its parent's, so one matching hash vouches for every block before it;
remembering one hash per poll is enough. The hash of the last block is taken before and after
each read: if the chain moved during the read, the read is repeated.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from web3.exceptions import BlockNotFound

from market.chain.events import ChainEvent, LogReader
from market.errors import ChainError

if TYPE_CHECKING:
    from web3 import Web3

    from market.chain.profiles import ChainProfile

__all__ = ["Batch", "ReorgAwareReader"]

#: Reads repeated when the chain moves under one before giving up for this poll.
_RETRIES = 3


@dataclass(frozen=True)
class Batch:
    """What one poll read. `reorg_from` is set when the chain forked under earlier reads: drop every
    event received before from that block on; `events` already holds what replaced them."""

    events: list[ChainEvent]
    reorg_from: int | None = None


class ReorgAwareReader:
    """A `LogReader` that notices forks under what it read (see the module docstring).

    `window` is how many polls' last-block hashes are kept: a fork older than all of them rewinds
    to the reader's start block (everything is read again; `reorg_from` says so).
    """

    def __init__(self, reader: LogReader, *, window: int = 256):
        if window < 1:
            raise ValueError("ReorgAwareReader needs window >= 1")
        self.reader = reader
        self.window = window
        self._seen: OrderedDict[int, bytes] = OrderedDict()  # block number -> hash, oldest first

    @classmethod
    def for_profile(
        cls, w3: Web3, address: str, abi: list[dict[str, Any]], profile: ChainProfile, start_block: int = 0
    ) -> ReorgAwareReader:
        """A reader paged and held back as `profile` says."""
        return cls(LogReader(w3, address, abi, start_block=start_block, page=profile.log_page_size,
                             confirmations=profile.confirmations))

    @property
    def cursor(self) -> int:
        return self.reader.cursor

    def poll(self) -> Batch:
        """Everything new up to head - confirmations, after re-checking what was read before."""
        reorg_from = self._check_fork()
        for _ in range(_RETRIES):
            end = self.reader.head()
            if end < self.reader.cursor:
                return Batch([], reorg_from)
            start = self.reader.cursor
            before = self._hash(end)
            events = self.reader.poll(to_block=end)
            if before is not None and self._hash(end) == before:
                self._remember(end, before)
                return Batch(events, reorg_from)
            self.reader.cursor = start  # the chain moved during the read: its events may mix forks
        raise ChainError(
            f"the chain reorganised during each of {_RETRIES} reads from block {self.reader.cursor}:"
            " the node is unstable; poll again later"
        )

    def _check_fork(self) -> int | None:
        """The first block to re-read when the chain forked under remembered blocks, else None."""
        if not self._seen:
            return None
        newest = next(reversed(self._seen))
        if self._hash(newest) == self._seen[newest]:
            return None
        while self._seen:
            number, known = self._seen.popitem(last=True)
            if self._hash(number) == known:
                self._seen[number] = known
                fork = number + 1
                break
        else:
            fork = self.reader.start_block
        self.reader.cursor = fork
        return fork

    def _remember(self, number: int, block_hash: bytes) -> None:
        self._seen[number] = block_hash
        while len(self._seen) > self.window:
            self._seen.popitem(last=False)

    def _hash(self, number: int) -> bytes | None:
        try:
            block = self.reader.w3.eth.get_block(number)
        except BlockNotFound:  # the chain got shorter than what was read: that block is gone
            return None
        except Exception as exc:  # connection refused, timeouts: the node is away
            raise ChainError(f"reading block {number} failed ({type(exc).__name__}): is the node up?") from exc
        return bytes(block["hash"])

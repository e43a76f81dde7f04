"""A deterministic, portable random stream for auditable scoring.

numpy's and Python's generators promise stable streams only for some methods and versions; an
auditor re-running a round years later, maybe in another language, needs the exact same
permutations. This stream is SHA-256 in counter mode over the seed, so it is specified in one
line: block k = sha256(seed as 32-byte big-endian || k as 8-byte big-endian), read as four
64-bit big-endian words. Integers below a bound use rejection sampling (no modulo bias), and
shuffles are Fisher-Yates from the last position down.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableSequence
from typing import TypeVar

T = TypeVar("T")

_MASK256 = (1 << 256) - 1


class DeterministicRNG:
    """SHA-256 counter-mode stream of 64-bit words seeded by a non-negative int (< 2**256)."""

    def __init__(self, seed: int):
        if seed < 0:
            raise ValueError("seed must be non-negative")
        self._seed = (seed & _MASK256).to_bytes(32, "big")
        self._counter = 0
        self._words: list[int] = []

    def _next_word(self) -> int:
        if not self._words:
            block = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
            self._words = [int.from_bytes(block[i : i + 8], "big") for i in (24, 16, 8, 0)]
        return self._words.pop()

    def below(self, bound: int) -> int:
        """A uniform integer in [0, bound)."""
        if bound <= 0:
            raise ValueError("bound must be positive")
        if bound == 1:
            return 0
        limit = (1 << 64) - ((1 << 64) % bound)
        while True:
            w = self._next_word()
            if w < limit:
                return w % bound

    def shuffle(self, items: MutableSequence[T]) -> None:
        """Fisher-Yates in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]

"""Splitting (target, probe) pairs across replicas.

Rendezvous (highest-random-weight) hashing: each pair goes to the shard with
the highest hash of (pair, shard). Going from N to N+1 replicas moves only the
~1/(N+1) of pairs the new shard wins; modulo hashing would move most of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``INDEX/COUNT`` with 0 <= INDEX < COUNT."""
        try:
            index_text, count_text = text.split("/")
            index, count = int(index_text), int(count_text)
        except ValueError:
            raise ValueError(f"shard must be INDEX/COUNT such as 0/3, got {text!r}") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard index must be in 0..{count - 1}, got {text!r}")
        return cls(index, count)

    def owns(self, target: str, probe: str) -> bool:
        return self.count == 1 or owner(target, probe, self.count) == self.index


def _weight(target: str, probe: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{target}\0{probe}\0{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(target: str, probe: str, count: int) -> int:
    """The shard index that owns a pair among ``count`` replicas."""
    return max(range(count), key=lambda shard: _weight(target, probe, shard))

"""The one interface rate limits and login throttles keep their counters behind.

Two backends implement it: ``InProcessStore`` (``memory.py``, one process) and ``RedisStore``
(``redis_store.py``, shared by every API process). Both keep two kinds of state per key:

- a token bucket: ``take`` removes one token, refilled at ``rate`` per second up to ``capacity``;
- a failure record for the login throttle: after ``Backoff.free_failures`` failures each further one blocks
  the key for 1 s, then 2, 4, ... up to ``Backoff.max_block`` seconds; a quiet ``Backoff.memory`` forgets it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = ["Bucket", "Backoff", "LimitStore"]


@dataclass(frozen=True)
class Bucket:
    rate: float  # tokens added per second
    capacity: float  # most tokens held: the burst a caller may send at once

    @property
    def full_after(self) -> float:
        """Seconds an untouched bucket takes to fill up from empty: after that its state can be forgotten."""
        return self.capacity / self.rate


@dataclass(frozen=True)
class Backoff:
    free_failures: int = 5
    first_block: float = 1.0
    max_block: float = 15 * 60.0
    memory: float = 24 * 3600.0

    def block_after(self, failures: int) -> float:
        """Seconds a key is blocked after its ``failures``-th failure in a row (0: not blocked)."""
        if failures < self.free_failures:
            return 0.0
        # The exponent is capped so that a long attack cannot overflow the float.
        return min(self.first_block * 2.0 ** min(failures - self.free_failures, 40), self.max_block)


class LimitStore(ABC):
    @abstractmethod
    async def take(self, key: str, bucket: Bucket) -> float:
        """Take one token from ``key``'s bucket: 0.0 when taken, else the seconds until one is there."""

    @abstractmethod
    async def blocked_for(self, key: str) -> float:
        """Seconds the key's failures still block it (0.0: not blocked)."""

    @abstractmethod
    async def add_failure(self, key: str, backoff: Backoff) -> None:
        """Count one more failure of ``key`` and block it as ``backoff`` says."""

    @abstractmethod
    async def clear_failures(self, key: str) -> None:
        """Forget the key's failures (a success)."""

    @abstractmethod
    async def close(self) -> None:
        """Release what the store holds (connections)."""

"""``InProcessStore``: buckets and failure records in this process's memory (the embedded default).

Thread-safe (one lock; every operation is a few arithmetic steps). Memory stays bounded: a bucket that has
filled up again is no different from a new one and is dropped, and failure records are dropped after a
quiet ``Backoff.memory`` or, past ``max_keys``, oldest first (an attacker can invent any number of names).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from comfygate.platform.limits.store import Backoff, Bucket, LimitStore

__all__ = ["InProcessStore"]

SWEEP_SECONDS = 30.0


@dataclass
class _BucketState:
    tokens: float
    at: float
    full_at: float  # when the bucket will be full again if nobody takes from it


@dataclass
class _Failures:
    count: int
    blocked_until: float
    forget_at: float


class InProcessStore(LimitStore):
    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._buckets: dict[str, _BucketState] = {}
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._next_sweep = time.monotonic() + SWEEP_SECONDS

    def take_now(self, key: str, bucket: Bucket) -> float:
        """``take`` without the coroutine: the Redis store falls back on it while Redis is away."""
        now = time.monotonic()
        with self._lock:
            self._sweep(now)
            state = self._buckets.get(key)
            tokens = bucket.capacity if state is None else min(bucket.capacity,
                                                               state.tokens + (now - state.at) * bucket.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / bucket.rate
            self._buckets[key] = _BucketState(tokens, now, now + (bucket.capacity - tokens) / bucket.rate)
            return wait

    def blocked_for_now(self, key: str) -> float:
        now = time.monotonic()
        with self._lock:
            record = self._failures.get(key)
            return max(0.0, record.blocked_until - now) if record is not None else 0.0

    def add_failure_now(self, key: str, backoff: Backoff) -> None:
        now = time.monotonic()
        with self._lock:
            record = self._failures.pop(key, None)
            if record is None or record.forget_at <= now:
                record = _Failures(0, 0.0, 0.0)
            record.count += 1
            record.blocked_until = now + backoff.block_after(record.count)
            record.forget_at = now + backoff.memory
            self._failures[key] = record  # to the end: the oldest records are dropped first
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def clear_failures_now(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    async def take(self, key: str, bucket: Bucket) -> float:
        return self.take_now(key, bucket)

    async def blocked_for(self, key: str) -> float:
        return self.blocked_for_now(key)

    async def add_failure(self, key: str, backoff: Backoff) -> None:
        self.add_failure_now(key, backoff)

    async def clear_failures(self, key: str) -> None:
        self.clear_failures_now(key)

    async def close(self) -> None:
        """Nothing to release: the counters go with the process."""

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        self._buckets = {key: state for key, state in self._buckets.items() if state.full_at > now}
        for key in [key for key, record in self._failures.items() if record.forget_at <= now]:
            del self._failures[key]

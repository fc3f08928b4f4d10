"""Recently verified API keys, so a client's every request does not cost a database round trip.

Only successful lookups are kept, keyed by a hash of the presented key, for ``ttl`` seconds: a key revoked
in the database stops working within that time on every server.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

from comfygate.platform.credentials import sha256_hex

__all__ = ["KeyCache"]

V = TypeVar("V")


class KeyCache(Generic[V]):
    def __init__(self, ttl: float = 5.0, max_entries: int = 4096) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, presented: str) -> V | None:
        digest = sha256_hex(presented)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        stored_at, value = entry
        if time.monotonic() - stored_at > self.ttl:
            del self._entries[digest]
            return None
        return value

    def put(self, presented: str, value: V) -> None:
        digest = sha256_hex(presented)
        self._entries[digest] = (time.monotonic(), value)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

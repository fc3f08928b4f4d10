"""The output cache an Executor keeps across runs: node outputs (and UI results) by cache key, LRU-bounded.

Keys come from :mod:`.cache_keys`. Entries are shared by every run that hits them, on any thread: node
functions must treat their inputs as read-only (as in ComfyUI).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CacheEntry", "OutputCache", "UiRecord"]


@dataclass(frozen=True)
class UiRecord:
    """One node's UI result (``{"images": [...], ...}``), kept so a cached node can hand it over again."""

    class_type: str
    ui: Mapping[str, Any]
    # None: the node that owns the cache entry. Otherwise the prompt node it belongs to: a record of an
    # expanded node, whose display node differs from the node that expanded.
    display_node: str | None = None


@dataclass(frozen=True)
class CacheEntry:
    outputs: tuple[list[Any], ...]  # one list per output slot, one item per list index
    ui: tuple[UiRecord, ...] = ()  # the node's own UI result, then those of nodes its expansion added


class OutputCache:
    """Thread-safe LRU map from cache key to CacheEntry, holding at most ``max_entries`` (0: caches nothing)."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError(f"cache_entries must be 0 or more, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: CacheEntry) -> None:
        with self._lock:
            if self.max_entries == 0:
                return
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

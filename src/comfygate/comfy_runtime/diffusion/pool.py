"""The warm model pool: loaded models shared by every run of a worker, kept within a memory budget.

A GPU host that reloads a checkpoint per request wastes 10-60 s each time, so models stay resident between runs
and are evicted only to make room, least recently used first, and never while a run is using them.

Everything stored must have an int ``size_bytes`` attribute (bytes it holds on its device; a bare
``torch.nn.Module`` without one is measured with :func:`~.memory.module_bytes`). Node values (MODEL, CLIP, VAE,
...) are small handles holding a pool key and a loader, never the only reference to the weights: eviction must
be able to drop them.

Run accounting: the executor opens :func:`load_timer` around each run; every load (or wait for another thread's
load of the same model) inside it adds its milliseconds there, so runs report model-load time apart from
execution time.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from comfygate.comfy_runtime.diffusion.memory import is_out_of_memory, module_bytes

__all__ = [
    "LoadTimer",
    "LoadedModel",
    "ModelPool",
    "PoolKey",
    "current_load_timer",
    "load_timer",
    "size_of",
]

log = logging.getLogger(__name__)

PoolKey = tuple[str, ...]  # e.g. ("checkpoint", "/abs/path.safetensors", "cuda:0", "float16"); any hashable works
T = TypeVar("T")


class LoadedModel(Protocol):
    """What the pool stores: anything that knows its own size."""

    size_bytes: int


class LoadTimer:
    """Model-load time of one run: ``ms`` in total and ``loads``, one ``{"key", "ms", "shared"}`` per load.

    ``shared`` is True when the run waited for a load another run had started instead of loading itself.
    Thread-safe: threads started with a copy of the run's context add to the same timer.
    """

    def __init__(self) -> None:
        self.ms = 0.0
        self.loads: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, key: Hashable, ms: float, shared: bool = False) -> None:
        with self._lock:
            self.ms += ms
            self.loads.append({"key": key, "ms": ms, "shared": shared})


_current_timer: ContextVar[LoadTimer | None] = ContextVar("comfygate_model_load_timer", default=None)


@contextlib.contextmanager
def load_timer() -> Iterator[LoadTimer]:
    """Count the model loads done in this context (this thread, or tasks/threads given a copy of it)."""
    timer = LoadTimer()
    token = _current_timer.set(timer)
    try:
        yield timer
    finally:
        _current_timer.reset(token)


def current_load_timer() -> LoadTimer | None:
    return _current_timer.get()


def size_of(value: Any) -> int:
    """``value.size_bytes``, or the bytes of a bare torch module; TypeError when neither is there."""
    size = getattr(value, "size_bytes", None)
    if isinstance(size, int) and not isinstance(size, bool):
        if size < 0:
            raise TypeError(f"{type(value).__name__}.size_bytes is negative ({size})")
        return size
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.nn.Module):
        return module_bytes(value)
    raise TypeError(f"objects stored in the model pool need an int size_bytes; {type(value).__name__} has none")


@dataclass(eq=False)
class _Entry:
    key: Hashable
    size_bytes: int  # the estimate while loading, the measured size after
    loader: int  # thread id of the loading thread (detects a load that asks for itself)
    value: Any = None
    loading: bool = True
    pins: int = 0
    last_used: float = 0.0  # time.time(), for reports
    tick: int = 0  # LRU order


@dataclass
class _Stats:
    """Per key, kept across evictions so a report shows how often a model had to be loaded."""

    loads: int = 0
    hits: int = 0
    load_ms: float = 0.0  # the latest load
    total_load_ms: float = 0.0
    size_bytes: int | None = None  # the latest measured size: the estimate for the next load
    evictions: int = 0


class ModelPool:
    """Loaded models by key, within ``budget_bytes``; thread-safe.

    ``use(key, load)`` returns the resident model or calls ``load()`` once (other threads asking for the same key
    meanwhile wait for that load). Before a load, idle entries are evicted least recently used first until the
    expected size fits; after it, until the pool is back within budget. Entries in use are never evicted, and a
    model that does not fit even alone still loads (with a warning): a run never fails because of the budget.
    """

    def __init__(self, budget_bytes: int, device: Any = None, name: str = "models") -> None:
        if not isinstance(budget_bytes, int) or budget_bytes < 0:
            raise ValueError(f"model pool budget must be a byte count >= 0, got {budget_bytes!r}")
        self.budget_bytes = budget_bytes
        self.device = device
        self.name = name
        self._entries: dict[Hashable, _Entry] = {}
        self._stats: dict[Hashable, _Stats] = {}
        self._cond = threading.Condition(threading.Lock())
        self._tick = 0

    # -- public API ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def use(self, key: Hashable, load: Callable[[], T], size_hint: int | None = None) -> Iterator[T]:
        """The model for ``key``, pinned (not evictable) until the context closes.

        ``size_hint`` (e.g. the file size) lets the pool make room before the first load; later loads of the
        same key use the size measured last time.
        """
        value = self._acquire(key, load, size_hint)
        try:
            yield value
        finally:
            del value
            self._release(key)

    def preload(self, key: Hashable, load: Callable[[], Any], size_hint: int | None = None) -> int:
        """Load ``key`` now (no-op when resident) and leave it idle in the pool; returns its size in bytes."""
        with self.use(key, load, size_hint) as value:
            return size_of(value)

    def evict(self, key: Hashable) -> bool:
        """Drop ``key`` if it is resident and idle; False when absent, loading or in use (it stays)."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is None or entry.loading or entry.pins:
                return False
            dropped = [self._evict_locked(entry)]
        self._after_eviction(dropped)
        return True

    def free_idle(self) -> int:
        """Evict every idle entry (the out-of-memory path); returns the bytes freed."""
        with self._cond:
            idle = [entry for entry in self._entries.values() if not entry.loading and not entry.pins]
            freed = sum(entry.size_bytes for entry in idle)
            dropped = [self._evict_locked(entry) for entry in idle]
        self._after_eviction(dropped)
        return freed

    def report(self) -> list[dict[str, Any]]:
        """What is resident (or loading), most recently used first."""
        with self._cond:
            entries = sorted(self._entries.values(), key=lambda e: e.tick, reverse=True)
            rows = []
            for entry in entries:
                stats = self._stats[entry.key]
                rows.append({
                    "key": entry.key,
                    "size_bytes": entry.size_bytes,
                    "load_ms": round(stats.load_ms, 3),
                    "loads": stats.loads,
                    "hits": stats.hits,
                    "evictions": stats.evictions,
                    "last_used": entry.last_used,
                    "in_use": entry.pins > 0,
                    "users": entry.pins,
                    "loading": entry.loading,
                })
            return rows

    def stats(self, key: Hashable) -> dict[str, Any] | None:
        """Counters of ``key`` whether or not it is resident now (None when never asked for)."""
        with self._cond:
            stats = self._stats.get(key)
            if stats is None:
                return None
            return {
                "loads": stats.loads,
                "hits": stats.hits,
                "load_ms": stats.load_ms,
                "total_load_ms": stats.total_load_ms,
                "size_bytes": stats.size_bytes,
                "evictions": stats.evictions,
                "resident": key in self._entries and not self._entries[key].loading,
            }

    def resident(self, key: Hashable) -> bool:
        with self._cond:
            entry = self._entries.get(key)
            return entry is not None and not entry.loading

    @property
    def used_bytes(self) -> int:
        """Bytes of resident entries (plus the expected size of loads in progress)."""
        with self._cond:
            return self._used_locked()

    # -- acquire / release -----------------------------------------------------------------------------------

    def _acquire(self, key: Hashable, load: Callable[[], T], size_hint: int | None) -> T:
        started = time.perf_counter()
        waited = False
        me = threading.get_ident()
        with self._cond:
            stats = self._stats.setdefault(key, _Stats())
            while True:
                entry = self._entries.get(key)
                if entry is None:
                    break
                if entry.loading:
                    if entry.loader == me:
                        raise RuntimeError(f"model pool {self.name!r}: loading {key!r} asked for {key!r} again")
                    waited = True
                    self._cond.wait()
                    continue
                entry.pins += 1
                stats.hits += 1
                self._touch_locked(entry)
                value = entry.value
                if waited:
                    _record(key, started, shared=True)
                return value
            estimate = size_hint if size_hint is not None else (stats.size_bytes or 0)
            entry = _Entry(key=key, size_bytes=max(0, estimate), loader=me, pins=1)
            self._touch_locked(entry)
            dropped = self._trim_locked(extra=entry.size_bytes, spare=None)
            self._entries[key] = entry  # after the trim: the placeholder counts, and is pinned anyway
        self._after_eviction(dropped)

        try:
            value, load_ms = self._load(key, load)
            size = size_of(value)
        except BaseException:
            with self._cond:
                if self._entries.get(key) is entry:
                    del self._entries[key]
                self._cond.notify_all()
            raise

        with self._cond:
            entry.value = value
            entry.size_bytes = size
            entry.loading = False
            self._touch_locked(entry)
            stats.loads += 1
            stats.load_ms = load_ms
            stats.total_load_ms += load_ms
            stats.size_bytes = size
            dropped = self._trim_locked(extra=0, spare=None)
            over = self._used_locked() - self.budget_bytes
            self._cond.notify_all()
        self._after_eviction(dropped)
        log.info("model pool %s: loaded %r (%.1f MiB) in %.0f ms", self.name, key, size / 2**20, load_ms)
        if over > 0:
            log.warning(
                "model pool %s: %.1f MiB over its %.1f MiB budget after loading %r; the models in use cannot be "
                "evicted, so it stays over until they are released",
                self.name, over / 2**20, self.budget_bytes / 2**20, key,
            )
        _record(key, started, shared=False)  # includes any wait for a load that failed in another thread
        return value

    def _release(self, key: Hashable) -> None:
        with self._cond:
            entry = self._entries[key]
            entry.pins -= 1
            self._touch_locked(entry)
            dropped = self._trim_locked(extra=0, spare=entry) if entry.pins == 0 else []
        self._after_eviction(dropped)

    def _load(self, key: Hashable, load: Callable[[], T]) -> tuple[T, float]:
        """Call ``load``; on out-of-memory evict every idle entry and try once more."""
        started = time.perf_counter()
        retry = False
        try:
            value = load()
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            log.warning("model pool %s: out of memory loading %r (%s); freeing idle models and retrying",
                        self.name, key, exc)
            retry = True  # retried outside the except block: its traceback would keep the failed tensors alive
        if retry:
            freed = self.free_idle()
            if not freed:
                _release_device_memory()  # the failed load's own garbage (free_idle already did this otherwise)
            log.info("model pool %s: freed %.1f MiB of idle models", self.name, freed / 2**20)
            value = load()
        return value, (time.perf_counter() - started) * 1000.0

    # -- eviction --------------------------------------------------------------------------------------------

    def _trim_locked(self, extra: int, spare: _Entry | None) -> list[Any]:
        """Evict idle entries, least recently used first, until ``used + extra`` fits; never ``spare``."""
        dropped: list[Any] = []
        if self._used_locked() + extra <= self.budget_bytes:
            return dropped
        idle = sorted(
            (e for e in self._entries.values() if not e.loading and not e.pins and e is not spare),
            key=lambda e: e.tick,
        )
        for entry in idle:
            if self._used_locked() + extra <= self.budget_bytes:
                break
            dropped.append(self._evict_locked(entry))
        return dropped

    def _evict_locked(self, entry: _Entry) -> Any:
        del self._entries[entry.key]
        self._stats[entry.key].evictions += 1
        value, entry.value = entry.value, None
        log.info("model pool %s: evicted %r (%.1f MiB)", self.name, entry.key, entry.size_bytes / 2**20)
        return value

    def _after_eviction(self, dropped: list[Any]) -> None:
        """Drop the evicted objects outside the lock and give their memory back to the device."""
        if not dropped:
            return
        dropped.clear()
        _release_device_memory()

    def _used_locked(self) -> int:
        return sum(entry.size_bytes for entry in self._entries.values())

    def _touch_locked(self, entry: _Entry) -> None:
        self._tick += 1
        entry.tick = self._tick
        entry.last_used = time.time()


def _record(key: Hashable, started: float, shared: bool) -> None:
    timer = _current_timer.get()
    if timer is not None:
        timer.add(key, (time.perf_counter() - started) * 1000.0, shared=shared)


def _release_device_memory() -> None:
    """Collect reference cycles, then hand cached CUDA blocks back so the next load (or process) can use them."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()

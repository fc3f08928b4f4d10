"""The prompt queue and the history, in memory only (a restarted server has neither, as ComfyUI).

Pending prompts run lowest ``number`` first; ``queue_remaining`` counts pending and running ones. Every change
of the queue itself is broadcast as a ``status`` frame by ``on_change``; history changes are not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FreeRequest", "PromptQueue", "QueueItem"]


@dataclass
class QueueItem:
    number: int | float
    prompt_id: str
    prompt: dict[str, Any]  # as submitted
    extra_data: dict[str, Any]
    outputs: list[str]  # outputs_to_execute: the output nodes that validated
    run_prompt: dict[str, Any]  # what the executor runs: the nodes those outputs need

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    @property
    def client_id(self) -> str | None:
        client_id = self.extra_data.get("client_id")
        return client_id if isinstance(client_id, str) else None


@dataclass
class FreeRequest:
    """What POST /free asked for; the execution thread acts on it between prompts."""

    unload_models: bool = False
    free_memory: bool = False


@dataclass
class PromptQueue:
    on_change: Callable[[int], None]  # called with queue_remaining after each change (under the lock)
    pending: list[QueueItem] = field(default_factory=list)
    running: list[QueueItem] = field(default_factory=list)
    history: dict[str, dict[str, Any]] = field(default_factory=dict)  # insertion order: oldest first
    free: FreeRequest | None = None
    _lock: threading.Condition = field(default_factory=threading.Condition)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self.pending) + len(self.running)

    def put(self, item: QueueItem) -> None:
        with self._lock:
            self.pending.append(item)
            self.pending.sort(key=lambda queued: queued.number)
            self.on_change(len(self.pending) + len(self.running))
            self._lock.notify_all()

    def request_free(self, request: FreeRequest) -> None:
        with self._lock:
            self.free = request
            self._lock.notify_all()

    def take(self) -> QueueItem | FreeRequest:
        """Block until there is a free request to act on (returned first) or a prompt, which becomes running."""
        with self._lock:
            while not self.pending and self.free is None:
                self._lock.wait()
            if self.free is not None:
                request, self.free = self.free, None
                return request
            item = self.pending.pop(0)
            self.running.append(item)
            self.on_change(len(self.pending) + len(self.running))
            return item

    def finish(self, item: QueueItem, entry: dict[str, Any] | None) -> None:
        """The run is over: store its history entry (a re-used prompt_id keeps its place), then broadcast."""
        with self._lock:
            if entry is not None:
                self.history[item.prompt_id] = entry
            self.running.remove(item)
            self.on_change(len(self.pending) + len(self.running))

    def delete(self, prompt_ids: Iterable[str]) -> None:
        """Remove pending items (never the running one), one status broadcast per item removed."""
        with self._lock:
            for prompt_id in prompt_ids:
                for item in self.pending:
                    if item.prompt_id == prompt_id:
                        self.pending.remove(item)
                        self.on_change(len(self.pending) + len(self.running))
                        break

    def clear(self) -> None:
        with self._lock:
            self.pending.clear()
            self.on_change(len(self.pending) + len(self.running))

    def snapshot(self) -> dict[str, list[list[Any]]]:
        with self._lock:
            return {"queue_running": [item.as_list() for item in self.running],
                    "queue_pending": [item.as_list() for item in self.pending]}

    def running_ids(self) -> list[str]:
        with self._lock:
            return [item.prompt_id for item in self.running]

    # --- history ------------------------------------------------------------------------------------------

    def history_page(self, max_items: int | None, offset: int | None) -> dict[str, Any]:
        """ComfyUI's paging: ``max_items`` alone gives the newest ones; with ``offset`` it counts from it."""
        with self._lock:
            ids = list(self.history)
            start = offset if offset is not None and offset >= 0 else 0
            if (offset is None or offset < 0) and max_items is not None:
                start = max(len(ids) - max_items, 0) if max_items else len(ids)
            chosen = ids[start:] if max_items is None else ids[start:start + max_items]
            return {prompt_id: self.history[prompt_id] for prompt_id in chosen}

    def history_item(self, prompt_id: str) -> dict[str, Any]:
        with self._lock:
            return {prompt_id: self.history[prompt_id]} if prompt_id in self.history else {}

    def delete_history(self, prompt_ids: Iterable[str]) -> None:
        with self._lock:
            for prompt_id in prompt_ids:
                self.history.pop(prompt_id, None)

    def clear_history(self) -> None:
        with self._lock:
            self.history.clear()

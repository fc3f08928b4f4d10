"""While a worker runs a run: a side thread keeps it alive in the run table, records its progress, and notices
a cancel request within a fraction of a second.

The heartbeat (``heartbeat_seconds``) tells the watchdog the worker lives; between beats the thread only reads
the run's cancel flag (one primary-key read every ``CANCEL_POLL_SECONDS``), so a cancel reaches the engine
well within the 2 s users expect. Progress comes from the engine's events and is written with the next tick
when it changed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from comfygate.platform.db import session_scope
from comfygate.platform.services import runs as run_service

__all__ = ["CANCEL_POLL_SECONDS", "Progress", "RunWatch", "watching"]

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.25


class Progress:
    """Where the run is, from the engine's events: the node running, its step value/max, nodes done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"node": None, "value": 0, "max": 0, "nodes_done": 0, "cached": 0,
                                       "previews": 0, "generation": 1}
        self._changed = False
        self.last_preview: tuple[str, bytes] | None = None  # (content type, bytes) of the newest preview frame

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        with self._lock:
            state = self._state
            if kind == "execution_start":
                state.update(node=None, value=0, max=0, nodes_done=0, cached=0)
            elif kind == "execution_cached":
                state["cached"] += len(event.get("nodes") or ())
            elif kind == "executing" and event.get("node") is not None:
                state.update(node=event["node"], value=0, max=0)
            elif kind == "progress":
                state.update(node=event.get("node", state["node"]), value=event.get("value", 0),
                             max=event.get("max", 0))
            elif kind == "executed":
                state["nodes_done"] += 1
            elif kind == "preview":
                state["previews"] += 1
                self.last_preview = (event.get("content_type", "image/jpeg"), event.get("data", b""))
            else:
                return
            self._changed = True

    def new_generation(self, number: int) -> None:
        with self._lock:
            self._state.update(generation=number, node=None, value=0, max=0, nodes_done=0, cached=0)
            self._changed = True

    def take_if_changed(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._changed:
                return None
            self._changed = False
            return dict(self._state)


class RunWatch:
    """The side thread's state for one run attempt. ``cancel`` is set when the caller asks to cancel;
    ``lost`` when the watchdog took the run back."""

    def __init__(self, factory: sessionmaker[Session], run_id: str, attempt: int, beat_seconds: float) -> None:
        self.factory = factory
        self.run_id = run_id
        self.attempt = attempt
        self.beat_seconds = beat_seconds
        self.progress = Progress()
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.stop = threading.Event()

    def loop(self) -> None:
        next_beat = time.monotonic() + self.beat_seconds
        while not self.stop.wait(min(CANCEL_POLL_SECONDS, self.beat_seconds)):
            try:
                progress = self.progress.take_if_changed()
                if progress is not None or time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.beat_seconds
                    with session_scope(self.factory) as session:
                        alive, cancel = run_service.heartbeat(session, self.run_id, self.attempt, progress)
                else:
                    with session_scope(self.factory) as session:
                        alive, cancel = True, run_service.cancel_requested(session, self.run_id)
            except SQLAlchemyError as exc:
                # A database blip: keep going. If it lasts past stale_after_seconds the watchdog re-queues
                # the run, and the next successful beat reports it lost.
                log.warning("heartbeat of run %s failed: %s", self.run_id, exc)
                continue
            if cancel:
                self.cancel.set()
            if not alive:
                self.lost.set()
                return


@contextmanager
def watching(factory: sessionmaker[Session], run_id: str, attempt: int, beat_seconds: float) -> Iterator[RunWatch]:
    watch = RunWatch(factory, run_id, attempt, beat_seconds)
    thread = threading.Thread(target=watch.loop, name=f"watch-{run_id}", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        watch.stop.set()
        thread.join()

"""Cleaning up after prompts a job stopped waiting for while ComfyUI may still run them.

A job gives up on its prompt when ComfyUI does not confirm a stop (a node that never checks for interrupts),
when ComfyUI stops answering mid-run, or when its POST /prompt got no answer though ComfyUI may have queued it.
Such a prompt can still write into its output folder and leave a history entry after the job cleaned up, so
the job hands its id here instead: one thread per engine polls /queue until the prompt is neither running nor
pending, then deletes its output folder (``comfygate/<prompt id>``), the other output and temp files its
history entry names, and the entry itself.
"""

from __future__ import annotations

import logging
import threading
import time

from .client import ComfyClient, HTTPStatusError, Unreachable
from .follow import cached_nodes
from .outputs import written_files
from .paths import ComfyDirs, prompt_folder

__all__ = ["Reaper"]

log = logging.getLogger(__name__)

REAP_POLL = 2.0  # ask /queue this often while some prompt is left
REAP_LIMIT = 3600.0  # a prompt still queued or running after this long is left as it is (logged)
MAX_LEFT = 1000  # prompts followed at once; beyond that the oldest is dropped (logged), so memory stays bounded
CLOSE_WAIT = 5.0  # close() waits this long for a sweep under way


class Reaper:
    def __init__(self, client: ComfyClient, dirs: ComfyDirs | None, *, poll: float = REAP_POLL,
                 limit: float = REAP_LIMIT) -> None:
        self.client = client
        self.dirs = dirs
        self.poll = poll
        self.limit = limit
        self._left: dict[str, float] = {}  # prompt id -> when it was handed over (monotonic), oldest first
        self._changed = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    def take(self, prompt_id: str) -> None:
        """Cleans up after ``prompt_id`` once ComfyUI is done with it (the thread starts at the first)."""
        with self._changed:
            if self._closing:
                log.warning("engine closing: leaving what ComfyUI prompt %s may still write", prompt_id)
                return
            if len(self._left) >= MAX_LEFT:
                oldest = next(iter(self._left))
                del self._left[oldest]
                log.warning("too many ComfyUI prompts to clean up after; leaving what %s writes", oldest)
            self._left[prompt_id] = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="comfyui-reaper", daemon=True)
                self._thread.start()
            self._changed.notify()
        log.info("ComfyUI may still run prompt %s; its files and history go once it ends", prompt_id)

    def pending(self) -> list[str]:
        """The prompts not cleaned up after yet."""
        with self._changed:
            return list(self._left)

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify()
            thread, left = self._thread, list(self._left)
        if thread is not None:
            thread.join(CLOSE_WAIT)
        if left:
            log.warning("engine closing: leaving what ComfyUI prompts %s may still write", ", ".join(left))

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._closing or self._left)  # idle: no polling
                if self._closing:
                    return
                left = dict(self._left)
            try:
                self._sweep(left)
            except Exception:  # a bug here must not stop later cleanups
                log.exception("cleaning up after ComfyUI prompts failed")
            with self._changed:
                self._changed.wait_for(lambda: self._closing, self.poll)

    def _sweep(self, left: dict[str, float]) -> None:
        try:
            queued = {prompt_id for ids in self.client.queue(timeout=3).values() for prompt_id in ids}
        except (Unreachable, HTTPStatusError) as exc:
            log.debug("cannot see ComfyUI's queue to clean up after %s: %s", ", ".join(left), exc)
            queued = None
        now = time.monotonic()
        for prompt_id, since in left.items():
            done = queued is not None and prompt_id not in queued and self._clean(prompt_id)
            if not done and now - since >= self.limit:
                log.warning("ComfyUI prompt %s did not end within %g s; leaving what it writes", prompt_id,
                            self.limit)
                done = True
            if done:
                with self._changed:
                    self._left.pop(prompt_id, None)

    def _clean(self, prompt_id: str) -> bool:
        """Deletes what the ended prompt left; False when ComfyUI did not answer (tried again later). ComfyUI
        writes the history entry before it takes a prompt off its queue, so the entry is there by now."""
        try:
            entry = self.client.history(prompt_id)
            if self.dirs is not None:
                outputs = (entry or {}).get("outputs")
                if isinstance(outputs, dict):
                    for ref in written_files(outputs, cached_nodes(entry)):
                        self.dirs.delete_file(ref.type, ref.subfolder, ref.filename)
                self.dirs.delete_tree("output", prompt_folder(prompt_id))
            if entry is not None:
                self.client.call("POST", "/history", json={"delete": [prompt_id]}, timeout=10)
        except (Unreachable, HTTPStatusError) as exc:
            log.debug("cleaning up after ComfyUI prompt %s: %s; trying again", prompt_id, exc)
            return False
        log.info("cleaned up after ComfyUI prompt %s", prompt_id)
        return True

"""What one prompt's websocket frames say: the events to pass on, node times, cached nodes and how it ended.

ComfyUI's frames for a prompt end with ``executing {node: null}``; ``execution_error`` or
``execution_interrupted`` come before it when the run failed or was stopped. Frames can be lost (the socket
dropped mid-run; nothing is replayed), so the history entry can fill in the same facts afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["PromptFollower", "cached_nodes"]

# Frames passed on as run events, under their ComfyUI names (base.py); progress_state and status are not.
_PASSED_ON = {"execution_start", "execution_cached", "executing", "progress", "executed", "execution_success",
              "execution_error", "execution_interrupted"}


class PromptFollower:
    def __init__(self, run_id: str, emit: Callable[[dict[str, Any]], None]) -> None:
        self.run_id = run_id
        self._emit = emit
        self.cached: list[str] = []
        self.executed: dict[str, dict[str, Any]] = {}  # node -> ui output, in the order nodes reported it
        self.node_ms: dict[str, float] = {}
        self.error: dict[str, Any] | None = None
        self.interrupted: dict[str, Any] | None = None
        self.ended = False  # executing {node: null} came
        self.heard = False  # any frame of it came
        self._running: tuple[str, float] | None = None  # (node, when its executing frame came)
        self._progress_node: str | None = None

    def feed(self, message: dict[str, Any]) -> None:
        kind, data = message["type"], message.get("data") or {}
        self.heard = True
        if kind == "execution_cached":
            self._add_cached(data.get("nodes"))
        elif kind == "executing":
            self._node_started(data.get("node"))
            if data.get("node") is None:
                self.ended = True
        elif kind == "progress":
            self._progress_node = data.get("node")
        elif kind == "executed" and data.get("node") is not None:
            output = data.get("output")
            self.executed[str(data["node"])] = output if isinstance(output, dict) else {}
        elif kind == "execution_error":
            self.error = data
        elif kind == "execution_interrupted":
            self.interrupted = data
        if kind in ("execution_success", "execution_error", "execution_interrupted"):
            self._node_started(None)
        if kind == "preview":
            self._emit({"type": "preview", "prompt_id": self.run_id, "node": data["node"] or self._progress_node,
                        "content_type": data["content_type"], "data": data["image"]})
        elif kind in _PASSED_ON:
            self._emit({**data, "type": kind, "prompt_id": self.run_id})

    def _node_started(self, node: str | None) -> None:
        """Times nodes by the arrival of their executing frames (best effort: frames carry no timestamps)."""
        now = time.monotonic()
        if self._running is not None:
            previous, since = self._running
            self.node_ms[previous] = self.node_ms.get(previous, 0.0) + (now - since) * 1000
        self._running = (str(node), now) if node is not None else None

    def apply_history(self, entry: dict[str, Any]) -> None:
        """Fills in from a history entry what lost frames would have said."""
        self._add_cached(cached_nodes(entry))
        for kind, data in _history_messages(entry):
            if kind == "execution_error" and self.error is None:
                self.error = data
            elif kind == "execution_interrupted" and self.interrupted is None:
                self.interrupted = data
        self.ended = True

    def _add_cached(self, nodes: Any) -> None:
        if isinstance(nodes, list):
            self.cached.extend(str(n) for n in nodes if str(n) not in self.cached)


def cached_nodes(entry: dict[str, Any]) -> list[str]:
    """The nodes a history entry says ComfyUI answered from its cache."""
    return [str(node) for kind, data in _history_messages(entry) if kind == "execution_cached"
            and isinstance(data.get("nodes"), list) for node in data["nodes"]]


def _history_messages(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The ``[event, data]`` messages of a history entry's status (those of a readable shape)."""
    status = entry.get("status")
    messages = status.get("messages") if isinstance(status, dict) else None
    if not isinstance(messages, list):
        return []
    return [(item[0], item[1]) for item in messages
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict)]

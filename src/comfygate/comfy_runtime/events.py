"""Run events: what the executor tells ``RunContext.on_event`` while a run goes, with ComfyUI's event names.

Each event is one dict: ``{"type": <name>, "prompt_id": RunContext.run_id, ...}``. In the order a run sends them:

``execution_start``        ``{"timestamp"}`` — validation passed, the run begins.
``execution_cached``       ``{"nodes": [ids], "timestamp"}`` — nodes whose outputs come from the cache (sent once
                           at the start; again with one id when a node is found cached later in the run, e.g. a
                           node of an expansion or a duplicate of a node that already ran).
``executing``              ``{"node", "display_node"}`` — a node function is about to be called (again after a
                           lazy node asked for more inputs). ``{"node": None}`` after ``execution_success``
                           is ComfyUI's old "finished" signal, kept for clients that wait for it.
``progress``               ``{"node", "value", "max"}`` — the running node called ``report_progress``.
``executed``               ``{"node", "display_node", "output"}`` — a node produced UI output (also sent for a
                           cached output node, which hands its UI output over again). ``output`` is the node's
                           ``ui`` dict with each image record summarised as ``{"index", "filename_prefix",
                           "width", "height"}`` (``index`` = position in ``RunResult.outputs``).
``execution_success``      ``{"timestamp"}`` — every output node is done.
``execution_error``        ``{"node_id", "node_type", "executed", "exception_type", "exception_message",
                           "traceback" (list of str), "timestamp"}`` — a node failed; NodeExecutionError follows.
``execution_interrupted``  ``{"node_id", "node_type", "executed", "timestamp"}`` — canceled; RunCanceled follows.

``node`` is the id of the node that runs (for nodes added by an expansion, their generated id); ``display_node``
is the node of the submitted prompt it belongs to.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "EXECUTED",
    "EXECUTING",
    "EXECUTION_CACHED",
    "EXECUTION_ERROR",
    "EXECUTION_INTERRUPTED",
    "EXECUTION_START",
    "EXECUTION_SUCCESS",
    "PROGRESS",
    "RunEvents",
    "summarise_ui",
]

EXECUTION_START = "execution_start"
EXECUTION_CACHED = "execution_cached"
EXECUTING = "executing"
PROGRESS = "progress"
EXECUTED = "executed"
EXECUTION_SUCCESS = "execution_success"
EXECUTION_ERROR = "execution_error"
EXECUTION_INTERRUPTED = "execution_interrupted"


def _timestamp() -> int:
    return int(time.time() * 1000)


def summarise_ui(ui: Mapping[str, Any], first_image_index: int) -> dict[str, Any]:
    """The ui dict with image records (bytes, pixel arrays) replaced by small JSON-safe descriptions."""
    summary = dict(ui)
    images = ui.get("images")
    if images:
        summary["images"] = [
            {"index": first_image_index + offset, "filename_prefix": record["filename_prefix"],
             "width": record["width"], "height": record["height"]}
            for offset, record in enumerate(images)
        ]
    return summary


class RunEvents:
    """Builds and sends one run's events; does nothing when the caller gave no callback."""

    def __init__(self, on_event: Callable[[dict], None] | None, run_id: str | None) -> None:
        self._on_event = on_event
        self._run_id = run_id

    def emit(self, type_: str, **data: Any) -> None:
        if self._on_event is not None:
            self._on_event({"type": type_, "prompt_id": self._run_id, **data})

    def start(self) -> None:
        self.emit(EXECUTION_START, timestamp=_timestamp())

    def cached(self, node_ids: Sequence[str]) -> None:
        self.emit(EXECUTION_CACHED, nodes=list(node_ids), timestamp=_timestamp())

    def executing(self, node_id: str | None, display_node: str | None) -> None:
        self.emit(EXECUTING, node=node_id, display_node=display_node)

    def progress(self, node_id: str, value: float, total: float) -> None:
        self.emit(PROGRESS, node=node_id, value=value, max=total)

    def executed(self, node_id: str, display_node: str, output: dict[str, Any]) -> None:
        self.emit(EXECUTED, node=node_id, display_node=display_node, output=output)

    def success(self) -> None:
        self.emit(EXECUTION_SUCCESS, timestamp=_timestamp())
        self.executing(None, None)

    def error(self, node_id: str, node_type: str, executed: Sequence[str], exception_type: str, message: str,
              traceback: list[str]) -> None:
        self.emit(EXECUTION_ERROR, node_id=node_id, node_type=node_type, executed=list(executed),
                  exception_type=exception_type, exception_message=message, traceback=traceback,
                  timestamp=_timestamp())

    def interrupted(self, node_id: str | None, node_type: str | None, executed: Sequence[str]) -> None:
        self.emit(EXECUTION_INTERRUPTED, node_id=node_id, node_type=node_type, executed=list(executed),
                  timestamp=_timestamp())

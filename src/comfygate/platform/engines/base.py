"""What a worker asks of an engine, whichever runs the prompt: the built-in executor or a real ComfyUI.

One small interface (:class:`Engine`): run an API-format prompt with its input files, report events while it
runs, return the outputs or raise one of the typed errors below, stop when asked. The worker (platform/worker.py)
knows engines only through it and records ``Engine.name`` on the run.

Events are dicts named as ComfyUI names them (``{"type": "executing", "node": "3"}``), so both engines speak
the same language: ``execution_start``, ``execution_cached`` {nodes}, ``executing`` {node, display_node},
``progress`` {node, value, max}, ``executed`` {node, output}, ``preview`` {node, content_type, data}.

Errors a run can end with:

- ``WorkflowInvalid`` (comfy_runtime): the engine refused the prompt; ``node_errors`` in ComfyUI's shape.
- ``NodeExecutionError`` (comfy_runtime): a node failed; node id, class type, message (traceback kept apart).
- :class:`OutOfMemory`: a node ran out of device memory. The worker frees memory and tries once more.
- :class:`RunInterrupted`: stopped because the caller canceled or the version's timeout passed.
- :class:`EngineUnavailable`: the engine died or stopped answering; the run goes back to the queue as a new
  attempt, never lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy

from comfygate.comfy_runtime import NodeExecutionError

__all__ = ["FILE_INPUTS", "Capabilities", "Engine", "EngineJob", "EngineOutput", "EngineResult", "EngineUnavailable",
           "OutOfMemory", "RunInterrupted", "is_out_of_memory_type"]


# The node inputs that name a file the run uploaded (EngineJob.input_files): the worker reads those files from
# storage, and each engine puts them where its nodes look.
FILE_INPUTS = frozenset({("LoadImage", "image"), ("LoadImageMask", "image")})


@dataclass
class EngineJob:
    """One generation of a run."""

    run_id: str
    prompt: dict[str, dict[str, Any]]
    # Files the prompt names (LoadImage's "image"), by that name: the engine puts them where its nodes look.
    input_files: Mapping[str, bytes] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)  # set when the caller cancels
    lost: threading.Event = field(default_factory=threading.Event)  # set when the run was taken back from us
    deadline: float | None = None  # time.monotonic() past which the run is interrupted (the version's timeout)
    timeout_seconds: float | None = None  # what the deadline stands for, for the error message
    on_event: Callable[[dict[str, Any]], None] | None = None
    label: str = ""  # tells generations of one run apart in the engine's own ids ("<attempt>-<generation>")

    def stop_reason(self) -> str | None:
        """"canceled", "timeout", "lost" or None: polled by engines between nodes and steps."""
        if self.lost.is_set():  # the watchdog gave the run to another worker: stop spending the GPU on it
            return "lost"
        if self.cancel.is_set():
            return "canceled"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "timeout"
        return None

    def emit(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)


@dataclass
class EngineOutput:
    """One file a run saved (or text a node reported), with the media type it is served with."""

    node_id: str
    class_type: str
    filename: str  # the engine's own file name, e.g. "ComfyUI_00001_.png"
    data: bytes
    content_type: str
    width: int | None = None
    height: int | None = None
    pixels: numpy.ndarray | None = field(default=None, repr=False)  # raw float values, when the engine has them


@dataclass
class EngineResult:
    outputs: list[EngineOutput]
    execute_ms: float
    node_ms: dict[str, float] = field(default_factory=dict)
    cached_nodes: list[str] = field(default_factory=list)
    model_load_ms: float = 0.0
    model_loads: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Capabilities:
    """What an engine offers: its node schemas (GET /object_info) and model files ({folder: [names]})."""

    object_info: dict[str, Any]
    models: dict[str, list[str]]


class RunInterrupted(Exception):
    """The engine stopped the run: ``reason`` is "canceled" (the caller asked), "timeout" or "lost" (the run
    was taken back from this worker)."""

    def __init__(self, reason: str, node_id: str | None = None, message: str = "") -> None:
        super().__init__(message or f"run {reason}")
        self.reason = reason
        self.node_id = node_id


class EngineUnavailable(Exception):
    """The engine died or stopped answering mid-run: the run is handed back and tried again."""


class OutOfMemory(NodeExecutionError):
    """A node ran out of device memory (the engine's own error, with its node)."""


def is_out_of_memory_type(exception_type: str, message: str = "") -> bool:
    """Whether an engine's error names an out-of-memory error (torch's, CUDA's or Python's)."""
    return (exception_type.endswith(("OutOfMemoryError", "MemoryError"))
            or "out of memory" in message.lower())


class Engine(Protocol):
    name: str

    def start(self) -> None:
        """Get ready to run (start or reach the engine); raises when it cannot."""

    def is_ready(self) -> bool:
        """Whether a run could start now (a worker's /ready answers 503 while not)."""

    def run(self, job: EngineJob) -> EngineResult:
        """Run ``job.prompt``; raises the errors of this module's docstring."""

    def free_memory(self) -> None:
        """Unload models and free device memory (after an out-of-memory error)."""

    def capabilities(self) -> Capabilities:
        """The node schemas and model files this engine offers now."""

    def close(self) -> None:
        """Stop what the engine started (a supervised ComfyUI)."""

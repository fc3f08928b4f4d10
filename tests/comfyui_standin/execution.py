"""The execution thread: takes prompts in order, runs them on comfygate's Executor, and turns its events into
ComfyUI 0.3.64's frames and history entries (recordings 01, 02, 04, 05, 06, 10).

Frame rules reproduced here:

- Execution frames (``execution_*``, ``executing``, ``executed``) go to the submitting client only, and to
  nobody when the prompt had no client_id; ``progress``, ``progress_state`` and previews go to that client,
  or to every socket when there is none.
- Per node: ``progress_state`` (running) -> ``executing`` -> [``executed``] -> ``progress_state`` (finished);
  a cached output node only re-sends ``executed``, then its own finished state (ints 1/1).
- A progress report: ``progress_state``, then ``progress`` and a type-1 preview, or a type-4 preview (with
  metadata) and then ``progress`` when the client asked for metadata in its first frame.
- The end: ``execution_success`` (or ``execution_error`` / ``execution_interrupted``), then the history entry
  (after ``--history-lag-ms``), a ``status`` broadcast, and ``executing {node: null}``.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import traceback
from typing import Any

from comfygate.comfy_runtime import Executor, NodeExecutionError, RunCanceled, RunContext, WorkflowInvalid

from .frames import SocketHub, preview_frame, preview_jpeg
from .nodes import StandinState, comfy_ui
from .prompt_queue import FreeRequest, PromptQueue, QueueItem

__all__ = ["Worker"]

log = logging.getLogger(__name__)

OOM_TIPS = ("This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you might "
            "have accidentally set the batch_size to a large number.")


def _now_ms() -> int:
    return int(time.time() * 1000)


class PromptFrames:
    """One prompt's frames, node states and history record, built from the executor's events."""

    def __init__(self, item: QueueItem, hub: SocketHub) -> None:
        self.item = item
        self.hub = hub
        self.client = item.client_id
        self.metadata = hub.supports_preview_metadata(self.client)
        self.states: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self.messages: list[list[Any]] = []
        self.outputs: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}
        self.pending_error: dict[str, Any] | None = None  # sent once the executor says why it failed

    # --- sending -------------------------------------------------------------------------------------------

    def execution(self, event: str, data: dict[str, Any], *, record: bool = False) -> None:
        if record:
            self.messages.append([event, data])
        if self.client is not None:
            self.hub.send(event, data, self.client)

    def progress_state(self) -> None:
        self.hub.send("progress_state", {"prompt_id": self.item.prompt_id, "nodes": copy.deepcopy(self.states)},
                      self.client)

    def set_state(self, node: str, display: str, value: float, total: float, state: str) -> None:
        self.states[node] = {"value": value, "max": total, "state": state, "node_id": node,
                             "prompt_id": self.item.prompt_id, "display_node_id": display,
                             "parent_node_id": None if node == display else display, "real_node_id": display}

    def finish_current(self) -> None:
        node, self.current = self.current, None
        if node is not None and self.states[node]["state"] == "running":
            entry = self.states[node]
            entry.update(value=entry["max"], state="finished")
            self.progress_state()

    # --- the executor's events -----------------------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        handler = getattr(self, "_on_" + event["type"], None)
        if handler is not None:
            handler(event)

    def _on_execution_start(self, event: dict[str, Any]) -> None:
        self.execution("execution_start", {"prompt_id": self.item.prompt_id, "timestamp": event["timestamp"]},
                       record=True)

    def _on_execution_cached(self, event: dict[str, Any]) -> None:
        first = not any(message[0] == "execution_cached" for message in self.messages)
        self.execution("execution_cached", {"nodes": event["nodes"], "prompt_id": self.item.prompt_id,
                                            "timestamp": event["timestamp"]}, record=first)

    def _on_executing(self, event: dict[str, Any]) -> None:
        node, display = event["node"], event["display_node"]
        if node is None:
            return  # comfygate's old "finished" signal; ComfyUI's comes after the history entry
        if node != self.current:
            self.finish_current()
            self.set_state(node, display, 0.0, 1.0, "running")
            self.progress_state()
            self.current = node
        self.hub.last_node = display
        self.execution("executing", {"node": node, "display_node": display, "prompt_id": self.item.prompt_id})

    def _on_progress(self, event: dict[str, Any]) -> None:
        node, value, total = event["node"], event["value"], event["max"]
        display = self.states.get(node, {}).get("display_node_id", node)
        self.set_state(node, display, value, total, "running")
        self.progress_state()
        progress = {"value": value, "max": total, "prompt_id": self.item.prompt_id, "node": node}
        jpeg = preview_jpeg(value, total)
        if self.metadata:
            metadata = {"node_id": node, "prompt_id": self.item.prompt_id, "display_node_id": display,
                        "parent_node_id": None if node == display else display, "real_node_id": display,
                        "image_type": "image/jpeg"}
            self.hub.send_binary(preview_frame(jpeg, metadata), self.client)
            self.hub.send("progress", progress, self.client)
        else:
            self.hub.send("progress", progress, self.client)
            self.hub.send_binary(preview_frame(jpeg, None), self.client)

    def _on_executed(self, event: dict[str, Any]) -> None:
        node, display = event["node"], event["display_node"]
        output = comfy_ui(event["output"])
        self.outputs[display] = output
        self.meta[display] = {"node_id": node, "display_node": display,
                              "parent_node": None if node == display else display, "real_node_id": display}
        self.execution("executed", {"node": node, "display_node": display, "output": output,
                                    "prompt_id": self.item.prompt_id})
        if node == self.current:
            self.finish_current()
        else:  # a cached output node handing its results over again
            self.set_state(node, display, 1, 1, "finished")
            self.progress_state()

    def _on_execution_success(self, event: dict[str, Any]) -> None:
        self.finish_current()
        self.execution("execution_success", {"prompt_id": self.item.prompt_id, "timestamp": event["timestamp"]},
                       record=True)

    def _on_execution_error(self, event: dict[str, Any]) -> None:
        self.pending_error = event  # its message is completed from the exception the executor raises next

    def _on_execution_interrupted(self, event: dict[str, Any]) -> None:
        self.execution("execution_interrupted", {
            "prompt_id": self.item.prompt_id, "node_id": event["node_id"], "node_type": event["node_type"],
            "executed": event["executed"], "timestamp": event["timestamp"]}, record=True)

    # --- failures --------------------------------------------------------------------------------------------

    def node_error(self, exc: NodeExecutionError) -> None:
        """execution_error as ComfyUI words it: ``str(exception) + "\\n" + tips`` and the node's inputs."""
        event = self.pending_error or {"node_id": exc.node_id, "node_type": exc.class_type, "executed": [],
                                       "exception_type": exc.exception_type, "traceback": []}
        cause = exc.__cause__
        tips = OOM_TIPS if exc.exception_type.endswith("OutOfMemoryError") else ""
        self.send_error(event["node_id"], event["node_type"], event["executed"],
                        f"{cause if cause is not None else exc.message}\n{tips}", event["exception_type"],
                        event["traceback"])

    def invalid(self, exc: WorkflowInvalid) -> None:
        """The prompt passed the served schemas (--object-info) but not this registry: fail at its first node."""
        node_id = next(iter(exc.node_errors), None) or next(iter(self.item.run_prompt))
        for nodes in getattr(exc, "missing", {}).values():
            node_id = nodes[0]
            break
        self.crashed(exc, node_id)

    def crashed(self, exc: Exception, node_id: str | None = None) -> None:
        """A failure outside any node (the executor itself): reported as an execution_error all the same, so
        the client still gets its end marker."""
        if not self.messages:
            self.execution("execution_start", {"prompt_id": self.item.prompt_id, "timestamp": _now_ms()},
                           record=True)
            self.execution("execution_cached", {"nodes": [], "prompt_id": self.item.prompt_id,
                                                "timestamp": _now_ms()}, record=True)
        node_id = node_id or self.current or next(iter(self.item.run_prompt))
        node_type = self.item.run_prompt.get(node_id, {}).get("class_type", "")
        self.send_error(node_id, node_type, [], f"{exc}\n", f"{type(exc).__module__}.{type(exc).__qualname__}",
                        traceback.format_tb(exc.__traceback__))

    def send_error(self, node_id: str, node_type: str, executed: list[str], message: str, exception_type: str,
                   tb: list[str]) -> None:
        node = self.item.run_prompt.get(node_id, {})
        inputs = {name: [value] for name, value in node.get("inputs", {}).items()
                  if not (isinstance(value, list) and len(value) == 2)}
        self.execution("execution_error", {
            "prompt_id": self.item.prompt_id, "node_id": node_id, "node_type": node_type, "executed": executed,
            "exception_message": message, "exception_type": exception_type, "traceback": tb,
            "current_inputs": inputs, "current_outputs": list(self.item.run_prompt), "timestamp": _now_ms()},
            record=True)

    def history_entry(self, success: bool) -> dict[str, Any]:
        return {"prompt": self.item.as_list(), "outputs": self.outputs,
                "status": {"status_str": "success" if success else "error", "completed": success,
                           "messages": self.messages},
                "meta": self.meta}


class Worker(threading.Thread):
    """The one execution thread: prompts in ``number`` order, POST /free requests between them."""

    def __init__(self, queue: PromptQueue, executor: Executor, hub: SocketHub, state: StandinState,
                 history_lag_ms: int) -> None:
        super().__init__(name="standin-execution", daemon=True)
        self.queue = queue
        self.executor = executor
        self.hub = hub
        self.state = state
        self.history_lag = history_lag_ms / 1000.0
        self.interrupt = threading.Event()  # POST /interrupt; cleared when the next prompt starts
        self._lag = threading.Event()  # never set: its timed wait is the history lag

    def run(self) -> None:
        while True:
            taken = self.queue.take()
            if isinstance(taken, FreeRequest):
                self.free(taken)
                continue
            try:
                self.execute(taken)
            except Exception:  # a bug here must not stop the server from taking the next prompt
                log.exception("prompt %s failed inside the stand-in", taken.prompt_id)
                self.queue.finish(taken, None)

    def free(self, request: FreeRequest) -> None:
        if request.free_memory:
            self.executor.free_cache()
        if request.unload_models and self.executor.registry.models is not None:
            self.executor.registry.models.free_idle()
        self.state.frees += 1

    def execute(self, item: QueueItem) -> None:
        self.interrupt.clear()
        self.hub.running_client, self.hub.last_node = item.client_id, None
        frames = PromptFrames(item, self.hub)
        context = RunContext(input_dir=self.state.folders.input, on_event=frames.on_event,
                             should_cancel=self.interrupt.is_set, run_id=item.prompt_id)
        success = False
        try:
            self.executor.run(item.run_prompt, context)
            success = True
        except NodeExecutionError as exc:
            frames.node_error(exc)
        except RunCanceled:
            pass  # execution_interrupted was sent by the run
        except WorkflowInvalid as exc:
            frames.invalid(exc)
        except Exception as exc:  # the executor itself failed: the client still gets an error and the end
            log.exception("prompt %s failed outside its nodes", item.prompt_id)
            frames.crashed(exc)
        if success and self.history_lag > 0:
            self._lag.wait(self.history_lag)  # a client polling /history right after execution_success sees {}
        self.queue.finish(item, frames.history_entry(success))
        self.hub.running_client, self.hub.last_node = None, None
        if item.client_id is not None:
            self.hub.send("executing", {"node": None, "prompt_id": item.prompt_id}, item.client_id)

"""One run of a validated prompt: what happens between ``execution_start`` and the RunResult.

All state here belongs to the run (results, node instances, the event loop for async nodes), so two runs of
one Executor on two threads share nothing but the Executor's locked output cache.

Step by step: every node an output needs gets a cache key (calling IS_CHANGED); the nodes whose key is in
the cache are served from it (``execution_cached``); the output nodes are queued with what they need, and the
queue hands out one ready node at a time. A node is either served from the cache (output nodes hand their UI
results over again), or called: once per list index, or once with whole lists (lists.py). A lazy node first
answers check_lazy_status; while it names inputs not yet evaluated, those are queued and the node waits. A
node that returns ``"expand"`` adds its graph to the run and waits for it (expansion.py).
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from .cache import CacheEntry, OutputCache, UiRecord
from .cache_keys import NO_FINGERPRINT, CacheKeys
from .calls import RunLoop, accepted_arguments
from .context import RunContext
from .errors import NodeExecutionError, RunCanceled
from .events import RunEvents, summarise_ui
from .expansion import ExpansionError, RunGraph, default_prefix
from .graph import is_link, needed_nodes, node_sort_key
from .lists import LinkedItems, call_arguments, merge_outputs, merge_ui
from .node_kinds import NodeKind, NodeKinds
from .outputs import OutputImage, RunResult
from .progress import NodeProgress, node_progress
from .registry import NodeRegistry
from .scheduler import ExecutionQueue, StuckNodes
from .specs import widget_value

__all__ = ["PromptRun"]

log = logging.getLogger(__name__)

IMAGE_RECORD_KEYS = {"png", "width", "height", "pixels", "filename_prefix"}


class NodeResultError(ValueError):
    """A node function returned something the executor cannot use."""


@dataclass
class _Call:
    """What one call of a node function returned."""

    result: tuple
    ui: Mapping[str, Any]
    graph: Any = None  # the "expand" graph, when the call expanded


@dataclass
class _Expansion:
    """A node waiting for the graph it expanded into."""

    calls: list[_Call]
    records: tuple[UiRecord, ...]  # its own UI result
    added: list[str] = field(default_factory=list)  # ids of the nodes it added


def _type_name(exc_type: type) -> str:
    """ComfyUI's spelling: builtins bare ("ValueError"), others with their module ("torch.OutOfMemoryError")."""
    module = exc_type.__module__
    return exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # a torch OOM can only come from a run that imported torch
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None))
                      if isinstance(t, type))
    return bool(oom_types) and isinstance(exc, oom_types)


class PromptRun:
    """Runs ``prompt`` once. ``free_memory`` empties the Executor's cache (and CUDA's) after an out-of-memory."""

    def __init__(self, prompt: dict[str, dict[str, Any]], registry: NodeRegistry, context: RunContext,
                 cache: OutputCache, free_memory: Callable[[], None]) -> None:
        self._prompt = prompt
        self._context = context
        self._cache = cache
        self._free_memory = free_memory
        self._graph = RunGraph(prompt)
        self._kinds = NodeKinds(registry)
        self._events = RunEvents(context.on_event, context.run_id)
        self._keys = CacheKeys(self._graph, self._kinds, self._fingerprint)
        self._results: dict[str, CacheEntry] = {}  # node id -> outputs, for nodes done in this run
        self._queue = ExecutionQueue(self._graph, self._is_lazy_input, self._results.__contains__)
        self._loop = RunLoop()
        self._instances: dict[str, object] = {}
        self._started: set[str] = set()  # nodes looked up in the cache and then called
        self._expansions: dict[str, _Expansion] = {}
        self._images: list[OutputImage] = []
        self._node_ms: dict[str, float] = {}
        self._cached: list[str] = []
        self._executed: list[str] = []

    # --- the run ---------------------------------------------------------------------------------------------

    def execute(self) -> RunResult:
        import torch  # only here, so importing the runtime stays light; nodes run without autograd

        started = time.perf_counter()
        self._events.start()
        try:
            with torch.inference_mode():
                outputs = sorted((n for n, node in self._prompt.items()
                                  if self._kinds.get(node["class_type"]).output_node), key=node_sort_key)
                self._serve_from_cache(needed_nodes(self._prompt, outputs))
                for node_id in outputs:
                    self._queue.add_node(node_id)
                while self._queue:
                    node_id = self._next_node()
                    if self._step(node_id):
                        self._queue.complete(node_id)
        finally:
            self._loop.close()
        self._events.success()
        return RunResult(outputs=self._images, execute_ms=(time.perf_counter() - started) * 1000,
                         node_ms=self._node_ms, cached_nodes=self._cached)

    def _serve_from_cache(self, node_ids: set[str]) -> None:
        for node_id in sorted(node_ids, key=node_sort_key):
            key = self._keys.key(node_id)
            entry = None if key.volatile else self._cache.get(key.digest)
            if entry is not None:  # held by the run from here on, whatever the LRU evicts meanwhile
                self._results[node_id] = entry
                self._cached.append(node_id)
        self._events.cached(self._cached)

    def _next_node(self) -> str:
        try:
            node_id = self._queue.next_ready()
        except StuckNodes as exc:
            raise self._failure(exc.node_ids[0], exc) from exc
        if self._context.should_cancel is not None and self._context.should_cancel():
            self._interrupted(node_id)
            raise RunCanceled(f"run canceled before node {node_id}")
        return node_id

    def _step(self, node_id: str) -> bool:
        """Advance ``node_id``; True when it is done, False when it waits for more of the graph."""
        try:
            return self._advance(node_id)
        except RunCanceled as exc:
            self._interrupted(node_id)
            raise RunCanceled(str(exc), self._graph.real_node(node_id)) from None
        except Exception as exc:  # any node failure is reported with its node; the cause stays chained
            raise self._failure(node_id, exc) from exc

    def _advance(self, node_id: str) -> bool:
        kind = self._kinds.get(self._graph.class_type(node_id))
        entry = self._results.get(node_id)
        if entry is not None:  # served from the cache at the start: hand its UI results (if any) over again
            self._replay(node_id, entry)
            return True
        expansion = self._expansions.pop(node_id, None)
        if expansion is not None:  # its expanded graph is done
            self._store(node_id, self._resolve(node_id, kind, expansion))
            return True
        if node_id not in self._started:
            self._started.add(node_id)
            key = self._keys.key(node_id)  # cached meanwhile: expanded nodes, duplicates of a node that ran
            entry = None if key.volatile else self._cache.get(key.digest)
            if entry is not None:
                self._results[node_id] = entry
                self._cached.append(node_id)
                self._events.cached([node_id])
                self._replay(node_id, entry)
                return True

        self._events.executing(node_id, self._graph.display_node(node_id))
        inputs, missing = self._inputs(node_id, kind, linked=True)
        instance = self._instances.get(node_id)
        if instance is None:
            instance = self._instances[node_id] = kind.cls()
        if kind.has_lazy_check:
            needed = self._lazy_needs(node_id, kind, instance, inputs, missing)
            if needed:
                for name in needed:
                    self._queue.require_input(node_id, name)
                return False

        returns = self._call(node_id, kind, getattr(instance, kind.cls.FUNCTION), inputs, expanding=True)
        calls = [self._parse(kind, value) for value in returns]
        ui = merge_ui([call.ui for call in calls if call.ui])
        records = (UiRecord(kind.class_type, ui),) if ui else ()
        for record in records:
            self._hand_over(node_id, record)
        if any(call.graph is not None for call in calls):
            self._expand(node_id, calls, records)
            return False
        self._store(node_id, CacheEntry(merge_outputs([c.result for c in calls], kind.output_is_list), records))
        return True

    def _store(self, node_id: str, entry: CacheEntry) -> None:
        self._results[node_id] = entry
        self._executed.append(node_id)
        key = self._keys.key(node_id)
        if not key.volatile:
            self._cache.put(key.digest, entry)

    # --- inputs and calls ------------------------------------------------------------------------------------

    def _is_lazy_input(self, node_id: str, input_name: str) -> bool:
        return input_name in self._kinds.get(self._graph.class_type(node_id)).lazy

    def _inputs(self, node_id: str, kind: NodeKind, *, linked: bool) -> tuple[dict[str, list], set[str]]:
        """Each declared input as a list of items, plus hidden ones; and the linked inputs not evaluated yet,
        passed as [None] (lazy inputs; every link when ``linked`` is False, as IS_CHANGED sees them)."""
        inputs: dict[str, list] = {}
        missing: set[str] = set()
        for name, value in self._graph.node(node_id)["inputs"].items():
            spec = kind.specs.get(name)
            if spec is None:
                continue  # not declared by the class: never passed
            if not is_link(value):
                inputs[name] = [widget_value(spec.type, value)]  # as ComfyUI converts it: "5" -> 5 for an INT
                continue
            if spec.options.get("rawLink"):  # the node wants the link itself (ComfyUI's rawLink option)
                inputs[name] = [value]
                continue
            entry = self._results.get(value[0]) if linked else None
            if entry is None:
                if linked and name not in kind.lazy:
                    raise RuntimeError(f"input {name!r} was not evaluated before the node ran")
                inputs[name], missing = [None], missing | {name}
                continue
            if not 0 <= value[1] < len(entry.outputs):
                raise NodeResultError(f"input {name!r} links to output {value[1]} of node {value[0]}, "
                                      f"which has {len(entry.outputs)} outputs")
            inputs[name] = entry.outputs[value[1]]
        for argument, hidden_type in kind.hidden.items():
            if hidden_type == "PROMPT":
                inputs[argument] = [copy.deepcopy(self._prompt)]
            elif hidden_type == "UNIQUE_ID":
                inputs[argument] = [node_id]
            elif hidden_type == "EXTRA_PNGINFO":
                inputs[argument] = [None]
            elif hidden_type == "INPUT_DIR":  # comfygate's way to hand over the run's input folder
                inputs[argument] = [self._context.input_dir]
        return inputs, missing

    def _call(self, node_id: str, kind: NodeKind, function: Callable[..., Any], inputs: dict[str, list], *,
              expanding: bool = False, hook: bool = False) -> list[Any]:
        """Call ``function`` once per list index (or once with whole lists); the node's time is added up."""
        progress = NodeProgress(node_id, self._events.progress, self._context.should_cancel)
        started = time.perf_counter()
        results = []
        try:
            with node_progress(progress):
                for index, arguments in enumerate(call_arguments(inputs, kind.input_is_list)):
                    if hook:
                        arguments = accepted_arguments(function, arguments)
                    with default_prefix(node_id, index) if expanding else nullcontext():
                        results.append(self._loop.call(function, arguments))
        finally:
            self._node_ms[node_id] = self._node_ms.get(node_id, 0.0) + (time.perf_counter() - started) * 1000
        return results

    def _lazy_needs(self, node_id: str, kind: NodeKind, instance: object, inputs: dict[str, list],
                    missing: set[str]) -> list[str]:
        """Inputs check_lazy_status names that are not evaluated yet (names it gives that are no input at all
        are kept, so the queue can say the node asked for something it does not have)."""
        answers = self._call(node_id, kind, instance.check_lazy_status, inputs, hook=True)  # type: ignore[attr-defined]
        named = {name for answer in answers if isinstance(answer, list | tuple)
                 for name in answer if isinstance(name, str)}
        return sorted(name for name in named if name in missing or name not in inputs)

    def _fingerprint(self, node_id: str) -> Any:
        """IS_CHANGED's answers (one per call) from the node's constants; NaN when it raises."""
        kind = self._kinds.get(self._graph.class_type(node_id))
        hook = getattr(kind.cls, "IS_CHANGED", None)
        if not callable(hook):
            return NO_FINGERPRINT
        try:
            inputs, _ = self._inputs(node_id, kind, linked=False)
            return [self._loop.call(hook, accepted_arguments(hook, arguments))
                    for arguments in call_arguments(inputs, kind.input_is_list)]
        except Exception as exc:  # as in ComfyUI: the node then always runs, and reports its own error
            log.warning("IS_CHANGED of node %s (%s) raised %s: %s; the node will run",
                        node_id, kind.class_type, _type_name(type(exc)), exc)
            return math.nan

    def _parse(self, kind: NodeKind, value: Any) -> _Call:
        ui: Any = {}
        graph = None
        if isinstance(value, dict):
            ui = value.get("ui") or {}
            graph = value.get("expand")
            value = value.get("result", ())
        if not isinstance(value, tuple | list) or len(value) != len(kind.cls.RETURN_TYPES):
            raise NodeResultError(f"node returned {type(value).__name__} but RETURN_TYPES declares "
                                  f"{len(kind.cls.RETURN_TYPES)} outputs")
        if not isinstance(ui, Mapping):
            raise NodeResultError(f"node returned 'ui' as {type(ui).__name__}, it must be an object")
        return _Call(tuple(value), ui, graph)

    # --- UI results ------------------------------------------------------------------------------------------

    def _hand_over(self, node_id: str, record: UiRecord) -> None:
        """Turn a UI result into OutputImages (numbered across the run) and an ``executed`` event."""
        display = record.display_node or self._graph.display_node(node_id)
        first = len(self._images)
        images = []
        for offset, image in enumerate(record.ui.get("images", ())):
            if not isinstance(image, dict) or set(image) != IMAGE_RECORD_KEYS:
                raise NodeResultError(f"ui image records must have exactly the keys {sorted(IMAGE_RECORD_KEYS)}")
            images.append(OutputImage(index=first + offset, node_id=display, class_type=record.class_type, **image))
        self._images.extend(images)
        self._events.executed(node_id if record.display_node is None else display, display,
                              summarise_ui(record.ui, first))

    def _replay(self, node_id: str, entry: CacheEntry) -> None:
        for record in entry.ui:
            self._hand_over(node_id, record)

    # --- expansion -------------------------------------------------------------------------------------------

    def _expand(self, node_id: str, calls: list[_Call], records: tuple[UiRecord, ...]) -> None:
        expansion = _Expansion(calls, records)
        waits_on: list[str] = []
        for call in calls:
            if call.graph is None:
                continue
            added = self._graph.add_expansion(node_id, call.graph, self._kinds)
            expansion.added.extend(added)
            waits_on.extend(n for n in added if self._kinds.get(self._graph.class_type(n)).output_node)
            for slot, value in enumerate(call.result):
                if is_link(value):
                    if value[0] not in self._graph:
                        raise ExpansionError(f"result {slot} links to node {value[0]!r}, which does not exist")
                    waits_on.append(value[0])
        self._expansions[node_id] = expansion
        # The node also waits for the output nodes it added, so it can keep their UI results for the cache.
        for source_id in waits_on:
            self._queue.add_dependency(source_id, node_id)

    def _resolve(self, node_id: str, kind: NodeKind, expansion: _Expansion) -> CacheEntry:
        """The expanding node's outputs (links replaced by what they point at) and every UI result its graph
        produced, so a cached hit hands them all over again."""
        results = []
        for call in expansion.calls:
            if call.graph is None:
                results.append(call.result)
            else:
                results.append(tuple(LinkedItems(self._linked_items(value)) if is_link(value) else value
                                     for value in call.result))
        records = list(expansion.records)
        display = self._graph.display_node(node_id)
        for added_id in expansion.added:
            entry = self._results.get(added_id)
            for record in entry.ui if entry is not None else ():
                shown = record.display_node or self._graph.display_node(added_id)
                records.append(UiRecord(record.class_type, record.ui, None if shown == display else shown))
        return CacheEntry(merge_outputs(results, kind.output_is_list), tuple(records))

    def _linked_items(self, link: list) -> list[Any]:
        source_id, slot = link
        entry = self._results.get(source_id)
        if entry is None:
            raise ExpansionError(f"result links to node {source_id!r}, which did not run")
        if not 0 <= slot < len(entry.outputs):
            raise ExpansionError(f"result links to output {slot} of node {source_id!r}, "
                                 f"which has {len(entry.outputs)} outputs")
        return entry.outputs[slot]

    # --- failures --------------------------------------------------------------------------------------------

    def _interrupted(self, node_id: str) -> None:
        real = self._graph.real_node(node_id)
        self._events.interrupted(real, self._graph.class_type(real), self._executed)

    def _failure(self, node_id: str, exc: Exception) -> NodeExecutionError:
        """The NodeExecutionError for ``exc`` raised while advancing ``node_id``, after the error event."""
        real = self._graph.real_node(node_id)  # users know the prompt's nodes, not generated ones
        real_type = self._graph.class_type(real)
        message = str(exc) or repr(exc)
        if node_id != real:
            message = f"expanded node {node_id} ({self._graph.class_type(node_id)}): {message}"
        exception_type = _type_name(type(exc))
        frames = traceback.format_tb(exc.__traceback__)
        printed = "".join(traceback.format_exception(exc))
        if _is_out_of_memory(exc):
            # The traceback's frames hold the node's tensors: drop them, then the run's and the cache's.
            traceback.clear_frames(exc.__traceback__)
            self._results.clear()
            self._expansions.clear()
            self._instances.clear()
            self._free_memory()
            message = f"out of memory in node {real} ({real_type}): {message}; cached outputs were freed"
        self._events.error(real, real_type, self._executed, exception_type, message, frames)
        return NodeExecutionError(real, real_type, message, exception_type, traceback=printed)

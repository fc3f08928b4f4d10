"""Runs a validated prompt: needed nodes only, in dependency order, nothing cached between runs.

Output nodes hand images over the ComfyUI way: their function returns ``{"ui": {"images": [record, ...]}}``
where each record is a dict with ``png`` (bytes), ``width``, ``height``, ``pixels`` (float32 [H, W, C]) and
``filename_prefix``. The executor turns records into :class:`OutputImage` and numbers them across the run.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from typing import Any

from .context import RunContext
from .errors import NodeExecutionError, RunCanceled
from .graph import execution_order, links_of
from .outputs import OutputImage, RunResult
from .registry import NodeRegistry
from .specs import hidden_inputs, input_specs
from .validation import output_node_ids, validate_prompt

__all__ = ["execute"]

IMAGE_RECORD_KEYS = {"png", "width", "height", "pixels", "filename_prefix"}


def _hidden_values(prompt: dict, node_id: str, context: RunContext) -> dict[str, Any]:
    """Values for ComfyUI's hidden input types (plus INPUT_DIR, comfygate's way to hand over the folder)."""
    return {"PROMPT": copy.deepcopy(prompt), "UNIQUE_ID": node_id, "EXTRA_PNGINFO": None,
            "INPUT_DIR": context.input_dir}


def _split_result(node_id: str, class_type: str, cls: type, value: Any) -> tuple[tuple, dict]:
    """(outputs, ui) from what a node function returned: a tuple, or a dict with "result" and/or "ui"."""
    ui: dict = {}
    if isinstance(value, dict):
        ui = value.get("ui") or {}
        value = value.get("result", ())
    if not isinstance(value, tuple | list) or len(value) != len(cls.RETURN_TYPES):
        raise NodeExecutionError(
            node_id, class_type,
            f"node returned {type(value).__name__} but RETURN_TYPES declares {len(cls.RETURN_TYPES)} outputs",
        )
    return tuple(value), ui


def _images(node_id: str, class_type: str, ui: dict, first_index: int) -> list[OutputImage]:
    images = []
    for offset, record in enumerate(ui.get("images", ())):
        if not isinstance(record, dict) or set(record) != IMAGE_RECORD_KEYS:
            message = f"ui image records must have exactly the keys {sorted(IMAGE_RECORD_KEYS)}"
            raise NodeExecutionError(node_id, class_type, message)
        index = first_index + offset
        images.append(OutputImage(index=index, node_id=node_id, class_type=class_type, **record))
    return images


def _run_node(prompt: dict, registry: NodeRegistry, node_id: str, results: dict[str, tuple],
              context: RunContext) -> tuple[tuple, dict]:
    node = prompt[node_id]
    class_type = node["class_type"]
    cls = registry.get(class_type)
    kwargs: dict[str, Any] = {}
    for name in input_specs(cls):
        if name not in node["inputs"]:
            continue
        value = node["inputs"][name]
        # Validation has ensured every list value is a well-formed link to an executed node.
        kwargs[name] = results[value[0]][value[1]] if isinstance(value, list | tuple) else value
    declared_hidden = hidden_inputs(cls)
    if declared_hidden:  # only then: PROMPT is a deep copy
        available = _hidden_values(prompt, node_id, context)
        kwargs.update({name: available[kind] for name, kind in declared_hidden.items() if kind in available})
    try:
        value = getattr(cls(), cls.FUNCTION)(**kwargs)
    except Exception as exc:  # any node failure is reported with its node; the cause stays chained
        raise NodeExecutionError(node_id, class_type, str(exc) or repr(exc), type(exc).__qualname__) from exc
    return _split_result(node_id, class_type, cls, value)


def execute(prompt: dict[str, dict[str, Any]], registry: NodeRegistry, context: RunContext) -> RunResult:
    """Validate and run ``prompt``. Raises WorkflowInvalid, NodeExecutionError or RunCanceled."""
    import torch  # only here, so importing the runtime stays light; nodes run without autograd

    validate_prompt(prompt, registry)
    order = execution_order(prompt, output_node_ids(prompt, registry))
    # Drop each result once its last consumer has run, so big tensors do not live for the whole run.
    uses_left = Counter(src for node_id in order for _, src, _ in links_of(prompt[node_id]))
    results: dict[str, tuple] = {}
    images: list[OutputImage] = []
    node_ms: dict[str, float] = {}
    started = time.perf_counter()
    with torch.inference_mode():
        for node_id in order:
            if context.should_cancel is not None and context.should_cancel():
                raise RunCanceled(f"run canceled before node {node_id}")
            if context.on_event is not None:
                context.on_event({"type": "executing", "node": node_id})
            node_started = time.perf_counter()
            results[node_id], ui = _run_node(prompt, registry, node_id, results, context)
            node_ms[node_id] = (time.perf_counter() - node_started) * 1000
            images.extend(_images(node_id, prompt[node_id]["class_type"], ui, len(images)))
            for _, src, _ in links_of(prompt[node_id]):
                uses_left[src] -= 1
                if uses_left[src] == 0:
                    results.pop(src, None)
    if context.on_event is not None:
        context.on_event({"type": "executing", "node": None})  # ComfyUI's "run finished" signal
    return RunResult(outputs=images, execute_ms=(time.perf_counter() - started) * 1000, node_ms=node_ms)

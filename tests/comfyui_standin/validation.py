"""POST /prompt's verdict in ComfyUI 0.3.64's exact shapes (recording 03), from comfygate's validate_prompt.

comfygate already gives ComfyUI's node_errors; what differs is adjusted here: the top-level ``details`` lists
only the failing output nodes' own errors, ``extra_info`` carries what ComfyUI puts there (comfygate adds the
received value or the schema source), exception errors say what Python said in ComfyUI (``'99'``, ``tuple
index out of range``) with a traceback, and a node without ``inputs`` fails the way ComfyUI's validation
trips over it (a KeyError on ``'inputs'``) instead of being refused as malformed.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfygate.comfy_runtime import NodeRegistry, NodeSchemas, WorkflowInvalid, validate_prompt
from comfygate.comfy_runtime.specs import jsonable

__all__ = ["Verdict", "check_prompt"]

Error = dict[str, Any]
EXCEPTION_TYPES = ("exception_during_validation", "exception_during_inner_validation")


@dataclass
class Verdict:
    """Accepted when ``error`` is None: ``outputs`` run; ``node_errors`` name the outputs that were dropped."""

    outputs: list[str] = field(default_factory=list)
    error: Error | None = None
    node_errors: dict[str, Any] = field(default_factory=dict)
    run_prompt: dict[str, Any] = field(default_factory=dict)


def _id_order(node_id: str) -> tuple[int, str]:
    return len(node_id), node_id  # "2" before "10", as comfygate orders node ids


def _top(type_: str, message: str, details: str = "") -> Error:
    return {"type": type_, "message": message, "details": details, "extra_info": {}}


def _links(node: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    inputs = node.get("inputs") if isinstance(node, Mapping) else None
    return [(name, value[0], value[1]) for name, value in (inputs or {}).items()
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)]


def _needed(prompt: Mapping[str, Any], outputs: list[str]) -> set[str]:
    """The outputs and every node they reach through links."""
    seen: set[str] = set()
    todo = list(outputs)
    while todo:
        node_id = todo.pop()
        if node_id in seen or node_id not in prompt:
            continue
        seen.add(node_id)
        todo.extend(source for _, source, _ in _links(prompt[node_id]))
    return seen


def _consumer(prompt: Mapping[str, Any], node_id: str) -> tuple[str, str, list[Any]] | None:
    """(consumer id, its input name, the link) of the first node that links to ``node_id``."""
    for consumer_id in sorted(prompt, key=_id_order):
        for name, source, slot in _links(prompt[consumer_id]):
            if source == node_id:
                return consumer_id, name, [source, slot]
    return None


def _traceback_of(exc_type: str, message: str) -> list[str]:
    """A real traceback (of this module) for an exception like the one ComfyUI's validation hit."""
    try:
        raise (KeyError if exc_type == "KeyError" else IndexError)(message)
    except LookupError as exc:
        return traceback.format_tb(exc.__traceback__)


def _python_text(error: Error) -> tuple[str, str]:
    """(exception type, str(exception)) as Python put it inside ComfyUI's validation."""
    extra = error.get("extra_info", {})
    exc_type = extra.get("exception_type", "Exception")
    if exc_type == "KeyError" and isinstance(extra.get("linked_node"), list):
        return exc_type, repr(str(extra["linked_node"][0]))
    if exc_type == "IndexError":
        return exc_type, "tuple index out of range"
    return exc_type, str(extra.get("exception_message", error.get("details", "")))


class _Adapter:
    def __init__(self, prompt: Mapping[str, Any], schemas: NodeSchemas) -> None:
        self.prompt = prompt
        self.schemas = schemas

    def input_config(self, class_type: str, name: str) -> Any:
        spec = self.schemas[class_type].inputs.get(name) if class_type in self.schemas else None
        if spec is None:
            return None
        return jsonable([spec.raw[0] if spec.raw else spec.type, dict(spec.options)])

    def exception_error(self, node_id: str, exc_type: str, text: str, inner: bool) -> Error:
        """ComfyUI's exception error; an inner one names the consumer's input and link, as ComfyUI does."""
        tb = _traceback_of(exc_type, text)
        if not inner:
            return {"type": "exception_during_validation", "message": "Exception when validating node",
                    "details": text, "extra_info": {"exception_type": exc_type, "traceback": tb}}
        extra: dict[str, Any] = {}
        found = _consumer(self.prompt, node_id)
        if found is not None:
            consumer_id, name, link = found
            extra = {"input_name": name, "input_config": self.input_config(self.prompt[consumer_id]["class_type"],
                                                                            name)}
        extra.update({"exception_message": text, "exception_type": exc_type, "traceback": tb})
        if found is not None:
            extra["linked_node"] = found[2]
        return {"type": "exception_during_inner_validation", "message": "Exception when validating inner node",
                "details": text, "extra_info": extra}

    def adapt(self, node_id: str, error: Error) -> Error:
        kind, extra = error["type"], dict(error.get("extra_info") or {})
        if kind == "custom_validation_failed":
            return {**error, "extra_info": {"input_name": extra.get("input_name")}}
        if kind == "return_type_mismatch":
            extra.pop("received_value", None)
            return {**error, "extra_info": extra}
        if kind in EXCEPTION_TYPES:
            exc_type, text = _python_text(error)
            return self.exception_error(node_id, exc_type, text, kind == EXCEPTION_TYPES[1])
        return error


def _details(node_errors: Mapping[str, Any]) -> str:
    """ComfyUI lists the failing output nodes' own errors (an output that failed through an ancestor adds none)."""
    failed = sorted({o for entry in node_errors.values() for o in entry["dependent_outputs"]}, key=_id_order)
    return "\n".join(f"{e['message']}: {e['details']}" for o in failed
                     for e in node_errors.get(o, {}).get("errors", []))


def _shape_error(prompt: Any, schemas: NodeSchemas) -> Error | None:
    """invalid_prompt for the first node without class_type or of an unknown class; TypeError where ComfyUI
    itself crashes (a prompt that is not an object, a node that is neither an object nor a string)."""
    if not isinstance(prompt, dict):
        raise TypeError("prompt must be an object")  # ComfyUI answers 500 here
    for node_id, node in prompt.items():
        if isinstance(node, str) and "class_type" not in node:
            return _top("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{node_id}'")
        if not isinstance(node, dict):
            raise TypeError(f"node {node_id!r} is not an object")
        if "class_type" not in node:
            return _top("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{node_id}'")
        if node["class_type"] not in schemas:
            return _top("invalid_prompt", f"Cannot execute because node {node['class_type']} does not exist.",
                        f"Node ID '#{node_id}'")
    return None


def check_prompt(prompt: Any, source: NodeRegistry | NodeSchemas, input_dir: Path) -> Verdict:
    """Validate as ComfyUI's POST /prompt does. TypeError where ComfyUI would fail with a 500."""
    schemas = source.schemas() if isinstance(source, NodeRegistry) else source
    shape = _shape_error(prompt, schemas)
    if shape is not None:
        return Verdict(error=shape)
    no_inputs = [node_id for node_id, node in prompt.items() if "inputs" not in node]
    patched = {node_id: ({**node, "inputs": {}} if node_id in no_inputs else node) for node_id, node in prompt.items()}
    try:
        result = validate_prompt(patched, source, input_dir=input_dir)
        good, raw_errors = list(result.outputs), result.node_errors
    except WorkflowInvalid as exc:
        if exc.error["type"] != "prompt_outputs_failed_validation":
            return Verdict(error={**exc.error, "extra_info": {}}, node_errors=exc.node_errors)
        good, raw_errors = [], exc.node_errors
    adapter = _Adapter(prompt, schemas)
    node_errors = {node_id: {**entry, "errors": [adapter.adapt(node_id, e) for e in entry["errors"]]}
                   for node_id, entry in raw_errors.items()}
    outputs = sorted({*good, *(o for e in raw_errors.values() for o in e["dependent_outputs"])}, key=_id_order)
    for node_id in no_inputs:  # ComfyUI trips over prompt[node_id]["inputs"] when it validates the node
        dependents = [o for o in outputs if node_id in _needed(patched, [o])]
        if not dependents:
            continue
        is_output = node_id in outputs
        error = adapter.exception_error(node_id, "KeyError", "'inputs'", inner=not is_output)
        node_errors[node_id] = {"errors": [error], "dependent_outputs": dependents,
                                "class_type": prompt[node_id]["class_type"]}
        good = [o for o in good if o not in dependents]
    node_errors = dict(sorted(node_errors.items(), key=lambda item: _id_order(item[0])))
    if not good:
        return Verdict(error=_top("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                  _details(node_errors)), node_errors=node_errors)
    needed = _needed(patched, good)
    return Verdict(outputs=good, node_errors=node_errors,
                   run_prompt={node_id: node for node_id, node in patched.items() if node_id in needed})

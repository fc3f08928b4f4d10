"""Validation of an API-format prompt against a node registry, with ComfyUI's error shapes."""

from __future__ import annotations

import inspect
from collections.abc import Collection
from pathlib import Path
from typing import Any

from .errors import WorkflowInvalid
from .graph import execution_order, is_link, needed_nodes, node_sort_key
from .registry import NodeRegistry
from .specs import InputSpec, check_value, input_specs, jsonable

__all__ = ["output_node_ids", "validate_prompt"]


def _top_error(type_: str, message: str, details: str = "") -> dict[str, Any]:
    return {"type": type_, "message": message, "details": details, "extra_info": {}}


def output_node_ids(prompt: dict[str, dict[str, Any]], registry: NodeRegistry) -> list[str]:
    """Ids of the nodes whose class is an output node (OUTPUT_NODE = True), in id order."""
    ids = [n for n, node in prompt.items() if getattr(registry.get(node["class_type"]), "OUTPUT_NODE", False)]
    return sorted(ids, key=node_sort_key)


def _validate_inputs_params(cls: type) -> set[str]:
    """Inputs named by the node's own VALIDATE_INPUTS classmethod (ComfyUI's custom-validation hook)."""
    hook = getattr(cls, "VALIDATE_INPUTS", None)
    return set(inspect.signature(hook).parameters) if hook is not None else set()


def _types_match(received: Any, expected: str) -> bool:
    received = "COMBO" if isinstance(received, list | tuple) else received
    return received == expected or "*" in (received, expected)


def _link_problem(
    prompt: dict[str, dict[str, Any]], registry: NodeRegistry, value: Any, spec: InputSpec
) -> tuple[str, str, dict[str, Any]] | None:
    """(error type, message, extra_info additions) when a linked input is broken."""
    if not is_link(value):
        return "bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]", {}
    source_id, slot = value
    if source_id not in prompt:
        return "bad_linked_input", f"Bad linked input: linked node {source_id!r} does not exist", {}
    source_type = prompt[source_id]["class_type"]
    return_types = registry.get(source_type).RETURN_TYPES
    if not 0 <= slot < len(return_types):
        message = (
            f"Bad linked input: node {source_id!r} ({source_type}) has no output {slot}, "
            f"it has {len(return_types)}"
        )
        return "bad_linked_input", message, {}
    received = return_types[slot]
    if not _types_match(received, spec.type):
        message = (
            f"Return type mismatch between linked nodes: received_type({received}) "
            f"mismatch input_type({spec.type})"
        )
        return "return_type_mismatch", message, {"received_type": received, "linked_node": value}
    return None


def _node_errors(
    prompt: dict[str, dict[str, Any]],
    registry: NodeRegistry,
    node_id: str,
    skip_file_check: Collection[tuple[str, str]],
    input_dir: Path | None,
) -> list[dict[str, Any]]:
    node = prompt[node_id]
    class_type = node["class_type"]
    cls = registry.get(class_type)
    inputs = node["inputs"]
    errors: list[dict[str, Any]] = []

    def add(type_: str, message: str, name: str, **extra: Any) -> None:
        errors.append({
            "type": type_,
            "message": message,
            "details": f"node {node_id!r} ({class_type}), input {name!r}",
            "extra_info": {"input_name": name, **extra},
        })

    custom = _validate_inputs_params(cls)
    constants: dict[str, Any] = {}
    for name, spec in input_specs(cls).items():
        if name not in inputs:
            if spec.required:
                add("required_input_missing", "Required input is missing", name)
            continue
        value = inputs[name]
        context = {"input_config": jsonable(spec.raw), "received_value": value}
        if isinstance(value, list | tuple):  # as in ComfyUI, any list is read as a link
            problem = _link_problem(prompt, registry, value, spec)
            if problem is not None:
                add(problem[0], problem[1], name, **context, **problem[2])
            continue
        if spec.kind is None:
            message = f"Input of type {spec.type} must be linked to a node output"
            add("invalid_input_type", message, name, **context)
            continue
        problem = check_value(
            spec.kind,
            value,
            minimum=spec.options.get("min"),
            maximum=spec.options.get("max"),
            choices=spec.choices,
            check_range=name not in custom,  # ComfyUI: a node validating an input itself owns its range
        )
        if problem is not None:
            add(problem[0], problem[1], name, **context)
            continue
        if (
            spec.kind == "image"
            and input_dir is not None
            and (node_id, name) not in skip_file_check
            and not (input_dir / value).is_file()
        ):
            add("custom_validation_failed", f"Invalid image file: {value!r} is not in the input folder", name,
                **context)
            continue
        constants[name] = value

    # The hook sees constants only; when one of its inputs is linked the node re-checks while running.
    if custom and not errors and custom <= constants.keys():
        verdict = cls.VALIDATE_INPUTS(**{name: constants[name] for name in custom})
        if verdict is not True:
            for name in sorted(custom):
                add("custom_validation_failed", f"Custom validation failed for node: {verdict}", name,
                    received_value=constants[name])
    return errors


def validate_prompt(
    prompt: dict[str, dict[str, Any]],
    registry: NodeRegistry,
    *,
    skip_file_check: Collection[tuple[str, str]] = (),
    input_dir: Path | None = None,
) -> None:
    """Raise WorkflowInvalid unless every node needed by an output node can run.

    File names (LoadImage.image) are always checked for safety. Their existence is checked only when
    ``input_dir`` is given and ``(node_id, input_name)`` is not in ``skip_file_check``; otherwise the
    node checks it when it runs.
    """
    for node_id, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if not isinstance(class_type, str) or not isinstance(node.get("inputs"), dict):
            raise WorkflowInvalid(_top_error(
                "invalid_prompt",
                f"Cannot execute because node {node_id!r} is missing the class_type or inputs property.",
                f"Node ID '#{node_id}'",
            ))
        if class_type not in registry:
            raise WorkflowInvalid(_top_error(
                "invalid_prompt",
                f"Cannot execute because node {class_type} does not exist (node id {node_id!r}).",
                f"Node ID '#{node_id}'",
            ))

    outputs = output_node_ids(prompt, registry)
    if not outputs:
        raise WorkflowInvalid(_top_error("prompt_no_outputs", "Prompt has no outputs"))

    ancestors = {o: needed_nodes(prompt, [o]) for o in outputs}
    node_errors: dict[str, dict[str, Any]] = {}
    for node_id in sorted(needed_nodes(prompt, outputs), key=node_sort_key):
        errors = _node_errors(prompt, registry, node_id, skip_file_check, input_dir)
        if errors:
            node_errors[node_id] = {
                "errors": errors,
                "dependent_outputs": [o for o in outputs if node_id in ancestors[o]],
                "class_type": prompt[node_id]["class_type"],
            }
    if node_errors:
        lines = [f"{e['message']}: {e['details']}" for entry in node_errors.values() for e in entry["errors"]]
        details = "\n".join(lines)
        top = _top_error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
        raise WorkflowInvalid(top, node_errors)
    execution_order(prompt, outputs)  # raises on a dependency cycle

"""Exposed inputs: which workflow constants a caller may set, their JSON Schema, and binding values."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InputsInvalid, WorkflowInvalid
from .graph import node_sort_key
from .input_rules import OUTPUT_PATH_INPUTS
from .registry import NodeRegistry
from .schemas import NodeSchemas
from .specs import InputSpec, check_value

__all__ = ["ExposedInput", "bind_inputs", "expose_inputs", "input_schema"]

JSON_TYPES = {"int": "integer", "float": "number", "string": "string", "boolean": "boolean"}
IMAGE_DESCRIPTION = (
    "Image file: send base64-encoded image data (or a multipart file); it is stored and passed to the "
    "workflow by name."
)


@dataclass(frozen=True)
class ExposedInput:
    name: str
    node_id: str
    input_name: str
    class_type: str
    kind: str  # "int" | "float" | "string" | "boolean" | "combo" | "image"
    schema: dict
    default: object  # the workflow's constant value (used when the caller omits it); None = required


def _schema(spec: InputSpec, default: Any) -> dict[str, Any]:
    kind = spec.kind
    if kind == "image":  # the workflow's default is a stored file name, not image data: not shown
        return {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png",
                "description": IMAGE_DESCRIPTION}
    if kind == "combo":
        schema: dict[str, Any] = {"enum": list(spec.choices)}
    else:
        schema = {"type": JSON_TYPES[kind]}
        if kind in ("int", "float"):
            for key, option in (("minimum", "min"), ("maximum", "max")):
                if option in spec.options:
                    schema[key] = spec.options[option]
    if default is not None:
        schema["default"] = default
    return schema


def _spec_error(message: str, node_id: str, input_name: str, class_type: str | None) -> WorkflowInvalid:
    details = f"node {node_id!r}, input {input_name!r}"
    error = {"type": "invalid_input_spec", "message": message, "details": details, "extra_info": {}}
    if class_type is None:
        return WorkflowInvalid(error)
    node_error = {**error, "extra_info": {"input_name": input_name}}
    return WorkflowInvalid(
        error, {node_id: {"errors": [node_error], "dependent_outputs": [], "class_type": class_type}}
    )


def _expose_one(
    prompt: dict, schemas: NodeSchemas, name: str, node_id: str, input_name: str
) -> ExposedInput:
    if node_id not in prompt:
        raise _spec_error(f"Exposed input {name!r} names node {node_id!r}, which is not in the workflow",
                          node_id, input_name, None)
    class_type = prompt[node_id]["class_type"]
    schema = schemas.get(class_type)
    if schema is None:
        raise _spec_error(f"Node {node_id!r} has unknown class_type {class_type!r}",
                          node_id, input_name, None)
    spec = schema.inputs.get(input_name)
    if spec is None:
        raise _spec_error(f"Exposed input {name!r}: {class_type} has no input {input_name!r}",
                          node_id, input_name, class_type)
    value = prompt[node_id]["inputs"].get(input_name, spec.options.get("default"))
    if isinstance(value, list | tuple):
        raise _spec_error(f"Exposed input {name!r}: input {input_name!r} is linked to another node, "
                          "only constant inputs can be exposed", node_id, input_name, class_type)
    if spec.kind is None:
        raise _spec_error(f"Exposed input {name!r}: inputs of type {spec.type} cannot be exposed",
                          node_id, input_name, class_type)
    if spec.kind == "image" and value == "":
        value = None  # no file named yet: the caller must send one
    return ExposedInput(name, node_id, input_name, class_type, spec.kind, _schema(spec, value), value)


def expose_inputs(
    prompt: dict[str, dict[str, Any]],
    source: NodeRegistry | NodeSchemas,
    spec: Mapping[str, Mapping[str, str]] | None,
) -> list[ExposedInput]:
    """The inputs callers may set. ``spec`` maps a public name to ``{"node": id, "input": name}``.

    ``source``: a registry, or the node schemas of the runtime that will run the prompt (another server's).

    With ``spec`` None every constant widget input of every node is exposed as "<node id>.<input name>", but
    those naming where a node writes (``OUTPUT_PATH_INPUTS``): a spec must name those to expose them.
    """
    schemas = source.schemas() if isinstance(source, NodeRegistry) else source
    if spec is None:
        spec = {}
        for node_id in sorted(prompt, key=node_sort_key):
            node = prompt[node_id]
            schema = schemas.get(node["class_type"])
            if schema is None:
                raise _spec_error(f"Node {node_id!r} has unknown class_type {node['class_type']!r}",
                                  node_id, "", None)
            for input_name, input_spec in schema.inputs.items():
                value = node["inputs"].get(input_name)
                if input_name in OUTPUT_PATH_INPUTS:
                    continue
                if input_spec.kind is not None and value is not None and not isinstance(value, list | tuple):
                    spec[f"{node_id}.{input_name}"] = {"node": node_id, "input": input_name}
    exposed: list[ExposedInput] = []
    targets: dict[tuple[str, str], str] = {}
    for name, entry in spec.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("node"), str) \
                or not isinstance(entry.get("input"), str):
            raise _spec_error(f"Exposed input {name!r} must be {{\"node\": <id>, \"input\": <name>}}",
                              str(entry), "", None)
        target = (entry["node"], entry["input"])
        if target in targets:
            raise _spec_error(f"Exposed inputs {targets[target]!r} and {name!r} set the same node input",
                              target[0], target[1], None)
        targets[target] = name
        exposed.append(_expose_one(prompt, schemas, name, *target))
    return exposed


def input_schema(exposed: Sequence[ExposedInput]) -> dict[str, Any]:
    """JSON Schema of the request body: one property per exposed input; those without a default required."""
    return {
        "type": "object",
        "properties": {e.name: e.schema for e in exposed},
        "required": [e.name for e in exposed if e.default is None],
        "additionalProperties": False,
    }


def bind_inputs(
    prompt: dict[str, dict[str, Any]], exposed: Sequence[ExposedInput], values: Mapping[str, object]
) -> dict[str, dict[str, Any]]:
    """A new prompt with ``values`` set. InputsInvalid lists every problem; values are never converted.

    Image inputs arrive here as a stored file name (the platform decodes uploads first).
    """
    if not isinstance(values, Mapping):
        message = f"inputs must be an object, got {type(values).__name__}"
        raise InputsInvalid([{"input": "", "message": message}])
    by_name = {e.name: e for e in exposed}
    errors = [{"input": name, "message": f"unknown input {name!r}"} for name in values if name not in by_name]
    bound = copy.deepcopy(prompt)
    for e in exposed:
        if e.name not in values:
            if e.default is None:
                errors.append({"input": e.name, "message": "required input is missing"})
            else:
                bound[e.node_id]["inputs"][e.input_name] = copy.deepcopy(e.default)
            continue
        value = values[e.name]
        problem = check_value(
            e.kind,
            value,
            minimum=e.schema.get("minimum"),
            maximum=e.schema.get("maximum"),
            choices=e.schema.get("enum", ()),
        )
        if problem is not None:
            errors.append({"input": e.name, "message": problem[1]})
            continue
        bound[e.node_id]["inputs"][e.input_name] = value
    if errors:
        raise InputsInvalid(errors)
    return bound

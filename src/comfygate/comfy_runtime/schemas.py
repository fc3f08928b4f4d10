"""Node schemas: what a runtime says about each node type, in the shape of ComfyUI's ``GET /object_info``.

Validation and UI-format conversion work on schemas, not on node classes, so the same code can check a
workflow against this process's registry or against another backend's ``/object_info`` (a real ComfyUI
server, or the reference file of one).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NodeSchemaError
from .specs import InputSpec

__all__ = ["NodeSchema", "NodeSchemas", "load_object_info"]

OBJECT_INFO_TIMEOUT_SECONDS = 30


def _input_spec(class_type: str, name: str, entry: Any, required: bool) -> InputSpec:
    if not isinstance(entry, list | tuple) or not entry:
        raise NodeSchemaError(f"node {class_type!r}, input {name!r}: declaration must be [type, options?]")
    type_, options = entry[0], (entry[1] if len(entry) > 1 else {})
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise NodeSchemaError(f"node {class_type!r}, input {name!r}: options must be an object")
    choices: tuple[Any, ...] = ()
    if isinstance(type_, list | tuple):
        type_, choices = "COMBO", tuple(type_)
    elif type_ == "COMBO":  # newer nodes spell a COMBO as ("COMBO", {"options": [...]})
        listed = options.get("options") or ()
        if not isinstance(listed, list | tuple):
            raise NodeSchemaError(f"node {class_type!r}, input {name!r}: COMBO options must be a list")
        choices = tuple(listed)
    if not isinstance(type_, str):
        raise NodeSchemaError(f"node {class_type!r}, input {name!r}: type must be a string or a list of choices")
    return InputSpec(name, type_, options, required, choices, tuple(entry))


def _ordered_names(section: Mapping[str, Any], order: Any) -> list[str]:
    """Declared order: ``input_order`` when the schema has it (JSON objects may lose order), else key order."""
    if isinstance(order, list) and all(isinstance(n, str) for n in order) and set(order) == set(section):
        return list(order)
    return list(section)


@dataclass(frozen=True)
class NodeSchema:
    class_type: str
    inputs: dict[str, InputSpec]  # required, then optional, each in declaration order
    hidden: dict[str, str]  # argument name -> hidden type ("PROMPT", "UNIQUE_ID", ...)
    outputs: tuple[str, ...]  # output types by slot
    output_is_list: tuple[bool, ...]
    output_node: bool
    info: dict[str, Any] = field(repr=False, compare=False)  # the object_info entry as given

    @classmethod
    def from_object_info(cls, class_type: str, entry: Any) -> NodeSchema:
        """Read one ``/object_info`` entry; NodeSchemaError names the node and field when it is malformed."""
        if not isinstance(entry, Mapping):
            raise NodeSchemaError(f"node {class_type!r}: schema must be an object")
        declared = entry.get("input") or {}
        order = entry.get("input_order") or {}
        if not isinstance(declared, Mapping) or not isinstance(order, Mapping):
            raise NodeSchemaError(f"node {class_type!r}: 'input' and 'input_order' must be objects")
        inputs: dict[str, InputSpec] = {}
        for section in ("required", "optional"):
            entries = declared.get(section) or {}
            if not isinstance(entries, Mapping):
                raise NodeSchemaError(f"node {class_type!r}: input.{section} must be an object")
            for name in _ordered_names(entries, order.get(section)):
                inputs[name] = _input_spec(class_type, name, entries[name], section == "required")
        hidden = declared.get("hidden") or {}
        if not isinstance(hidden, Mapping):
            raise NodeSchemaError(f"node {class_type!r}: input.hidden must be an object")
        outputs = entry.get("output") or []
        if not isinstance(outputs, list | tuple):
            raise NodeSchemaError(f"node {class_type!r}: 'output' must be a list")
        # Output types are strings, or a list of choices for a COMBO output (e.g. a primitive string list).
        output_types = tuple("COMBO" if isinstance(t, list | tuple) else str(t) for t in outputs)
        is_list = entry.get("output_is_list") or [False] * len(outputs)
        if not isinstance(is_list, list | tuple):
            raise NodeSchemaError(f"node {class_type!r}: 'output_is_list' must be a list")
        return cls(
            class_type=class_type,
            inputs=inputs,
            hidden={str(k): (v[0] if isinstance(v, list | tuple) and v else v) for k, v in hidden.items()},
            outputs=output_types,
            output_is_list=tuple(bool(b) for b in is_list) + (False,) * (len(outputs) - len(is_list)),
            output_node=bool(entry.get("output_node", False)),
            info=dict(entry),
        )


class NodeSchemas(Mapping[str, NodeSchema]):
    """class_type -> NodeSchema, read-only. Build it from a registry or from an object_info document."""

    def __init__(self, schemas: Mapping[str, NodeSchema], source: str) -> None:
        self._schemas = dict(schemas)
        self.source = source  # for messages: "this runtime", a file path or a URL

    @classmethod
    def from_object_info(cls, data: Any, source: str = "object_info") -> NodeSchemas:
        if not isinstance(data, Mapping):
            raise NodeSchemaError(f"{source}: object_info must be a JSON object mapping node types to schemas")
        return cls({name: NodeSchema.from_object_info(name, entry) for name, entry in data.items()}, source)

    def object_info(self) -> dict[str, dict[str, Any]]:
        """The whole document in ComfyUI's ``GET /object_info`` shape."""
        return {name: schema.info for name, schema in self._schemas.items()}

    def __getitem__(self, class_type: str) -> NodeSchema:
        return self._schemas[class_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._schemas)

    def __len__(self) -> int:
        return len(self._schemas)


def load_object_info(source: str) -> NodeSchemas:
    """Schemas from a JSON file, or from a ComfyUI-compatible server: ``http(s)://host:port`` (``/object_info``
    is appended unless the URL already ends with it). NodeSchemaError says what could not be read."""
    try:
        if source.startswith(("http://", "https://")):
            url = source if source.rstrip("/").endswith("/object_info") else source.rstrip("/") + "/object_info"
            with urllib.request.urlopen(url, timeout=OBJECT_INFO_TIMEOUT_SECONDS) as response:  # noqa: S310
                data = json.loads(response.read())
        else:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NodeSchemaError(f"cannot read node schemas from {source}: {exc}") from exc
    return NodeSchemas.from_object_info(data, source)

"""Workflow document formats. Only ComfyUI's API format ("Export (API)") is accepted for now."""

from __future__ import annotations

import copy
import json
from typing import Any

from .errors import WorkflowFormatError

__all__ = ["parse_workflow"]


def _looks_like_ui_export(data: dict[str, Any]) -> bool:
    return isinstance(data.get("nodes"), list) and "links" in data


def parse_workflow(data: object) -> dict[str, dict[str, Any]]:
    """Check an API-format workflow ``{node_id: {"class_type": str, "inputs": {...}}}`` and return a copy.

    ``data`` may be the decoded JSON object, or JSON text (str/bytes). Only the shape is checked here;
    node classes and input values are checked by :func:`validate_prompt`.
    """
    if isinstance(data, str | bytes | bytearray):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise WorkflowFormatError(f"workflow is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise WorkflowFormatError(
            f"workflow must be a JSON object mapping node ids to nodes, got {type(data).__name__}"
        )
    if _looks_like_ui_export(data):
        raise WorkflowFormatError(
            "this is a ComfyUI UI-format workflow (it has 'nodes' and 'links'); UI format is not supported "
            "yet: in ComfyUI use Workflow > Export (API) and upload that file"
        )
    if not data:
        raise WorkflowFormatError("workflow is empty: it has no nodes")
    prompt: dict[str, dict[str, Any]] = {}
    for node_id, node in data.items():
        where = f"node {node_id!r}"
        if not isinstance(node_id, str) or not node_id:
            raise WorkflowFormatError(f"{where}: node ids must be non-empty strings")
        if not isinstance(node, dict):
            raise WorkflowFormatError(f"{where}: must be an object, got {type(node).__name__}")
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            raise WorkflowFormatError(f"{where}: 'class_type' is missing or not a non-empty string")
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            raise WorkflowFormatError(f"{where} ({class_type}): 'inputs' must be an object")
        parsed = {"class_type": class_type, "inputs": copy.deepcopy(inputs)}
        if isinstance(node.get("_meta"), dict):
            parsed["_meta"] = copy.deepcopy(node["_meta"])  # titles, kept for display
        prompt[node_id] = parsed
    return prompt

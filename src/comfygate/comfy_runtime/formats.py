"""Workflow documents: ComfyUI's API format ("Export (API)") and its UI format (what the editor saves).

:func:`load_workflow` is the one entry point for uploads: it detects the format, converts a UI document with
the node schemas of the runtime that will run it, and checks that every node type exists there.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Literal

from .errors import MissingModelFiles, UnknownNodeTypes, WorkflowFormatError, WorkflowInvalid
from .registry import NodeRegistry
from .requirements import missing_model_files
from .schemas import NodeSchemas
from .ui_format import convert_ui_workflow, is_ui_workflow
from .validation import validate_prompt

__all__ = ["LoadedWorkflow", "load_valid_workflow", "load_workflow", "parse_workflow"]


@dataclass(frozen=True)
class LoadedWorkflow:
    prompt: dict[str, dict[str, Any]]  # API format, ready for validation
    source_format: Literal["api", "ui"]
    document: Any  # the decoded document as given, kept so the original upload can be stored


def _decode(data: object) -> object:
    if isinstance(data, str | bytes | bytearray):
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkflowFormatError(f"workflow is not valid JSON: {exc}") from exc
    return data


def load_workflow(data: object, schemas: NodeSchemas) -> LoadedWorkflow:
    """Read an API- or UI-format workflow (decoded JSON or JSON text) into an API-format prompt.

    Raises WorkflowFormatError for a malformed document; converting a UI document raises UnknownNodeTypes,
    listing all of them, when node types are missing from ``schemas``. Validation checks the rest.
    """
    document = _decode(data)
    if is_ui_workflow(document):
        return LoadedWorkflow(convert_ui_workflow(document, schemas), "ui", document)
    return LoadedWorkflow(parse_workflow(document), "api", document)


def load_valid_workflow(data: object, source: NodeRegistry | NodeSchemas, *,
                        hooks: NodeRegistry | None = None) -> LoadedWorkflow:
    """:func:`load_workflow`, then validation of every output: what an upload must pass.

    ComfyUI would run the outputs that validate and drop the others; a workflow endpoint that silently loses
    an output branch is a silent fix, so here any node error refuses the whole workflow. When the workflow
    fails and names model files the schemas' loaders lack, the error is MissingModelFiles listing them
    (UnknownNodeTypes lists them too). ``hooks``: as in :func:`validate_prompt`.
    """
    schemas = source.schemas() if isinstance(source, NodeRegistry) else source
    loaded = load_workflow(data, schemas)
    try:
        # Without an input dir, LoadImage names are checked for safety only: the files arrive with each run.
        validate_prompt(loaded.prompt, source, hooks=hooks).raise_for_node_errors()
    except UnknownNodeTypes:
        raise
    except WorkflowInvalid as exc:
        models = missing_model_files(loaded.prompt, schemas)
        if models:
            raise MissingModelFiles(models, exc) from exc
        raise
    return loaded


def parse_workflow(data: object) -> dict[str, dict[str, Any]]:
    """Check an API-format workflow ``{node_id: {"class_type": str, "inputs": {...}}}`` and return a copy.

    ``data`` may be the decoded JSON object, or JSON text (str/bytes). Only the shape is checked here;
    node classes and input values are checked by :func:`validate_prompt`.
    """
    data = _decode(data)
    if not isinstance(data, dict):
        raise WorkflowFormatError(
            f"workflow must be a JSON object mapping node ids to nodes, got {type(data).__name__}"
        )
    if is_ui_workflow(data):
        raise WorkflowFormatError("this is a UI-format workflow; it needs node schemas: use load_workflow")
    if isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        raise WorkflowFormatError(
            "this looks like the body of a ComfyUI /prompt request: upload the object under 'prompt' instead")
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

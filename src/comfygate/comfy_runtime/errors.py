"""Errors raised by the workflow runtime.

Every error derives from one base class, so callers can catch the whole family::

    ComfyRuntimeError
     ├── WorkflowFormatError   the document is not an API-format workflow (shape, not meaning)
     ├── WorkflowInvalid       the graph breaks node rules; carries ComfyUI's error / node_errors shape
     │    ├── UnknownNodeTypes  the workflow uses node types this runtime does not have (.missing lists all)
     │    └── MissingModelFiles the workflow failed validation and names model files this runtime lacks
     ├── InputsInvalid         caller-supplied values for exposed inputs are wrong (.errors lists all)
     ├── NodeExecutionError    a node raised while running; names node id and class
     ├── RunCanceled           should_cancel() said stop (checked between nodes and at each progress report)
     ├── NodePackError         a node pack cannot be loaded or clashes with one already registered
     └── NodeSchemaError       a node schema (object_info entry) is malformed or cannot be read
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ComfyRuntimeError",
    "InputsInvalid",
    "MissingModelFiles",
    "NodeExecutionError",
    "NodePackError",
    "NodeSchemaError",
    "RunCanceled",
    "UnknownNodeTypes",
    "WorkflowFormatError",
    "WorkflowInvalid",
]


class ComfyRuntimeError(Exception):
    """Base class of every error raised by comfygate.comfy_runtime."""


class WorkflowFormatError(ComfyRuntimeError):
    """The workflow document has the wrong shape; the message says what and where."""


class WorkflowInvalid(ComfyRuntimeError):
    """The prompt failed validation.

    ``error`` is ComfyUI's top-level error ``{"type", "message", "details", "extra_info"}`` and
    ``node_errors`` maps node id -> ``{"errors": [...], "dependent_outputs": [...], "class_type": ...}``.
    """

    def __init__(self, error: dict[str, Any], node_errors: dict[str, dict[str, Any]] | None = None) -> None:
        self.error = error
        self.node_errors = node_errors or {}
        details = error.get("details")
        super().__init__(f"{error['message']}: {details}" if details else error["message"])

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error, "node_errors": self.node_errors}


class UnknownNodeTypes(WorkflowInvalid):
    """The workflow needs node types the schemas lack. ``missing`` maps each class_type to its node ids.

    The error keeps ComfyUI's shape (``invalid_prompt`` naming the first unknown node); ComfyUI stops at that
    one, here every missing type is listed in the message and in ``extra_info``.
    """

    def __init__(self, missing: dict[str, list[str]], source: str = "this runtime",
                 missing_models: list[dict[str, str]] | None = None) -> None:
        self.missing = missing
        # Model files the nodes of known types name and the schemas lack (see requirements.py): the known
        # nodes are not validated once a type is missing, so these are listed in extra_info (the message
        # stays ComfyUI's).
        self.missing_models = list(missing_models or [])
        first_type, first_ids = next(iter(missing.items()))
        message = f"Cannot execute because node {first_type} does not exist."
        others = [f"{t} (node {', '.join(ids)})" for t, ids in list(missing.items())[1:]]
        if others:
            message += f" Other missing node types: {', '.join(others)}."
        extra_info: dict[str, Any] = {"missing_node_types": sorted(missing), "nodes": missing, "schemas": source}
        if self.missing_models:
            extra_info["missing_model_files"] = self.missing_models
        super().__init__({
            "type": "invalid_prompt",
            "message": message,
            "details": f"Node ID '#{first_ids[0]}'",
            "extra_info": extra_info,
        })


class MissingModelFiles(WorkflowInvalid):
    """Validation failed and the workflow names model files that the schemas' loaders do not list.

    Keeps the validator's ``error`` and ``node_errors`` (``value_not_in_list`` among them); ``missing_models``
    is ``[{"node", "class_type", "input", "value"}]``, one entry per file.
    """

    def __init__(self, missing_models: list[dict[str, str]], invalid: WorkflowInvalid) -> None:
        self.missing_models = list(missing_models)
        super().__init__(invalid.error, invalid.node_errors)


class InputsInvalid(ComfyRuntimeError):
    """Values given for exposed inputs are wrong; ``errors`` is ``[{"input": name, "message": ...}, ...]``."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['input']}: {e['message']}" for e in errors))


class NodeExecutionError(ComfyRuntimeError):
    """A node failed while running. The original exception is chained as ``__cause__``."""

    def __init__(self, node_id: str, class_type: str, message: str, exception_type: str = "",
                 traceback: str = "") -> None:
        self.node_id = node_id
        self.class_type = class_type
        self.message = message
        self.exception_type = exception_type
        self.traceback = traceback  # the node's exception as Python prints it; kept out of to_dict (server paths)
        super().__init__(f"node {node_id} ({class_type}): {message}")

    def to_dict(self) -> dict[str, str]:
        return {
            "node_id": self.node_id,
            "node_type": self.class_type,
            "message": self.message,
            "exception_type": self.exception_type,
        }


class RunCanceled(ComfyRuntimeError):
    """The run was canceled: between two nodes, or inside one at its next progress report.

    ``node_id`` is the prompt node that was running when the cancel was seen, None between nodes.
    """

    def __init__(self, message: str, node_id: str | None = None) -> None:
        self.node_id = node_id
        super().__init__(message)


class NodePackError(ComfyRuntimeError):
    """A node pack cannot be imported, is malformed, or registers a class_type twice."""


class NodeSchemaError(ComfyRuntimeError):
    """A node schema (an ``/object_info`` entry) is malformed, or an object_info source cannot be read."""

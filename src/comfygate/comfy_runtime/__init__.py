"""comfygate's workflow runtime: formats, validation, exposed inputs, node registry and executor.

A library: no web server, database or task queue here; torch is imported by node packs only.
"""

from .context import RunContext
from .errors import (
    ComfyRuntimeError,
    InputsInvalid,
    NodeExecutionError,
    NodePackError,
    RunCanceled,
    WorkflowFormatError,
    WorkflowInvalid,
)
from .executor import execute
from .formats import parse_workflow
from .inputs import ExposedInput, bind_inputs, expose_inputs, input_schema
from .outputs import OutputImage, RunResult
from .registry import NodeRegistry, create_registry
from .validation import validate_prompt

__all__ = [
    "ComfyRuntimeError",
    "ExposedInput",
    "InputsInvalid",
    "NodeExecutionError",
    "NodePackError",
    "NodeRegistry",
    "OutputImage",
    "RunCanceled",
    "RunContext",
    "RunResult",
    "WorkflowFormatError",
    "WorkflowInvalid",
    "bind_inputs",
    "create_registry",
    "execute",
    "expose_inputs",
    "input_schema",
    "parse_workflow",
    "validate_prompt",
]

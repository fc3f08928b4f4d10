"""comfygate's workflow runtime: formats (API and UI), node schemas, validation, exposed inputs, node registry
and node packs, and the executor with its node cache.

A library: no web server, database or task queue here; torch is imported by node packs and run paths only.
"""

from .context import RunContext
from .errors import (
    ComfyRuntimeError,
    InputsInvalid,
    MissingModelFiles,
    NodeExecutionError,
    NodePackError,
    NodeSchemaError,
    RunCanceled,
    UnknownNodeTypes,
    WorkflowFormatError,
    WorkflowInvalid,
)
from .executor import Executor, execute
from .formats import LoadedWorkflow, load_valid_workflow, load_workflow, parse_workflow
from .input_rules import OUTPUT_PATH_INPUTS, LimitFinding, over_limits
from .inputs import ExposedInput, bind_inputs, expose_inputs, input_schema
from .nodepacks import PackReport
from .outputs import OutputImage, RunResult
from .progress import ProgressBar, report_progress
from .registry import NodeRegistry, create_registry
from .requirements import MODEL_FILE_EXTENSIONS, missing_model_files
from .schemas import NodeSchema, NodeSchemas, load_object_info
from .validation import ValidationResult, validate_prompt

__all__ = [
    "ComfyRuntimeError",
    "Executor",
    "ExposedInput",
    "InputsInvalid",
    "LimitFinding",
    "LoadedWorkflow",
    "MODEL_FILE_EXTENSIONS",
    "MissingModelFiles",
    "NodeExecutionError",
    "NodePackError",
    "NodeRegistry",
    "NodeSchema",
    "NodeSchemaError",
    "NodeSchemas",
    "OUTPUT_PATH_INPUTS",
    "OutputImage",
    "PackReport",
    "ProgressBar",
    "RunCanceled",
    "RunContext",
    "RunResult",
    "UnknownNodeTypes",
    "ValidationResult",
    "WorkflowFormatError",
    "WorkflowInvalid",
    "bind_inputs",
    "create_registry",
    "execute",
    "expose_inputs",
    "input_schema",
    "load_object_info",
    "load_valid_workflow",
    "load_workflow",
    "missing_model_files",
    "over_limits",
    "parse_workflow",
    "report_progress",
    "validate_prompt",
]

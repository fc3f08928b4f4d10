"""A prompt on its way into ComfyUI: the job's files uploaded and named in it, and how a refusal reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfygate.comfy_runtime import WorkflowInvalid

from ..base import FILE_INPUTS, EngineUnavailable
from .client import ComfyClient, HTTPStatusError

__all__ = ["rejected", "saving_into", "upload_inputs"]


def upload_inputs(client: ComfyClient, prompt: dict[str, Any], files: Mapping[str, bytes],
                  folder: str | None) -> dict[str, Any]:
    """Uploads ``files`` into ComfyUI's input/<folder>/ and returns the prompt with its file inputs
    (FILE_INPUTS) naming them as ComfyUI answers; the prompt itself when there are no files."""
    if not files:
        return prompt
    names: dict[str, str] = {}
    for name, data in files.items():
        parent, _, leaf = name.rpartition("/")
        subfolder = f"{folder}/{parent}" if parent else folder
        try:
            answer = client.upload_image(leaf, data, subfolder)
        except HTTPStatusError as exc:
            raise WorkflowInvalid({"type": "input_upload_failed", "message": f"ComfyUI refused input file {name!r}",
                                   "details": str(exc), "extra_info": {}}) from None
        names[name] = "/".join(part for part in (answer.get("subfolder"), answer["name"]) if part)
    return {node_id: _renamed(node, names) for node_id, node in prompt.items()}


def _renamed(node: Any, names: dict[str, str]) -> Any:
    if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
        return node
    inputs = {key: names.get(value, value) if (node.get("class_type"), key) in FILE_INPUTS and isinstance(
        value, str) else value for key, value in node["inputs"].items()}
    return {**node, "inputs": inputs}


def rejected(exc: HTTPStatusError) -> Exception:
    """POST /prompt's refusal as WorkflowInvalid, with ComfyUI's error and node_errors as they came."""
    body = exc.body
    if exc.status == 400 and isinstance(body, dict) and body.get("error"):
        error = body["error"]
        if not isinstance(error, dict) or "message" not in error:
            error = {"type": "invalid_prompt", "message": str(error), "details": "", "extra_info": {}}
        node_errors = body.get("node_errors")
        return WorkflowInvalid(error, node_errors if isinstance(node_errors, dict) else {})
    if 400 <= exc.status <= 500:  # 500: ComfyUI could not even read it (not JSON, a string prompt)
        return WorkflowInvalid({"type": "prompt_rejected", "message": f"ComfyUI refused the prompt (HTTP "
                                f"{exc.status})", "details": str(body)[:500], "extra_info": {}})
    return EngineUnavailable(str(exc))


def saving_into(prompt: dict[str, Any], folder: str) -> dict[str, Any]:
    """The prompt with every constant ``filename_prefix`` put under ``folder`` (see run.py: a prompt's own
    output folder). A prefix wired from another node is left as it is."""
    return {node_id: _saving_into(node, folder) for node_id, node in prompt.items()}


def _saving_into(node: Any, folder: str) -> Any:
    inputs = node.get("inputs") if isinstance(node, dict) else None
    prefix = inputs.get("filename_prefix") if isinstance(inputs, dict) else None
    if not isinstance(prefix, str):
        return node
    # The API refuses such prefixes before a run exists; this guards the folder of prompts from elsewhere.
    parts = prefix.replace("\\", "/").split("/")
    if prefix.startswith("/") or ".." in parts:
        raise WorkflowInvalid({"type": "prompt_outputs_failed_validation", "message": "unsafe filename_prefix",
                               "details": f"filename_prefix {prefix[:100]!r} leaves the run's output folder",
                               "extra_info": {}})
    return {**node, "inputs": {**inputs, "filename_prefix": f"{folder}/{prefix}"}}

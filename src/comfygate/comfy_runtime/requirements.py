"""Model files a workflow names that the runtime checking it does not have.

Loader nodes list the files present in their COMBO inputs (``UNETLoader.unet_name``), so a file the runtime
lacks is a constant missing from that list. ComfyUI reports it as ``value_not_in_list`` among other errors;
this names each such file, so an upload refused for a pool can say which files that pool's workers need.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .graph import node_sort_key
from .schemas import NodeSchemas

__all__ = ["MODEL_FILE_EXTENSIONS", "looks_like_model_file", "missing_model_files"]

# Weights formats ComfyUI's model folders hold (folder_paths.supported_pt_extensions, with gguf and onnx).
MODEL_FILE_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".pt2", ".bin", ".gguf", ".sft", ".onnx")


def looks_like_model_file(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(MODEL_FILE_EXTENSIONS)


def missing_model_files(prompt: Mapping[str, Any], schemas: NodeSchemas) -> list[dict[str, str]]:
    """``[{"node", "class_type", "input", "value"}]`` in node id order: every constant of a COMBO input, on a
    node type ``schemas`` knows, that names a model file (by its extension) the input's choices lack.

    Nodes of unknown types are skipped (they are reported as missing node types), as are upload inputs
    (LoadImage's files arrive with each run) and malformed nodes (the validator names those).
    """
    missing: list[dict[str, str]] = []
    for node_id in sorted((k for k in prompt if isinstance(k, str)), key=node_sort_key):
        node = prompt[node_id]
        if not isinstance(node, Mapping) or not isinstance(node.get("inputs"), Mapping):
            continue
        schema = schemas.get(node.get("class_type")) if isinstance(node.get("class_type"), str) else None
        if schema is None:
            continue
        for name, spec in schema.inputs.items():
            value = node["inputs"].get(name)
            if spec.type == "COMBO" and not spec.file_upload and looks_like_model_file(value) \
                    and value not in spec.choices:
                missing.append({"node": node_id, "class_type": schema.class_type, "input": name, "value": value})
    return missing

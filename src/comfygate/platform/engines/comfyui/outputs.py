"""A finished prompt's outputs, from its history entry (or its executed frames): which files, which text.

A node's UI output is ``{key: [...]}``. File lists hold ``{filename, subfolder, type}`` under any key
(``images``, ``gifs``, ``audio``, ``video``, ``3d``, ``latents``...); ``type`` "output" are the saved results,
"temp" are previews (not returned, but deleted afterwards). ``text`` lists strings a node shows (PreviewAny).
``animated`` is a flag list, not files.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from comfygate.comfy_runtime import NodeExecutionError

from ..base import EngineOutput
from ..media import content_type_for
from .client import ComfyClient

__all__ = ["TEXT_TYPE", "FileRef", "fetch_outputs", "file_refs", "node_order", "written_files"]

TEXT_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class FileRef:
    node_id: str
    filename: str
    subfolder: str
    type: str  # "output", "temp" (or "input")
    animated: bool


def fetch_outputs(client: ComfyClient, ui_outputs: Mapping[str, Any], executed: Iterable[str],
                  prompt: Mapping[str, Any]) -> list[EngineOutput]:
    """The results: each output node's text, then its output files (fetched), nodes in execution order."""
    outputs: list[EngineOutput] = []
    for node in node_order(ui_outputs, executed):
        ui = ui_outputs[node]
        if not isinstance(ui, dict):
            continue
        class_type = str((prompt.get(node) or {}).get("class_type") or "")
        outputs.extend(text_outputs(node, class_type, ui))
        for ref in file_refs(node, ui):
            if ref.type != "output":
                continue  # previews (temp) are not results
            data = client.view(ref.filename, ref.subfolder, ref.type)
            if data is None:
                raise NodeExecutionError(node, class_type, f"ComfyUI names output file "
                                         f"{ref.subfolder}/{ref.filename} but does not have it", "FileNotFoundError")
            # By extension only, as the API serves it: ComfyUI's own type for one we do not know (image/svg+xml,
            # text/html...) would be refused by the gate, or served inline from the API's origin.
            media = content_type_for(ref.filename)
            width, height = image_size(data, media, ref.animated)
            outputs.append(EngineOutput(node_id=node, class_type=class_type, filename=ref.filename, data=data,
                                        content_type=media, width=width, height=height))
    return outputs


def written_files(ui_outputs: Mapping[str, Any], cached: Iterable[str]) -> list[FileRef]:
    """The output and temp files a prompt wrote: not those of nodes answered from the cache (an earlier
    prompt's files, which that prompt's run deletes)."""
    skip = set(cached)
    return [ref for node, ui in ui_outputs.items() if node not in skip and isinstance(ui, dict)
            for ref in file_refs(node, ui) if ref.type in ("output", "temp")]


def node_order(outputs: Mapping[str, Any], executed: Iterable[str]) -> list[str]:
    """Output nodes in execution order: as their executed frames came, then the rest as the history lists them
    (ComfyUI adds them to the entry as they finish)."""
    order = [node for node in executed if node in outputs]
    return order + [node for node in outputs if node not in order]


def file_refs(node_id: str, ui: Mapping[str, Any]) -> list[FileRef]:
    animated = any(flag is True for flag in ui.get("animated") or ())
    refs = []
    for key, value in ui.items():
        if key == "animated" or not isinstance(value, list):
            continue
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("filename"), str):
                refs.append(FileRef(node_id, item["filename"], str(item.get("subfolder") or ""),
                                    str(item.get("type") or "output"), animated))
    return refs


def text_outputs(node_id: str, class_type: str, ui: Mapping[str, Any]) -> list[EngineOutput]:
    texts = ui.get("text")
    if isinstance(texts, str):
        texts = [texts]
    strings = [t for t in texts or () if isinstance(t, str)]
    return [EngineOutput(node_id=node_id, class_type=class_type, filename=f"{node_id}_text_{n}.txt",
                         data=text.encode("utf-8"), content_type=TEXT_TYPE)
            for n, text in enumerate(strings, start=1)]


def image_size(data: bytes, media_type: str, animated: bool) -> tuple[int | None, int | None]:
    """Width and height of a still image (read from its header only); None for anything else."""
    if animated or not media_type.startswith("image/"):
        return None, None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if getattr(image, "is_animated", False):
                return None, None
            return image.width, image.height
    except (UnidentifiedImageError, OSError, ValueError):
        return None, None

"""The stand-in's node pack: ComfyUI's output nodes writing real files, plus fault nodes for tests.

comfygate's own SaveImage and PreviewImage hand PNG bytes back to their caller; a ComfyUI server writes files
and reports ``{"images": [{filename, subfolder, type}]}``. The classes here do the latter and replace the
built-in two in the stand-in's registry (:func:`build_registry`). The executor reads an ``images`` ui key as
comfygate's own image records, so these nodes report their files under :data:`FILES_KEY`, which
:func:`comfy_ui` renames back before anything leaves the server.

Node classes are made per server by :func:`standin_nodes`, bound to that server's :class:`StandinState`
(its folders, and whether a POST /free came), so nothing is global.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comfygate.comfy_runtime import NodeRegistry
from comfygate.comfy_runtime.diffusion.library import ModelLibrary
from comfygate.comfy_runtime.diffusion.model_paths import ModelPaths

from .files import Folders, save_target, temp_prefix

__all__ = ["FILES_KEY", "StandinState", "build_registry", "comfy_ui", "standin_nodes"]

FILES_KEY = "standin_files"  # the ui key output nodes report files under, "images" once it leaves the server
REPLACED_BUILTINS = ("SaveImage", "PreviewImage")
HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
HIDDEN_V3 = {"prompt": ("PROMPT",), "extra_pnginfo": ("EXTRA_PNGINFO",)}  # how comfy_api v3 nodes declare them
PREFIX_TOOLTIP = ("The prefix for the file to save. This may include formatting information such as "
                  "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.")
OUT_OF_MEMORY_MESSAGE = ("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 23.55 GiB "
                         "of which 3.06 MiB is free. (comfyui_standin.StandinOutOfMemory)")


@dataclass
class StandinState:
    """What the nodes of one stand-in server share with it."""

    folders: Folders
    frees: int = 0  # POST /free requests (free_memory or unload_models) the worker has acted on
    out_of_memory_at: int | None = None  # ``frees`` when StandinOutOfMemory last failed in mode "until_freed"


def comfy_ui(ui: Mapping[str, Any]) -> dict[str, Any]:
    """A node's ui output as ComfyUI reports it: FILES_KEY back to "images", in its place among the keys."""
    return {("images" if key == FILES_KEY else key): value for key, value in ui.items()}


def pictures(images: torch.Tensor) -> list[Image.Image]:
    """An IMAGE batch [B, H, W, C] in 0..1 as 8-bit Pillow pictures."""
    array = np.clip(images.detach().cpu().float().numpy() * 255.0, 0, 255).round().astype(np.uint8)
    return [Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame) for frame in array]


def png_info(prompt: Any) -> PngInfo | None:
    if prompt is None:
        return None
    info = PngInfo()
    info.add_text("prompt", json.dumps(prompt))
    return info


class StandinNode:
    """Base of the pack's classes; ``state`` is set on the subclasses standin_nodes() makes for one server."""

    state: StandinState
    CATEGORY = "image"
    DESCRIPTION = ""
    PYTHON_MODULE = "custom_nodes.comfyui_standin"  # /object_info's python_module: where ComfyUI has the node


class StandinOutputNode(StandinNode):
    """A node that saves or shows something and returns nothing (ComfyUI's output nodes)."""

    RETURN_TYPES = ()
    OUTPUT_NODE = True


class SaveImage(StandinOutputNode):
    PYTHON_MODULE = "nodes"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    FUNCTION = "save_images"
    kind, compress_level = "output", 4

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"images": ("IMAGE", {"tooltip": "The images to save."}),
                             "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": PREFIX_TOOLTIP})},
                "hidden": HIDDEN}

    def save_images(self, images, filename_prefix: str = "ComfyUI", prompt=None, extra_pnginfo=None):
        root = self.state.folders.output if self.kind == "output" else self.state.folders.temp
        target = save_target(root, filename_prefix)
        records = []
        for offset, picture in enumerate(pictures(images)):
            picture.save(target.folder / target.name(offset, "png"), pnginfo=png_info(prompt),
                         compress_level=self.compress_level)
            records.append(target.record(offset, "png", self.kind))
        return {"ui": {FILES_KEY: records}}


class PreviewImage(SaveImage):
    kind, compress_level = "temp", 1

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"images": ("IMAGE",)}, "hidden": HIDDEN}

    def save_images(self, images, filename_prefix: str = "ComfyUI", prompt=None, extra_pnginfo=None):
        return super().save_images(images, temp_prefix(), prompt, extra_pnginfo)


def _fps() -> tuple:
    return ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01})


class SaveAnimatedWEBP(StandinOutputNode):
    PYTHON_MODULE = "comfy_extras.nodes_images"
    CATEGORY = "image/animation"
    FUNCTION = "save_images"
    METHODS = {"default": 4, "fastest": 0, "slowest": 6}

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                             "fps": _fps(), "lossless": ("BOOLEAN", {"default": True}),
                             "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
                             "method": (list(cls.METHODS),)},
                "hidden": HIDDEN}

    def save_images(self, images, filename_prefix, fps, lossless, quality, method, prompt=None, extra_pnginfo=None):
        frames = pictures(images)
        target = save_target(self.state.folders.output, filename_prefix)
        frames[0].save(target.folder / target.name(0, "webp"), save_all=True, append_images=frames[1:],
                       duration=int(1000.0 / fps), lossless=lossless, quality=quality, method=self.METHODS[method])
        return {"ui": {FILES_KEY: [target.record(0, "webp", "output")], "animated": [len(frames) != 1]}}


class SaveAnimatedPNG(StandinOutputNode):
    PYTHON_MODULE = "comfy_extras.nodes_images"
    CATEGORY = "image/animation"
    FUNCTION = "save_images"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                             "fps": _fps(), "compress_level": ("INT", {"default": 4, "min": 0, "max": 9})},
                "hidden": HIDDEN}

    def save_images(self, images, filename_prefix, fps, compress_level, prompt=None, extra_pnginfo=None):
        frames = pictures(images)
        target = save_target(self.state.folders.output, filename_prefix)
        frames[0].save(target.folder / target.name(0, "png"), save_all=True, append_images=frames[1:],
                       duration=int(1000.0 / fps), compress_level=compress_level, pnginfo=png_info(prompt))
        return {"ui": {FILES_KEY: [target.record(0, "png", "output")], "animated": [True]}}


class SaveLatent(StandinOutputNode):
    PYTHON_MODULE = "nodes"
    CATEGORY = "_for_testing"
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"samples": ("LATENT",), "filename_prefix": ("STRING", {"default": "latents/ComfyUI"})},
                "hidden": HIDDEN}

    def save(self, samples, filename_prefix, prompt=None, extra_pnginfo=None):
        from safetensors.torch import save_file

        target = save_target(self.state.folders.output, filename_prefix)
        # ComfyUI's .latent layout: the tensor plus an empty marker naming the format version.
        tensors = {"latent_tensor": samples["samples"].contiguous(), "latent_format_version_0": torch.tensor([])}
        metadata = {"prompt": json.dumps(prompt)} if prompt is not None else None
        save_file(tensors, str(target.folder / target.name(0, "latent")), metadata=metadata)
        return {"ui": {"latents": [target.record(0, "latent", "output")]}}


def preview_text(source: Any) -> str:
    """What PreviewAny shows: strings as they are, JSON where it can, else the value's str (a tensor's repr)."""
    if isinstance(source, str):
        return source
    if isinstance(source, int | float | bool):
        return str(source)
    try:
        return json.dumps(source)
    except (TypeError, ValueError):
        return str(source)


class PreviewAny(StandinOutputNode):
    PYTHON_MODULE = "comfy_extras.nodes_preview_any"
    CATEGORY = "utils"
    FUNCTION = "main"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"source": ("*", {})}}

    def main(self, source=None):
        return {"ui": {"text": [preview_text(source)]}}


class StandinOutOfMemory(StandinNode):
    """Raises torch's OutOfMemoryError, as a GPU that ran out of memory. Mode "until_freed": the first run fails,
    and so does every run until a POST /free (free_memory or unload_models) has been acted on after that
    failure; from then on it passes its image through. Mode "always": every run fails."""

    CATEGORY = "testing"
    DESCRIPTION = "Fails like a GPU that ran out of memory (tests only)."
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"image": ("IMAGE",), "mode": (["until_freed", "always"],)}}

    def run(self, image, mode: str):
        if mode == "always":
            raise torch.OutOfMemoryError(OUT_OF_MEMORY_MESSAGE)
        if self.state.out_of_memory_at in (None, self.state.frees):  # never failed, or nothing freed since
            self.state.out_of_memory_at = self.state.frees
            raise torch.OutOfMemoryError(OUT_OF_MEMORY_MESSAGE)
        return (image,)


class StandinSaveFile(StandinOutputNode):
    """Waits ``seconds`` without ever checking for an interrupt (as a node that encodes a long video does), then
    saves ``text`` as ``<prefix>_NNNNN_.<extension>`` in output/ (an .svg as SaveSVGNode writes one)."""

    CATEGORY = "testing"
    DESCRIPTION = "Saves text as a file after a wait that ignores interrupts (tests only)."
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's node interface
        return {"required": {"text": ("STRING", {"default": ""}), "extension": ("STRING", {"default": "txt"}),
                             "seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 60.0}),
                             "filename_prefix": ("STRING", {"default": "ComfyUI"})}}

    def save(self, text: str, extension: str, seconds: float, filename_prefix: str):
        threading.Event().wait(seconds)  # deaf to interrupts: no progress reports
        target = save_target(self.state.folders.output, filename_prefix)
        (target.folder / target.name(0, extension)).write_text(text)
        return {"ui": {FILES_KEY: [target.record(0, extension, "output")]}}


def standin_nodes(state: StandinState) -> tuple[dict[str, type], dict[str, str]]:
    """(class_type -> class bound to ``state``, display names) of the whole stand-in pack."""
    from .media import MEDIA_DISPLAY_NAMES, MEDIA_NODES

    classes: Sequence[type] = (SaveImage, PreviewImage, SaveAnimatedWEBP, SaveAnimatedPNG, SaveLatent, PreviewAny,
                               StandinOutOfMemory, StandinSaveFile, *MEDIA_NODES)
    bound = {cls.__name__: type(cls.__name__, (cls,), {"state": state}) for cls in classes}
    display = {"SaveImage": "Save Image", "PreviewImage": "Preview Image", "PreviewAny": "Preview Any",
               **MEDIA_DISPLAY_NAMES}
    return bound, display


def build_registry(state: StandinState, pack_dirs: Sequence[Path]) -> NodeRegistry:
    """comfygate's built-in nodes (SaveImage and PreviewImage replaced by the pack's), the stand-in pack, and
    every node pack in ``pack_dirs`` (as ComfyUI's custom_nodes), over the install's models/ folder."""
    from comfygate.comfy_runtime import nodes as builtin
    from comfygate.comfy_runtime.nodepacks import find_packs
    from comfygate.comfy_runtime.nodes.diffusion import DISPLAY_NAMES, diffusion_nodes

    models = ModelLibrary(ModelPaths(state.folders.models), device="cpu")
    registry = NodeRegistry(models)
    mappings = {name: cls for name, cls in {**builtin.NODE_CLASS_MAPPINGS, **diffusion_nodes(models)}.items()
                if name not in REPLACED_BUILTINS}
    registry.register_pack(mappings, display_names={**builtin.NODE_DISPLAY_NAME_MAPPINGS, **DISPLAY_NAMES},
                           source="nodes")
    classes, display = standin_nodes(state)
    for module in sorted({cls.PYTHON_MODULE for cls in classes.values()}):
        registry.register_pack({name: cls for name, cls in classes.items() if module == cls.PYTHON_MODULE},
                               display_names=display, source=module)
    for folder in pack_dirs:
        for path in find_packs(Path(folder).absolute()):
            registry.load_pack(path)
    return registry

"""Conditioning nodes: text encoding, CLIP's last layer, combining conditionings and restricting them to an area.

CONDITIONING is ComfyUI's list of ``[cond, options]`` pairs: cond is [1, tokens, width]; options may hold
``pooled_output`` (SDXL), ``area`` (h, w, y, x in latent cells = pixels // 8) and ``strength``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comfygate.comfy_runtime.diffusion.handles import ClipHandle

MAX_RESOLUTION = 16384
LATENT_CELL = 8  # pixels per latent cell


def _require_clip(clip: ClipHandle | None) -> ClipHandle:
    if clip is None:
        raise ValueError("clip input is invalid: None. If it comes from a checkpoint loader, that checkpoint "
                         "holds no text encoder; load one with CLIPLoader")
    return clip


class CLIPTextEncode:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    DESCRIPTION = "Encodes a text prompt with the CLIP model into an embedding that guides the diffusion model."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."}),
            "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
        }}

    def encode(self, clip: ClipHandle | None, text: str):
        cond, pooled = _require_clip(clip).encode(text)
        return ([[cond, {"pooled_output": pooled}]],)


class CLIPSetLastLayer:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "set_last_layer"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",),
                             "stop_at_clip_layer": ("INT", {"default": -1, "min": -24, "max": -1, "step": 1})}}

    def set_last_layer(self, clip: ClipHandle | None, stop_at_clip_layer: int):
        return (_require_clip(clip).stopping_at(stop_at_clip_layer),)


class ConditioningCombine:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning_1": ("CONDITIONING",), "conditioning_2": ("CONDITIONING",)}}

    def combine(self, conditioning_1: list, conditioning_2: list):
        return (conditioning_1 + conditioning_2,)


class ConditioningSetArea:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "set_area"

    @classmethod
    def INPUT_TYPES(cls):
        def size(minimum: int) -> tuple:
            return ("INT", {"default": 64 if minimum else 0, "min": minimum, "max": MAX_RESOLUTION, "step": 8})

        return {"required": {
            "conditioning": ("CONDITIONING",),
            "width": size(64), "height": size(64), "x": size(0), "y": size(0),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}),
        }}

    def set_area(self, conditioning: list, width: int, height: int, x: int, y: int, strength: float):
        area = (height // LATENT_CELL, width // LATENT_CELL, y // LATENT_CELL, x // LATENT_CELL)
        # New option dicts: the incoming conditioning may be shared with other nodes (and the node cache).
        return ([[cond, {**options, "area": area, "strength": strength, "set_area_to_bounds": False}]
                 for cond, options in conditioning],)

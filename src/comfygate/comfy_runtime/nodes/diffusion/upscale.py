"""ImageUpscaleWithModel: run an upscale model (ESRGAN and the rest spandrel knows) over an image, in tiles."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from comfygate.comfy_runtime.progress import report_progress

if TYPE_CHECKING:
    from comfygate.comfy_runtime.diffusion.handles import PoolRef


class ImageUpscaleWithModel:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"upscale_model": ("UPSCALE_MODEL", {}), "image": ("IMAGE", {})}}

    def upscale(self, upscale_model: PoolRef, image: torch.Tensor):
        with upscale_model.use() as model:
            return (model.upscale(image, progress=report_progress),)

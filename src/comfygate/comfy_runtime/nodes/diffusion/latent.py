"""Latent nodes: empty latents, latent upscaling and inpainting noise masks.

LATENT is ComfyUI's dict: ``samples`` [B, 4, H/8, W/8] in the VAE's own scale, optional ``noise_mask``
(where the sampler may change the image; 1 = repaint) and ``batch_index``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_RESOLUTION = 16384
LATENT_CELL = 8
LATENT_CHANNELS = 4  # SD1.x, SD2.x and SDXL
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic"]
CROP_METHODS = ["disabled", "center"]


def _center_crop_to_aspect(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop [B, C, h, w] in the middle so its aspect ratio is width:height, as "crop: center" asks."""
    old_h, old_w = samples.shape[-2:]
    old_aspect, new_aspect = old_w / old_h, width / height
    if old_aspect > new_aspect:  # too wide: trim the sides
        keep = round(old_h * new_aspect)
        left = (old_w - keep) // 2
        return samples[..., :, left:left + keep]
    keep = round(old_w / new_aspect)
    top = (old_h - keep) // 2
    return samples[..., top:top + keep, :]


def resize_latent(samples: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled"):
    """[B, C, h, w] -> [B, C, height, width] (latent cells) with one of UPSCALE_METHODS."""
    if method not in UPSCALE_METHODS:
        raise ValueError(f"upscale_method {method!r} is not supported; use one of {', '.join(UPSCALE_METHODS)}")
    if crop == "center":
        samples = _center_crop_to_aspect(samples, width, height)
    extra = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    return F.interpolate(samples, size=(height, width), mode=method, **extra)


class EmptyLatentImage:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"
    DESCRIPTION = "Creates a batch of empty latent images to be denoised by a sampler."

    @classmethod
    def INPUT_TYPES(cls):
        def size(name: str) -> tuple:
            return ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                            "tooltip": f"The {name} of the latent images in pixels."})

        return {"required": {
            "width": size("width"), "height": size("height"),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096,
                                   "tooltip": "The number of latent images in the batch."}),
        }}

    def generate(self, width: int, height: int, batch_size: int = 1):
        shape = (batch_size, LATENT_CHANNELS, height // LATENT_CELL, width // LATENT_CELL)
        return ({"samples": torch.zeros(shape)},)


class LatentUpscale:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        def size() -> tuple:
            return ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8})

        return {"required": {"samples": ("LATENT",), "upscale_method": (UPSCALE_METHODS,),
                             "width": size(), "height": size(), "crop": (CROP_METHODS,)}}

    def upscale(self, samples: dict, upscale_method: str, width: int, height: int, crop: str):
        if width == 0 and height == 0:
            return (samples,)
        latent = samples["samples"]
        h, w = latent.shape[-2:]
        # Sides are pixels, at least 64; a zero side follows the other one, keeping the aspect ratio.
        if width == 0:
            height = max(64, height)
            width = max(64, round(w * height / h))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(h * width / w))
        else:
            width, height = max(64, width), max(64, height)
        scaled = resize_latent(latent, width // LATENT_CELL, height // LATENT_CELL, upscale_method, crop)
        return ({**samples, "samples": scaled},)


class LatentUpscaleBy:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "upscale_method": (UPSCALE_METHODS,),
                             "scale_by": ("FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01})}}

    def upscale(self, samples: dict, upscale_method: str, scale_by: float):
        latent = samples["samples"]
        width, height = round(latent.shape[-1] * scale_by), round(latent.shape[-2] * scale_by)
        return ({**samples, "samples": resize_latent(latent, width, height, upscale_method)},)


class SetLatentNoiseMask:
    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "set_mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "mask": ("MASK",)}}

    def set_mask(self, samples: dict, mask: torch.Tensor):
        # [H, W] or [B, H, W] -> [B, 1, H, W]; the sampler scales it to the latent's size.
        return ({**samples, "noise_mask": mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])},)

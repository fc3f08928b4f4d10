"""Mask nodes: ImageToMask, MaskToImage, SolidMask. MASK is [B, H, W] in 0..1."""

from __future__ import annotations

import torch

CHANNELS = ["red", "green", "blue", "alpha"]


class ImageToMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "channel": (CHANNELS,)}}

    def image_to_mask(self, image: torch.Tensor, channel: str):
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"image has {image.shape[-1]} channels, so no {channel} channel")
        return (image[..., index],)


class MaskToImage:
    CATEGORY = "mask"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mask_to_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    def mask_to_image(self, mask: torch.Tensor):
        batched = mask.reshape(-1, mask.shape[-2], mask.shape[-1])  # [H, W] or [B, H, W] -> [B, H, W]
        return (batched.unsqueeze(-1).expand(-1, -1, -1, 3).clone(),)


class SolidMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "solid"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "width": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
                "height": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
            }
        }

    def solid(self, value: float, width: int, height: int):
        return (torch.full((1, height, width), float(value), dtype=torch.float32),)

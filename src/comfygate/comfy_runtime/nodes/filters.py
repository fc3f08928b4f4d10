"""Gaussian filters: ImageBlur and ImageSharpen (unsharp masking)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_blur(images: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, H, W, C].

    Edges replicate: reflection would need images wider than the radius.
    """
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[-1]
    x = F.pad(images.movedim(-1, 1), (radius, radius, radius, radius), mode="replicate")  # [B, C, H+2r, W+2r]
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return x.movedim(1, -1)


class ImageBlur:
    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blur"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {}),
                "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}),
            }
        }

    def blur(self, image: torch.Tensor, blur_radius: int, sigma: float):
        return (gaussian_blur(image, blur_radius, sigma),)


class ImageSharpen:
    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sharpen"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {}),
                "sharpen_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.01}),
                "alpha": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01}),
            }
        }

    def sharpen(self, image: torch.Tensor, sharpen_radius: int, sigma: float, alpha: float):
        detail = image - gaussian_blur(image, sharpen_radius, sigma)
        return ((image + alpha * detail).clamp(0.0, 1.0),)

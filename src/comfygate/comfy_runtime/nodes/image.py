"""Image nodes: creation, scaling, inversion, cropping, padding and masked compositing.

IMAGE tensors are float32 [B, H, W, C] in 0..1; MASK tensors are [B, H, W].
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MAX_RESOLUTION = 16384
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]


def _size(default: int, minimum: int, step: int = 1) -> tuple:
    return ("INT", {"default": default, "min": minimum, "max": MAX_RESOLUTION, "step": step})


def _lanczos(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pillow's Lanczos filter, one float channel at a time so no precision is lost to 8 bits."""
    source = images.detach().cpu().numpy()
    out = np.empty((source.shape[0], height, width, source.shape[-1]), dtype=np.float32)
    for b in range(source.shape[0]):
        for c in range(source.shape[-1]):
            channel = Image.fromarray(np.ascontiguousarray(source[b, :, :, c]))  # mode "F"
            out[b, :, :, c] = np.asarray(channel.resize((width, height), Image.Resampling.LANCZOS))
    return torch.from_numpy(out).to(images.device)


def resize(images: torch.Tensor, width: int, height: int, method: str) -> torch.Tensor:
    """[B, H, W, C] -> [B, height, width, C] with one of UPSCALE_METHODS."""
    if method == "lanczos":
        return _lanczos(images, width, height).clamp(0.0, 1.0)  # the filter overshoots at edges
    channels_first = images.movedim(-1, 1)  # [B, C, H, W]
    extra = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    scaled = F.interpolate(channels_first, size=(height, width), mode=method, **extra).movedim(1, -1)
    return scaled.clamp(0.0, 1.0) if method == "bicubic" else scaled


def repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat along dim 0 until it holds ``batch`` items (a batch of 1 pairs with any batch)."""
    if tensor.shape[0] == batch:
        return tensor
    repeats = math.ceil(batch / tensor.shape[0])
    return tensor.repeat(repeats, *([1] * (tensor.ndim - 1)))[:batch]


class EmptyImage:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": _size(512, 1),
                "height": _size(512, 1),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}),
            }
        }

    def generate(self, width: int, height: int, batch_size: int = 1, color: int = 0):
        channels = [(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF]  # 0xRRGGBB
        rgb = torch.tensor(channels, dtype=torch.float32) / 255.0
        return (rgb.view(1, 1, 1, 3).expand(batch_size, height, width, 3).clone(),)


class ImageScale:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (UPSCALE_METHODS,),
                "width": _size(512, 0),
                "height": _size(512, 0),
                "crop": (["disabled", "center"],),
            }
        }

    def upscale(self, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str):
        if width == 0 and height == 0:
            return (image,)
        _, h, w, _ = image.shape
        # A zero side follows the other one, keeping the aspect ratio.
        width = width or max(1, round(w * height / h))
        height = height or max(1, round(h * width / w))
        if crop == "center":  # cut the source to the target's aspect ratio so scaling does not distort
            if w * height > h * width:
                keep = max(1, round(h * width / height))
                image = image[:, :, (w - keep) // 2:(w - keep) // 2 + keep]
            elif w * height < h * width:
                keep = max(1, round(w * height / width))
                image = image[:, (h - keep) // 2:(h - keep) // 2 + keep]
        return (resize(image, width, height, upscale_method),)


class ImageScaleBy:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (UPSCALE_METHODS,),
                "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
            }
        }

    def upscale(self, image: torch.Tensor, upscale_method: str, scale_by: float):
        _, h, w, _ = image.shape
        width, height = round(w * scale_by), round(h * scale_by)
        if width < 1 or height < 1:
            raise ValueError(f"scale_by {scale_by} turns a {w}x{h} image into {width}x{height} pixels")
        return (resize(image, width, height, upscale_method),)


class ImageInvert:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def invert(self, image: torch.Tensor):
        return (1.0 - image,)


class ImageCrop:
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "width": _size(512, 1),
                "height": _size(512, 1),
                "x": _size(0, 0),
                "y": _size(0, 0),
            }
        }

    def crop(self, image: torch.Tensor, width: int, height: int, x: int, y: int):
        _, h, w, _ = image.shape
        # As in ComfyUI: an origin past the edge moves to the last pixel; the crop ends at the image edge.
        x, y = min(x, w - 1), min(y, h - 1)
        return (image[:, y:y + height, x:x + width, :],)


class ImagePadForOutpaint:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "expand_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "left": _size(0, 0, 8),
                "top": _size(0, 0, 8),
                "right": _size(0, 0, 8),
                "bottom": _size(0, 0, 8),
                "feathering": _size(40, 0),
            }
        }

    def expand_image(
        self, image: torch.Tensor, left: int, top: int, right: int, bottom: int, feathering: int
    ):
        b, h, w, c = image.shape
        padded = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=image.dtype)
        padded[:, top:top + h, left:left + w] = image
        mask = torch.ones(h + top + bottom, w + left + right)  # 1 = area to paint
        inner = torch.zeros(h, w)
        if feathering > 0 and 2 * feathering < min(h, w):
            # Fade the mask into the original near padded sides only: ((f - d) / f)^2 at distance d < f.
            ys = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
            xs = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
            distance = torch.full((h, w), float("inf"))
            for padded_side, d in ((top, ys), (bottom, h - 1 - ys), (left, xs), (right, w - 1 - xs)):
                if padded_side:
                    distance = torch.minimum(distance, d)
            inner = ((feathering - distance) / feathering).clamp(min=0.0) ** 2
        mask[top:top + h, left:left + w] = inner
        return padded, mask.unsqueeze(0)  # [B, H', W', C], [1, H', W']


class ImageCompositeMasked:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "destination": ("IMAGE",),
                "source": ("IMAGE",),
                "x": _size(0, 0),
                "y": _size(0, 0),
                "resize_source": ("BOOLEAN", {"default": False}),
            },
            "optional": {"mask": ("MASK",)},
        }

    def composite(self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int,
                  resize_source: bool, mask: torch.Tensor | None = None):
        if destination.shape[-1] != source.shape[-1]:
            raise ValueError(
                f"destination has {destination.shape[-1]} channels but source has {source.shape[-1]}"
            )
        _, dest_h, dest_w, _ = destination.shape
        if resize_source:
            source = resize(source, dest_w, dest_h, "bilinear")
        batch = max(destination.shape[0], source.shape[0])
        out = repeat_to_batch(destination, batch).clone()
        source = repeat_to_batch(source, batch)
        src_h, src_w = source.shape[1:3]
        if mask is None:
            mask = torch.ones(1, src_h, src_w)
        mask = mask.reshape(-1, mask.shape[-2], mask.shape[-1])  # [B, H, W]
        if mask.shape[1:] != (src_h, src_w):
            mask = resize(mask.unsqueeze(-1), src_w, src_h, "bilinear")[..., 0]
        mask = repeat_to_batch(mask, batch).unsqueeze(-1)  # [B, h, w, 1]
        # Only the part of the source that lands inside the destination is pasted.
        visible_h, visible_w = max(0, min(src_h, dest_h - y)), max(0, min(src_w, dest_w - x))
        region = out[:, y:y + visible_h, x:x + visible_w]
        m = mask[:, :visible_h, :visible_w]
        out[:, y:y + visible_h, x:x + visible_w] = source[:, :visible_h, :visible_w] * m + region * (1.0 - m)
        return (out,)

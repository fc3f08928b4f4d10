"""VAE nodes: pixels to latents and back, and the inpainting encoder that blanks the masked region first."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from comfygate.comfy_runtime.diffusion.handles import VaeHandle


def _require_vae(vae: VaeHandle | None) -> VaeHandle:
    if vae is None:
        raise ValueError("vae input is invalid: None. If it comes from a checkpoint loader, that checkpoint holds "
                         "no VAE; load one with VAELoader")
    return vae


def _center_crop(multiple: int, height: int, width: int) -> tuple[slice, slice]:
    """Rows and columns to keep so both sides are multiples of ``multiple``, trimming evenly at both edges."""
    keep_h, keep_w = (height // multiple) * multiple, (width // multiple) * multiple
    if keep_h == 0 or keep_w == 0:
        raise ValueError(f"image of {width}x{height} pixels is smaller than one latent cell ({multiple}x{multiple})")
    top, left = (height % multiple) // 2, (width % multiple) // 2
    return slice(top, top + keep_h), slice(left, left + keep_w)


class VAEDecode:
    CATEGORY = "latent"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    DESCRIPTION = "Decodes latent images back into pixel space images."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
                             "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."})}}

    def decode(self, vae: VaeHandle | None, samples: dict):
        with _require_vae(vae).use() as model:
            return (model.decode(samples["samples"]),)


class VAEEncode:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}

    def encode(self, vae: VaeHandle | None, pixels: torch.Tensor):
        with _require_vae(vae).use() as model:
            rows, cols = _center_crop(model.downscale, pixels.shape[1], pixels.shape[2])
            return ({"samples": model.encode(pixels[:, rows, cols, :3])},)


class VAEEncodeForInpaint:
    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",), "mask": ("MASK",),
                             "grow_mask_by": ("INT", {"default": 6, "min": 0, "max": 64, "step": 1})}}

    def encode(self, vae: VaeHandle | None, pixels: torch.Tensor, mask: torch.Tensor, grow_mask_by: int = 6):
        with _require_vae(vae).use() as model:
            # The mask at the image's size, [B, 1, H, W] (bilinear, like a soft brush), then both cropped alike.
            mask = F.interpolate(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(),
                                 size=pixels.shape[1:3], mode="bilinear")
            rows, cols = _center_crop(model.downscale, pixels.shape[1], pixels.shape[2])
            pixels, mask = pixels[:, rows, cols, :3].clone(), mask[:, :, rows, cols]
            height, width = pixels.shape[1:3]
            # The masked region becomes mid-grey before encoding, so the old content does not leak in.
            keep = (1.0 - mask.round()).movedim(1, -1)  # [B, H, W, 1]
            pixels = (pixels - 0.5) * keep + 0.5
            latent = model.encode(pixels)
        if grow_mask_by:
            # Grow the repaint region by dilation, so seams at its edge are repainted too.
            kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by))
            padding = grow_mask_by // 2
            mask = torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)[:, :, :height, :width]
        return ({"samples": latent, "noise_mask": mask.round()},)

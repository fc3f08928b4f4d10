"""DiffusionModel: a loaded diffusers UNet plus what sampling needs to know about it.

The sampler (sampling/) works in ComfyUI's terms: it scales the latent for the network input, turns sigma into
a timestep in 0..999 and converts the raw output (eps or v) into a denoised latent. This class only runs the
network in its own dtype and hands back float32, and builds the extra inputs SDXL takes (ComfyUI's
``encode_adm``): the pooled bigG text vector and the size / crop numbers (refiner: size, crop, aesthetic score).
"""

from __future__ import annotations

from typing import Any

import torch

from comfygate.comfy_runtime.diffusion.detect import ModelConfig
from comfygate.comfy_runtime.diffusion.memory import WrapsModule

__all__ = ["DiffusionModel", "scaled_linear_alphas_cumprod"]

# Pixels per latent cell of the SD VAE (SDXL's size numbers are in pixels).
_DOWNSCALE = 8


def scaled_linear_alphas_cumprod(start: float = 0.00085, end: float = 0.012, steps: int = 1000) -> torch.Tensor:
    """alphas_cumprod [steps] float32 (CPU) of SD's "scaled linear" betas: ``linspace(sqrt(start), sqrt(end))**2``."""
    betas = torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


class DiffusionModel(WrapsModule):
    """A UNet2DConditionModel with its architecture facts (see design: ``prediction``, ``latent_scale`` ...).

    ``param_of_ldm`` maps each LDM key (without ``model.diffusion_model.``) to the module's parameter name, for
    LoRA files that name weights the LDM way.
    """

    def __init__(self, module: torch.nn.Module, config: ModelConfig, param_of_ldm: dict[str, str]) -> None:
        self.module = module
        self.config = config
        self.param_of_ldm = param_of_ldm
        self.arch = config.arch
        self.prediction = config.prediction
        self.latent_scale = config.latent_scale
        self.latent_channels = int(config.unet["in_channels"])
        root = config.ldm.get("model", {}).get("params", {})
        self.alphas_cumprod = scaled_linear_alphas_cumprod(
            root.get("linear_start", 0.00085), root.get("linear_end", 0.012), root.get("timesteps", 1000)
        )

    def __repr__(self) -> str:
        return f"DiffusionModel({self.arch}, {self.prediction}, {self.dtype}, {self.device})"

    @property
    def takes_pooled(self) -> bool:
        """True for SDXL: the network needs :meth:`extra_conds`' ``text_embeds`` and ``time_ids``."""
        return self.config.unet.get("addition_embed_type") == "text_time"

    def extra_conds(
        self, cond: dict[str, Any], latent_hw: tuple[int, int], prompt_type: str = "positive"
    ) -> dict[str, torch.Tensor]:
        """Extra network inputs of one conditioning entry (``{}`` for SD1/SD2); each value has batch size 1.

        SDXL base: ``text_embeds`` = ``cond["pooled_output"]`` [1, P]; ``time_ids`` [1, 6] = (height, width,
        crop_h, crop_w, target_height, target_width) from ``cond``; height/width default to the latent's size in
        pixels (``latent_hw * 8``), crops to 0, targets to height/width (ComfyUI's rules).
        Refiner: ``time_ids`` [1, 5] = (height, width, crop_h, crop_w, aesthetic_score), the score defaulting to
        6.0, or 2.5 when ``prompt_type == "negative"``.
        """
        if not self.takes_pooled:
            return {}
        pooled = cond.get("pooled_output")
        if not isinstance(pooled, torch.Tensor):
            raise ValueError(
                f"{self.arch} needs the pooled text vector ('pooled_output') in its conditioning; encode the prompt "
                "with an SDXL CLIP (CLIPTextEncode on the checkpoint's CLIP)"
            )
        pooled = pooled.reshape(-1, pooled.shape[-1]).float()  # [1, P]
        want = self.config.pooled_dim
        if want is not None and pooled.shape[-1] != want:
            raise ValueError(
                f"{self.arch} takes a pooled text vector of width {want}, the conditioning has {pooled.shape[-1]} "
                "(conditioning from another model's CLIP?)"
            )
        height = float(cond.get("height", latent_hw[0] * _DOWNSCALE))
        width = float(cond.get("width", latent_hw[1] * _DOWNSCALE))
        crop_h = float(cond.get("crop_h", 0))
        crop_w = float(cond.get("crop_w", 0))
        if self.arch == "sdxl_refiner":
            score = float(cond.get("aesthetic_score", 2.5 if prompt_type == "negative" else 6.0))
            ids = [height, width, crop_h, crop_w, score]
        else:
            ids = [
                height,
                width,
                crop_h,
                crop_w,
                float(cond.get("target_height", height)),
                float(cond.get("target_width", width)),
            ]
        return {"text_embeds": pooled, "time_ids": torch.tensor([ids], dtype=torch.float32)}

    def __call__(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        text_embeds: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw network output (eps or v) [B, C, h, w] float32 for input x [B, C, h, w] (already scaled for the
        network), timestep [B] (float, 0..999) and context [B, T, D]; batch-1 inputs are repeated to B."""
        b = x.shape[0]
        device, dtype = self.device, self.dtype
        expected = self.module.config.cross_attention_dim
        if context.shape[-1] != expected:
            raise ValueError(f"the conditioning is {context.shape[-1]} wide but this {self.arch} model expects "
                             f"{expected}: the prompt was encoded with the text encoder of another model family")
        timestep = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)
        added = None
        if self.takes_pooled:
            if text_embeds is None or time_ids is None:
                raise ValueError(f"{self.arch} needs text_embeds and time_ids (from extra_conds)")
            added = {
                "text_embeds": _batch(text_embeds, b).to(device, dtype),  # [B, P]
                "time_ids": _batch(time_ids, b).to(device),  # [B, 6] (refiner [B, 5])
            }
        with torch.no_grad():
            out = self.module(
                x.to(device, dtype),
                _batch(timestep, b).to(device),
                encoder_hidden_states=_batch(context, b).to(device, dtype),
                added_cond_kwargs=added,
                return_dict=False,
            )[0]
        return out.float()


def _batch(t: torch.Tensor, b: int) -> torch.Tensor:
    """``t`` with batch size ``b`` (a batch of 1 is repeated)."""
    if t.shape[0] == b:
        return t
    if t.shape[0] == 1:
        return t.expand(b, *t.shape[1:])
    raise ValueError(f"batch of {t.shape[0]} does not match the latent batch of {b}")

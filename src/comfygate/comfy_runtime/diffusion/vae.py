"""Vae: pixels <-> raw latents with a loaded diffusers AutoencoderKL, ComfyUI's conventions.

- encode: IMAGE [B, H, W, 3] in 0..1 -> latent [B, 4, H/8, W/8] float32 on the CPU, *without* the model's scale
  factor (the sampler applies it). H and W are centre-cropped to multiples of 8 first, as ComfyUI's VAEEncode
  does. The latent is the mean of the encoder's distribution: ComfyUI draws a sample from it with the global
  RNG, which makes VAEEncode differ from run to run by a tiny amount (the SD VAE's spread is very small); the
  mean keeps img2img reproducible for a given seed.
- decode: latent [B, 4, h, w] -> IMAGE [B, 8h, 8w, 3] float32 on the CPU, ``clamp((x + 1) / 2, 0, 1)``.
- half precision: the SDXL VAE (and some SD1 ones) overflow in float16 and give NaN / inf. When an output is
  not finite in float16 / bfloat16, the module is converted to float32 for good (logged once; the model then
  takes twice the memory) and the batch is run again: later calls do not pay for a failed half run.
- a batch that runs out of memory is retried one image at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import torch

from comfygate.comfy_runtime.diffusion.memory import WrapsModule

__all__ = ["Vae"]

log = logging.getLogger(__name__)


class Vae(WrapsModule):
    """A loaded VAE. ``param_of_ldm``: LDM key (without ``first_stage_model.``) -> module parameter name."""

    def __init__(self, module: torch.nn.Module, param_of_ldm: dict[str, str] | None = None) -> None:
        self.module = module
        self.param_of_ldm = param_of_ldm or {}
        config = module.config
        self.latent_channels = int(config.latent_channels)
        self.downscale = 2 ** (len(config.block_out_channels) - 1)
        self.upcast = False  # True once a half-precision overflow moved the module to float32
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Vae({self.dtype}, {self.device})"

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, C>=3] 0..1 -> raw latent [B, 4, H//8, W//8] float32 CPU (mean of the distribution)."""
        if pixels.ndim != 4 or pixels.shape[-1] < 3:
            raise ValueError(f"VAE encode expects an IMAGE [B, H, W, 3], got shape {tuple(pixels.shape)}")
        f = self.downscale
        h, w = (pixels.shape[1] // f) * f, (pixels.shape[2] // f) * f
        if h == 0 or w == 0:
            raise ValueError(f"image {pixels.shape[2]}x{pixels.shape[1]} is smaller than the VAE's {f}x{f} cell")
        top, left = (pixels.shape[1] % f) // 2, (pixels.shape[2] % f) // 2
        pixels = pixels[:, top : top + h, left : left + w, :3]
        x = pixels.movedim(-1, 1).float() * 2.0 - 1.0  # [B, 3, H, W] in -1..1

        def run(chunk: torch.Tensor) -> torch.Tensor:
            return self.module.encode(chunk.to(self.device, self.dtype)).latent_dist.mean

        return self._batched(run, x)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Raw latent [B, 4, h, w] -> IMAGE [B, 8h, 8w, 3] float32 CPU in 0..1."""
        if latent.ndim != 4 or latent.shape[1] != self.latent_channels:
            raise ValueError(
                f"VAE decode expects a latent [B, {self.latent_channels}, h, w], got shape {tuple(latent.shape)}"
            )

        def run(chunk: torch.Tensor) -> torch.Tensor:
            return self.module.decode(chunk.to(self.device, self.dtype)).sample

        out = self._batched(run, latent.float())
        return ((out + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).contiguous()

    def _batched(self, run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``run`` over the batch (one at a time after an out-of-memory), finite, float32 on the CPU."""
        from comfygate.comfy_runtime.diffusion.memory import is_out_of_memory

        try:
            return self._finite(run, x)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried, everything else re-raised
            if not is_out_of_memory(exc) or x.shape[0] == 1:
                raise
            log.warning("VAE ran out of memory on a batch of %d; retrying one image at a time", x.shape[0])
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return torch.cat([self._finite(run, x[i : i + 1]) for i in range(x.shape[0])])

    def _finite(self, run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        # One pass at a time: a pass that upcasts the shared module must not change its dtype under another.
        with self._lock, torch.no_grad():
            out = run(x)
            if self.dtype != torch.float32 and not bool(torch.isfinite(out).all()):
                self._upcast()
                out = run(x)
        return out.float().cpu()

    def _upcast(self) -> None:
        """Switch to float32 for good; the caller holds ``_lock``."""
        if self.dtype == torch.float32:
            return
        log.warning(
            "VAE output in %s is not finite (overflow); switching this VAE to float32 for good",
            str(self.dtype).removeprefix("torch."),
        )
        torch.nn.Module.to(self.module, torch.float32)  # diffusers' .to warns needlessly on casts
        self.upcast = True

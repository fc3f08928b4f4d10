"""Tiny random-weight diffusers / transformers models that the fixture checkpoints are written from.

Kept separate from the file writers so a test can hold the very modules a file was written from and compare what
a loader builds with them (same weights -> same outputs).
"""

from __future__ import annotations

import contextlib

import torch

from .tiny_configs import TINY_VAE
from .tiny_ldm_keys import unet_key_map

__all__ = ["seeded", "make_unet", "make_vae", "make_text_encoder", "SD2_V_MARKER"]

# The key ComfyUI reads to tell SD2 v-prediction from eps: std of this bias > 0.09 means v (ComfyUI's heuristic;
# real 768-v files have a clearly larger spread here). LDM name, without "model.diffusion_model.".
SD2_V_MARKER = "output_blocks.11.1.transformer_blocks.0.norm1.bias"


@contextlib.contextmanager
def seeded(seed: int):
    """Run model construction under a fixed seed without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _jitter(module: torch.nn.Module, scale: float = 0.02) -> None:
    """Give every parameter distinct values.

    Default init leaves norms at 1/0 and some biases at 0; identical tensors would let a key mapping that swaps two
    of them pass the round-trip test. Weight matrices are random already and are left alone (cheap). The added noise
    stays below SD2's v-prediction threshold (std 0.09).
    """
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim <= 1 or bool(param.std() == 0):
                param.add_(torch.randn_like(param) * scale)


def make_unet(config: dict, seed: int = 0, *, v_marker: bool = False):
    """A diffusers UNet2DConditionModel with seeded random weights (float32, eval mode).

    ``v_marker``: widen the bias ComfyUI inspects (SD2_V_MARKER) so the file reads as a v-prediction model.
    """
    from diffusers import UNet2DConditionModel

    with seeded(seed):
        unet = UNet2DConditionModel(**config)
        _jitter(unet)
        if v_marker:
            names = {ldm: d for d, ldm in unet_key_map(config, unet.state_dict()).items()}
            if SD2_V_MARKER not in names:
                raise ValueError(f"UNet config has no {SD2_V_MARKER} (needs 4 levels x 2 res blocks with attention)")
            bias = unet.get_parameter(names[SD2_V_MARKER])
            with torch.no_grad():
                bias.copy_(torch.randn_like(bias) * 0.25)
    return unet.eval()


def make_vae(seed: int = 0, config: dict | None = None):
    """A diffusers AutoencoderKL (SD layout: 8x downscale, 4 latent channels) with seeded random weights."""
    from diffusers import AutoencoderKL

    with seeded(seed):
        vae = AutoencoderKL(**(config or TINY_VAE))
        _jitter(vae)
    return vae.eval()


def make_text_encoder(config: dict, seed: int = 0, *, projection: bool = False):
    """A transformers CLIPTextModel (or ...WithProjection) with seeded random weights."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    with seeded(seed):
        model = cls(CLIPTextConfig(**config))
        _jitter(model)
    return model.eval()

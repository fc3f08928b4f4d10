"""Tiny random-weight checkpoint files in the real single-file layouts (SD1.x, SD2.x-v, SDXL base and refiner).

The files have the key names and tensor ranks of ``v1-5-pruned.safetensors``, SD 2.1 768-v, ``sd_xl_base_1.0`` and
``sd_xl_refiner_1.0`` with tiny widths (see tiny_configs), so detect -> load -> encode -> sample -> decode runs on
CPU in well under a second. ``tiny_checkpoint(kind)`` returns the modules a file is written from, for tests that
compare a loaded model with its source.

Writers pick the format from the suffix: ``.safetensors`` or a torch pickle (``.ckpt``/``.pt``/``.pth``) holding
``{"state_dict": ...}`` as LDM training checkpoints do (loadable with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .tiny_configs import (
    TINY_CLIP_L,
    TINY_OPEN_CLIP_G,
    TINY_OPEN_CLIP_H,
    TINY_SD1_UNET,
    TINY_SD2_UNET,
    TINY_SDXL_REFINER_UNET,
    TINY_SDXL_UNET,
    TINY_VAE,
)
from .tiny_ldm_keys import clip_l_to_ldm, hf_text_state_dict, open_clip_to_ldm, unet_to_ldm, vae_to_ldm
from .tiny_models import make_text_encoder, make_unet, make_vae

__all__ = [
    "UNET_PREFIX",
    "VAE_PREFIX",
    "TEXT_PREFIXES",
    "UNET_CONFIGS",
    "TEXT_CONFIGS",
    "TinyCheckpoint",
    "tiny_checkpoint",
    "save_state_dict",
    "build_sd1_checkpoint",
    "build_sd2_checkpoint",
    "build_sdxl_checkpoint",
    "build_sdxl_refiner_checkpoint",
    "build_vae_file",
    "build_unet_file",
    "build_clip_l_file",
    "build_text_encoder_file",
    "ddpm_schedule_buffers",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# per architecture: (prefix in the checkpoint, layout) for each text encoder, in ComfyUI's order
TEXT_PREFIXES = {
    "sd1": [("cond_stage_model.transformer.", "hf")],
    "sd2": [("cond_stage_model.model.", "open_clip")],
    "sdxl": [("conditioner.embedders.0.transformer.", "hf"), ("conditioner.embedders.1.model.", "open_clip")],
    "sdxl_refiner": [("conditioner.embedders.0.model.", "open_clip")],
}
# per architecture: the UNet config, and (text config, has projection) per text encoder
UNET_CONFIGS = {
    "sd1": TINY_SD1_UNET,
    "sd2": TINY_SD2_UNET,
    "sdxl": TINY_SDXL_UNET,
    "sdxl_refiner": TINY_SDXL_REFINER_UNET,
}
TEXT_CONFIGS = {
    "sd1": [(TINY_CLIP_L, False)],
    "sd2": [(TINY_OPEN_CLIP_H, False)],
    "sdxl": [(TINY_CLIP_L, False), (TINY_OPEN_CLIP_G, True)],
    "sdxl_refiner": [(TINY_OPEN_CLIP_G, True)],
}


@dataclass
class TinyCheckpoint:
    """The modules one fixture file is written from, and that file's state dict (LDM names, float32)."""

    arch: str
    unet_config: dict
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list[torch.nn.Module]
    text_configs: list[dict]
    prediction: str
    state_dict: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)


def ddpm_schedule_buffers(prefix: str = "") -> dict[str, torch.Tensor]:
    """The DDPM buffers LDM (SD1/SD2) training checkpoints carry: scaled_linear betas 0.00085..0.012, 1000 steps.

    Loaders must ignore them (or may read alphas_cumprod); they are here because real files have them.
    """
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    cum = torch.cumprod(alphas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), cum[:-1]])
    post_var = betas * (1.0 - prev) / (1.0 - cum)
    values = {
        "betas": betas,
        "alphas_cumprod": cum,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": cum.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - cum).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cum).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / cum).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cum - 1).sqrt(),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - cum),
        "posterior_mean_coef2": (1.0 - prev) * alphas.sqrt() / (1.0 - cum),
    }
    return {prefix + k: v.float() for k, v in values.items()}


def _text_to_ldm(model: torch.nn.Module, prefix: str, layout: str, config: dict) -> dict[str, torch.Tensor]:
    hf = hf_text_state_dict(model)
    if layout == "hf":
        return clip_l_to_ldm(hf, prefix)
    return open_clip_to_ldm(hf, prefix, width=config["hidden_size"])


def tiny_checkpoint(arch: str, *, seed: int = 0, v_prediction: bool | None = None) -> TinyCheckpoint:
    """Build the tiny models for ``arch`` ("sd1" | "sd2" | "sdxl" | "sdxl_refiner") and their single-file dict.

    ``v_prediction`` (default: True for sd2, False otherwise): sd2 marks it the way ComfyUI detects it (a wide
    norm bias in the last output block); sdxl writes the ``v_pred`` key that v-prediction SDXL finetunes carry.
    """
    if arch not in UNET_CONFIGS:
        raise ValueError(f"unknown tiny checkpoint arch {arch!r}; expected one of {sorted(UNET_CONFIGS)}")
    v = (arch == "sd2") if v_prediction is None else v_prediction
    if v and arch not in ("sd2", "sdxl"):
        raise ValueError(f"{arch} checkpoints have no v-prediction marker")
    unet_config = UNET_CONFIGS[arch]
    unet = make_unet(unet_config, seed, v_marker=v and arch == "sd2")
    vae = make_vae(seed + 1)
    texts = [make_text_encoder(cfg, seed + 2 + i, projection=proj) for i, (cfg, proj) in enumerate(TEXT_CONFIGS[arch])]

    sd = unet_to_ldm(unet.state_dict(), unet_config, UNET_PREFIX)
    sd.update(vae_to_ldm(vae.state_dict(), TINY_VAE, VAE_PREFIX))
    for model, (prefix, layout), (cfg, _) in zip(texts, TEXT_PREFIXES[arch], TEXT_CONFIGS[arch], strict=True):
        sd.update(_text_to_ldm(model, prefix, layout, cfg))
    if arch in ("sd1", "sd2"):
        sd.update(ddpm_schedule_buffers())
    if v and arch == "sdxl":
        sd["v_pred"] = torch.tensor([])
    sd = {k: v.detach().clone() for k, v in sd.items()}  # a test may patch the modules; the file dict stays put
    return TinyCheckpoint(
        arch=arch,
        unet_config=unet_config,
        unet=unet,
        vae=vae,
        text_encoders=texts,
        text_configs=[cfg for cfg, _ in TEXT_CONFIGS[arch]],
        prediction="v" if v else "eps",
        state_dict=sd,
    )


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Write a state dict as .safetensors, or as a torch pickle ``{"state_dict": ...}`` for .ckpt/.pt/.pth.

    ``dtype`` casts floating tensors (real releases are often float16); integer buffers keep their dtype.
    """
    path = Path(path)
    out = {}
    for key, value in state_dict.items():
        value = value.detach().clone().contiguous()  # no shared storage: safetensors refuses it
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".ckpt", ".pt", ".pth"):
        torch.save({"state_dict": out, "global_step": 0}, path)
    else:
        from safetensors.torch import save_file

        save_file(out, str(path))
    return path


def build_sd1_checkpoint(
    path: str | Path, *, seed: int = 0, dtype: torch.dtype | None = None, legacy_clip_keys: bool = False
) -> Path:
    """A tiny SD 1.x checkpoint (v1-5-pruned layout: LDM UNet + VAE + CLIP-L + DDPM buffers).

    ``legacy_clip_keys``: CLIP keys without "text_model." ("cond_stage_model.transformer.encoder..."), as files
    saved with old transformers versions have them (ComfyUI re-inserts the missing part).
    """
    sd = tiny_checkpoint("sd1", seed=seed).state_dict
    if legacy_clip_keys:
        old, new = "cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."
        sd = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in sd.items()}
    return save_state_dict(sd, path, dtype=dtype)


def build_sd2_checkpoint(
    path: str | Path, *, v_prediction: bool = True, seed: int = 0, dtype: torch.dtype | None = None
) -> Path:
    """A tiny SD 2.x checkpoint (2.1 768-v layout: linear projections, OpenCLIP-H text in the open_clip layout)."""
    return save_state_dict(tiny_checkpoint("sd2", seed=seed, v_prediction=v_prediction).state_dict, path, dtype=dtype)


def build_sdxl_checkpoint(
    path: str | Path, *, seed: int = 0, v_prediction: bool = False, dtype: torch.dtype | None = None
) -> Path:
    """A tiny SDXL base checkpoint (sd_xl_base_1.0 layout: conditioner.embedders.{0: CLIP-L, 1: OpenCLIP-bigG})."""
    return save_state_dict(tiny_checkpoint("sdxl", seed=seed, v_prediction=v_prediction).state_dict, path, dtype=dtype)


def build_sdxl_refiner_checkpoint(path: str | Path, *, seed: int = 0, dtype: torch.dtype | None = None) -> Path:
    """A tiny SDXL refiner checkpoint (sd_xl_refiner_1.0 layout: bigG only at conditioner.embedders.0.model.)."""
    return save_state_dict(tiny_checkpoint("sdxl_refiner", seed=seed).state_dict, path, dtype=dtype)


def build_vae_file(path: str | Path, *, seed: int = 1, dtype: torch.dtype | None = None) -> Path:
    """A standalone VAE file as VAELoader reads it: LDM VAE keys without a prefix ("encoder.conv_in.weight").

    Checkpoints built with seed s hold the VAE of seed s + 1, so the default equals the VAE inside the seed-0
    checkpoints; pass another seed for a VAE that visibly differs from it.
    """
    return save_state_dict(vae_to_ldm(make_vae(seed).state_dict(), TINY_VAE), path, dtype=dtype)


def build_unet_file(path: str | Path, arch: str = "sd1", *, seed: int = 0, dtype: torch.dtype | None = None) -> Path:
    """A bare diffusion-model file as UNETLoader reads it: LDM UNet keys without "model.diffusion_model."."""
    if arch not in UNET_CONFIGS:
        raise ValueError(f"unknown tiny unet arch {arch!r}; expected one of {sorted(UNET_CONFIGS)}")
    config = UNET_CONFIGS[arch]
    return save_state_dict(unet_to_ldm(make_unet(config, seed).state_dict(), config), path, dtype=dtype)


def build_text_encoder_file(
    path: str | Path,
    kind: str = "clip_l",
    *,
    layout: str = "hf",
    seed: int = 2,
    dtype: torch.dtype | None = None,
) -> Path:
    """A standalone text-encoder file as CLIPLoader reads it.

    kind: "clip_l" | "open_clip_h" | "open_clip_g". layout "hf": transformers names ("text_model.encoder...",
    plus "text_projection.weight" for bigG); layout "open_clip": open_clip names without a prefix.
    """
    configs = {
        "clip_l": (TINY_CLIP_L, False),
        "open_clip_h": (TINY_OPEN_CLIP_H, False),
        "open_clip_g": (TINY_OPEN_CLIP_G, True),
    }
    if kind not in configs or layout not in ("hf", "open_clip"):
        raise ValueError(f"unknown text encoder kind/layout {kind!r}/{layout!r}")
    config, projection = configs[kind]
    hf = hf_text_state_dict(make_text_encoder(config, seed, projection=projection))
    sd = hf if layout == "hf" else open_clip_to_ldm(hf, "", width=config["hidden_size"])
    return save_state_dict(sd, path, dtype=dtype)


def build_clip_l_file(path: str | Path, *, seed: int = 2, dtype: torch.dtype | None = None) -> Path:
    """A standalone CLIP-L file in the transformers layout ("text_model.*"), e.g. models/text_encoders/clip_l."""
    return build_text_encoder_file(path, "clip_l", seed=seed, dtype=dtype)

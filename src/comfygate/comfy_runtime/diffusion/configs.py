"""Configs that ship with the package: one LDM-yaml-shaped base config per architecture, and builders that turn
shape-read sizes into diffusers / transformers configs.

Why here and not from a hub: single-file checkpoints carry weights only; the network hyper-parameters that the
weights do not encode (attention head counts, the diffusion schedule, the latent scale, activation functions)
are fixed per architecture. The base dicts below keep the layout of the original Stable Diffusion /
generative-models yaml files (``model.params.unet_config.params`` ...) so they read like the configs users know;
``detect.py`` copies one and overwrites every size it can read from the state dict's shapes, which is what
lets tiny test checkpoints (small channel counts) load through the same path as real ones.

Rules for what the weights cannot say (real files all satisfy them; tiny fixtures follow them too):

- attention heads: SD1 uses 8 heads per level; SD2 / SDXL and every CLIP text encoder use 64-wide heads.
  Tiny test models narrower than that: see :func:`heads_for` (UNet) and :func:`text_heads_for` (text).
- GroupNorm groups: 32 (every real SD channel count is a multiple of 32); tiny models use the gcd of their
  channel counts capped at 32.
- SDXL size conditioning embeds each number with 256 sinusoidal features (ComfyUI and diffusers agree).
"""

from __future__ import annotations

import copy
import math
from typing import Any

__all__ = [
    "ADDITION_TIME_EMBED_DIM",
    "ARCHS",
    "BASE_CONFIGS",
    "LATENT_SCALE",
    "base_config",
    "clip_text_config",
    "groups_for",
    "heads_for",
    "text_heads_for",
    "unet_diffusers_config",
    "vae_diffusers_config",
]

#: Architectures this package can load.
ARCHS = ("sd1", "sd2", "sdxl", "sdxl_refiner")

#: Multiplier between the VAE's raw latent and the latent the UNet was trained on.
LATENT_SCALE = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025, "sdxl_refiner": 0.13025}

#: Features per number in SDXL's size / crop / aesthetic-score conditioning.
ADDITION_TIME_EMBED_DIM = 256

_SCHEDULE = {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000}

_VAE_DDCONFIG = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}


def _ldm(parameterization: str, scale: float, unet: dict[str, Any], cond_stage: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {
            "params": {
                **_SCHEDULE,
                "parameterization": parameterization,
                "scale_factor": scale,
                "unet_config": {"params": unet},
                "first_stage_config": {"params": {"embed_dim": 4, "ddconfig": dict(_VAE_DDCONFIG)}},
                "cond_stage_config": cond_stage,
            }
        }
    }


#: LDM-yaml-shaped base configs (sizes of the released models; detection overwrites sizes from shapes).
BASE_CONFIGS: dict[str, dict[str, Any]] = {
    "sd1": _ldm(
        "eps",
        LATENT_SCALE["sd1"],
        {
            "in_channels": 4,
            "out_channels": 4,
            "model_channels": 320,
            "attention_resolutions": [4, 2, 1],
            "num_res_blocks": 2,
            "channel_mult": [1, 2, 4, 4],
            "num_heads": 8,
            "transformer_depth": 1,
            "context_dim": 768,
            "use_linear_in_transformer": False,
        },
        {"embedders": [{"kind": "clip_l", "prefix": "cond_stage_model.transformer."}]},
    ),
    "sd2": _ldm(
        "eps",  # the 768-v files are detected as "v" (see detect.py)
        LATENT_SCALE["sd2"],
        {
            "in_channels": 4,
            "out_channels": 4,
            "model_channels": 320,
            "attention_resolutions": [4, 2, 1],
            "num_res_blocks": 2,
            "channel_mult": [1, 2, 4, 4],
            "num_head_channels": 64,
            "transformer_depth": 1,
            "context_dim": 1024,
            "use_linear_in_transformer": True,
        },
        {"embedders": [{"kind": "open_clip", "prefix": "cond_stage_model.model.", "projection": False}]},
    ),
    "sdxl": _ldm(
        "eps",
        LATENT_SCALE["sdxl"],
        {
            "in_channels": 4,
            "out_channels": 4,
            "model_channels": 320,
            "attention_resolutions": [4, 2],
            "num_res_blocks": 2,
            "channel_mult": [1, 2, 4],
            "num_head_channels": 64,
            "transformer_depth": [1, 2, 10],
            "context_dim": 2048,
            "use_linear_in_transformer": True,
            "num_classes": "sequential",
            "adm_in_channels": 2816,
        },
        {
            "embedders": [
                {"kind": "clip_l", "prefix": "conditioner.embedders.0.transformer."},
                {"kind": "open_clip", "prefix": "conditioner.embedders.1.model.", "projection": True},
            ]
        },
    ),
    "sdxl_refiner": _ldm(
        "eps",
        LATENT_SCALE["sdxl_refiner"],
        {
            "in_channels": 4,
            "out_channels": 4,
            "model_channels": 384,
            "attention_resolutions": [4, 2],
            "num_res_blocks": 2,
            "channel_mult": [1, 2, 4, 4],
            "num_head_channels": 64,
            "transformer_depth": 4,
            "context_dim": 1280,
            "use_linear_in_transformer": True,
            "num_classes": "sequential",
            "adm_in_channels": 2560,
        },
        {"embedders": [{"kind": "open_clip", "prefix": "conditioner.embedders.0.model.", "projection": True}]},
    ),
}


def base_config(arch: str) -> dict[str, Any]:
    """A deep copy of the shipped LDM-shaped config of ``arch`` (callers fill in sizes)."""
    return copy.deepcopy(BASE_CONFIGS[arch])


def heads_for(width: int, head_dim: int = 64) -> int:
    """UNet attention head count for ``width`` channels with ``head_dim``-wide heads (SD2 / SDXL).

    Real models: ``width // head_dim`` (320 -> 5, 640 -> 10, 1280 -> 20). Narrower test models get one head
    (32 -> 1); a count that does not divide the width is lowered until it does.
    """
    heads = max(1, width // head_dim)
    while width % heads:
        heads -= 1
    return heads


def text_heads_for(hidden: int) -> int:
    """CLIP text-tower head count: 64-wide heads (768 -> 12, 1024 -> 16, 1280 -> 20); 2 heads for tiny test
    towers whose width 64 does not divide (32 or 48 wide), 1 for an odd width."""
    if hidden % 64 == 0:
        return hidden // 64
    return 2 if hidden % 2 == 0 else 1


def groups_for(channels: list[int]) -> int:
    """GroupNorm group count: 32 for real models, the gcd of the channel counts (at most 32) for tiny ones."""
    g = 0
    for c in channels:
        g = math.gcd(g, int(c))
    return 32 if g % 32 == 0 else min(g, 32)


def unet_diffusers_config(params: dict[str, Any], *, depth_out: list[int] | None = None) -> dict[str, Any]:
    """diffusers ``UNet2DConditionModel`` config from LDM ``unet_config.params`` as filled in by detection.

    ``params["transformer_depth"]`` is a list with one entry per level (0 = no attention at that level) and
    ``params["transformer_depth_middle"]`` the middle block's depth; ``depth_out`` the up path's depths, first
    level first (diffusers order), when they differ from the down path's.
    """
    mc = params["model_channels"]
    mult = list(params["channel_mult"])
    channels = [mc * m for m in mult]
    depth = list(params["transformer_depth"])
    middle = params.get("transformer_depth_middle", max(depth) if depth else 1)
    attn = [d > 0 for d in depth]
    linear = bool(params["use_linear_in_transformer"])
    if "num_heads" in params and params["num_heads"] and params["num_heads"] > 0:
        heads = [params["num_heads"] if c % params["num_heads"] == 0 else 1 for c in channels]
    else:
        heads = [heads_for(c, params.get("num_head_channels", 64)) for c in channels]
    # diffusers' mid block reads transformer_layers_per_block[-1]; a level without attention can carry any value.
    layers = [d if d > 0 else middle for d in depth]
    if layers[-1] != middle:
        raise ValueError(f"middle block depth {middle} differs from last level depth {layers[-1]} (unsupported)")
    config: dict[str, Any] = {
        "sample_size": 64,
        "in_channels": params["in_channels"],
        "out_channels": params["out_channels"],
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "block_out_channels": channels,
        "layers_per_block": params["num_res_blocks"],
        "cross_attention_dim": params["context_dim"],
        "attention_head_dim": heads[0] if len(set(heads)) == 1 else heads,
        "use_linear_projection": linear,
        "transformer_layers_per_block": layers[0] if len(set(layers)) == 1 else layers,
        "norm_num_groups": groups_for(channels),
    }
    if depth_out is not None:
        rev_in = list(reversed(layers))
        rev_out = [d if d > 0 else r for d, r in zip(depth_out, rev_in, strict=True)]
        if rev_out != rev_in:
            # diffusers wants one depth per up-block layer (layers_per_block + 1 of them)
            config["reverse_transformer_layers_per_block"] = [[d] * (params["num_res_blocks"] + 1) for d in rev_out]
            config["transformer_layers_per_block"] = layers
    time_dim = params.get("time_embed_dim")
    if time_dim and time_dim != 4 * mc:
        config["time_embedding_dim"] = time_dim
    if params.get("num_classes") == "sequential":
        config["addition_embed_type"] = "text_time"
        config["addition_time_embed_dim"] = ADDITION_TIME_EMBED_DIM
        config["projection_class_embeddings_input_dim"] = params["adm_in_channels"]
    return config


def vae_diffusers_config(ddconfig: dict[str, Any], scale_factor: float) -> dict[str, Any]:
    """diffusers ``AutoencoderKL`` config from an LDM ``ddconfig`` (sizes filled in by detection)."""
    channels = [ddconfig["ch"] * m for m in ddconfig["ch_mult"]]
    return {
        "in_channels": ddconfig["in_channels"],
        "out_channels": ddconfig["out_ch"],
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "block_out_channels": channels,
        "layers_per_block": ddconfig["num_res_blocks"],
        "latent_channels": ddconfig["z_channels"],
        "norm_num_groups": groups_for(channels),
        "sample_size": ddconfig.get("resolution", 256),
        "scaling_factor": scale_factor,
        "mid_block_add_attention": ddconfig.get("mid_attention", True),
    }


def clip_text_config(
    kind: str,
    *,
    hidden: int,
    layers: int,
    intermediate: int,
    vocab: int,
    positions: int,
    projection_dim: int | None = None,
) -> dict[str, Any]:
    """transformers ``CLIPTextConfig`` kwargs for a CLIP-L (``kind="clip_l"``) or OpenCLIP text tower.

    OpenAI's CLIP-L uses quick_gelu, OpenCLIP (SD2's ViT-H, SDXL's bigG) exact gelu. The end-of-text id is the
    real one (49407) so the pooled output is taken at the first end token, as ComfyUI does.
    """
    if kind not in ("clip_l", "open_clip"):
        raise ValueError(f"unknown text encoder kind {kind!r}")
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "projection_dim": projection_dim or hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": text_heads_for(hidden),
        "max_position_embeddings": positions,
        "hidden_act": "quick_gelu" if kind == "clip_l" else "gelu",
        "layer_norm_eps": 1e-5,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    }

"""Configs of the tiny random-weight models that the fixture checkpoints are built from.

Each config keeps the *structure* of the real model it stands for (number of levels, res blocks per level, which
levels have attention, linear vs conv projections, SDXL size conditioning, the real CLIP vocabulary and 77
positions) and shrinks only the widths, so a file written from it has the same key names as the real release and
a full txt2img on CPU takes a fraction of a second.

The dicts are diffusers ``UNet2DConditionModel`` / ``AutoencoderKL`` kwargs and transformers ``CLIPTextConfig``
kwargs. Loader tests compare what detection reads from a file with these.

Head counts follow the real rules so shape-based detection can reuse them: SD1 has 8 heads per attention block,
SD2 / SDXL have 64 channels per head, so their model_channels is 64: the LDM-yaml rule (heads per level =
model_channels // 64 * mult) then gives the heads used here.
"""

from __future__ import annotations

__all__ = [
    "CLIP_VOCAB",
    "CLIP_POSITIONS",
    "TINY_CLIP_L",
    "TINY_OPEN_CLIP_H",
    "TINY_OPEN_CLIP_G",
    "TINY_VAE",
    "TINY_SD1_UNET",
    "TINY_SD2_UNET",
    "TINY_SDXL_UNET",
    "TINY_SDXL_REFINER_UNET",
    "SDXL_ADM_BASE",
    "SDXL_ADM_REFINER",
    "LDM_UNET_PARAMS",
    "LDM_VAE_DDCONFIG",
]

CLIP_VOCAB = 49408  # real CLIP BPE vocabulary, so the real tokenizer's ids are valid
CLIP_POSITIONS = 77

_TEXT_COMMON = {
    "vocab_size": CLIP_VOCAB,
    "max_position_embeddings": CLIP_POSITIONS,
    "num_attention_heads": 2,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
    "layer_norm_eps": 1e-5,
}

# OpenAI CLIP ViT-L/14 text tower (SD1 text encoder, SDXL "te1"): real width 768, 12 layers, quick_gelu.
TINY_CLIP_L: dict = {
    **_TEXT_COMMON,
    "hidden_size": 32,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
}

# OpenCLIP ViT-H/14 text tower (SD2): real width 1024, 24 layers, gelu; stored in the open_clip layout.
TINY_OPEN_CLIP_H: dict = {
    **_TEXT_COMMON,
    "hidden_size": 48,
    "intermediate_size": 192,
    "num_hidden_layers": 3,
    "projection_dim": 48,
    "hidden_act": "gelu",
}

# OpenCLIP ViT-bigG/14 text tower (SDXL "te2", refiner): real width 1280, 32 layers, gelu, projection 1280.
TINY_OPEN_CLIP_G: dict = {
    **_TEXT_COMMON,
    "hidden_size": 48,
    "intermediate_size": 192,
    "num_hidden_layers": 3,
    "projection_dim": 48,
    "hidden_act": "gelu",
}

# SD VAE (same structure for SD1, SD2 and SDXL): 4 levels -> 8x downscale, 4 latent channels, mid attention.
TINY_VAE: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (32, 32, 64, 64),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 64,
}

# SD 1.x: 4 levels x 2 res blocks, attention on the first three levels, conv proj_in/out, 8 heads, context 768.
TINY_SD1_UNET: dict = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 32, 64, 64),
    "layers_per_block": 2,
    "cross_attention_dim": TINY_CLIP_L["hidden_size"],
    "attention_head_dim": 8,  # diffusers' legacy name: this is the number of heads (SD1 uses 8)
    "use_linear_projection": False,
    "norm_num_groups": 32,
}

# SD 2.x (768-v): SD1's structure with linear proj_in/out, 64-channel heads, OpenCLIP-H context.
TINY_SD2_UNET: dict = {
    **TINY_SD1_UNET,
    "block_out_channels": (64, 64, 64, 128),
    "cross_attention_dim": TINY_OPEN_CLIP_H["hidden_size"],
    "attention_head_dim": (1, 1, 1, 2),  # heads per level = channels // 64
    "use_linear_projection": True,
}

SDXL_ADM_BASE = TINY_OPEN_CLIP_G["projection_dim"] + 6 * 256  # pooled bigG + 6 size embeddings of 256
SDXL_ADM_REFINER = TINY_OPEN_CLIP_G["projection_dim"] + 5 * 256  # pooled bigG + 4 sizes + aesthetic score

# SDXL base: 3 levels (no attention on level 0), transformer depth per level (real 1/2/10), text_time label_emb.
TINY_SDXL_UNET: dict = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (64, 64, 128),
    "layers_per_block": 2,
    "transformer_layers_per_block": (1, 1, 2),
    "cross_attention_dim": TINY_CLIP_L["hidden_size"] + TINY_OPEN_CLIP_G["hidden_size"],
    "attention_head_dim": (1, 1, 2),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": SDXL_ADM_BASE,
    "norm_num_groups": 32,
}

# SDXL refiner: 4 levels, attention on levels 1 and 2 only (real depth 4), bigG-only context, aesthetic adm.
TINY_SDXL_REFINER_UNET: dict = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (64, 64, 64, 128),
    "layers_per_block": 2,
    "transformer_layers_per_block": 2,
    "cross_attention_dim": TINY_OPEN_CLIP_G["hidden_size"],
    "attention_head_dim": (1, 1, 1, 2),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": SDXL_ADM_REFINER,
    "norm_num_groups": 32,
}


# The same UNets as LDM / sgm yaml ``unet_config.params`` (what the real v1-inference.yaml, v2-inference-v.yaml,
# sd_xl_base.yaml, sd_xl_refiner.yaml hold, with the tiny sizes): for loaders that ship LDM-shaped configs.
LDM_UNET_PARAMS: dict[str, dict] = {
    "sd1": {
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": 32,
        "attention_resolutions": [4, 2, 1],
        "num_res_blocks": 2,
        "channel_mult": [1, 1, 2, 2],
        "num_heads": 8,
        "transformer_depth": 1,
        "context_dim": TINY_CLIP_L["hidden_size"],
        "use_linear_in_transformer": False,
    },
    "sd2": {
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": 64,
        "attention_resolutions": [4, 2, 1],
        "num_res_blocks": 2,
        "channel_mult": [1, 1, 1, 2],
        "num_head_channels": 64,
        "transformer_depth": 1,
        "context_dim": TINY_OPEN_CLIP_H["hidden_size"],
        "use_linear_in_transformer": True,
    },
    "sdxl": {
        "adm_in_channels": SDXL_ADM_BASE,
        "num_classes": "sequential",
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": 64,
        "attention_resolutions": [4, 2],
        "num_res_blocks": 2,
        "channel_mult": [1, 1, 2],
        "num_head_channels": 64,
        "transformer_depth": [0, 1, 2],  # sgm lists a depth per level; 0 where a level has no attention
        "context_dim": TINY_SDXL_UNET["cross_attention_dim"],
        "use_linear_in_transformer": True,
    },
    "sdxl_refiner": {
        "adm_in_channels": SDXL_ADM_REFINER,
        "num_classes": "sequential",
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": 64,
        "attention_resolutions": [4, 2],
        "num_res_blocks": 2,
        "channel_mult": [1, 1, 1, 2],
        "num_head_channels": 64,
        "transformer_depth": 2,
        "context_dim": TINY_OPEN_CLIP_G["hidden_size"],
        "use_linear_in_transformer": True,
    },
}

# TINY_VAE as the LDM yaml ``first_stage_config.params.ddconfig``
LDM_VAE_DDCONFIG: dict = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 32,
    "ch_mult": [1, 1, 2, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "dropout": 0.0,
}

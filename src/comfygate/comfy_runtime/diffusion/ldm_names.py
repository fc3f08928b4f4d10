"""Parameter names of the diffusers / transformers modules -> key names of the original single-file layouts.

Why a table of our own beside diffusers' converters: before converting, the loader checks that every key the
network needs is in the file and names the missing ones (diffusers' converters crash on a missing key without
naming it); LoRA files name weights by their LDM keys (``lora_unet_input_blocks_1_1_proj_in``), so each loaded
model records LDM key -> parameter name; and bare UNet / VAE files saved by diffusers are renamed to the LDM layout
so that they go through the one detection path. The names are checked against diffusers' converters tensor by
tensor in the tests.

Layouts: UNet ``input_blocks.N.M`` / ``middle_block.N`` / ``output_blocks.N.M`` (LDM ``openaimodel``); VAE
``encoder.down.N.block.M`` (LDM ``autoencoder``); OpenCLIP text towers ``transformer.resblocks.N`` (open_clip),
whose fused ``attn.in_proj_weight`` holds q, k and v stacked (index 0, 1, 2 of the split).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "diffusers_unet_to_ldm",
    "diffusers_vae_to_ldm",
    "is_diffusers_unet",
    "is_diffusers_vae",
    "open_clip_ldm_names",
    "unet_ldm_names",
    "vae_ldm_names",
]

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

_DOWN = re.compile(r"^down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)$")
_UP = re.compile(r"^up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.+)$")
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")


def _rename_head(rest: str, table: Mapping[str, str]) -> str:
    """Rename the leading module name of ``rest`` (e.g. ``norm1.weight``) by ``table``."""
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def _unet_name(name: str, per_level: int, up_has_attn: Mapping[int, bool]) -> str | None:
    for old, new in _UNET_TOP.items():
        if name.startswith(old + "."):
            return new + name[len(old) :]
    step = per_level + 1
    if m := _DOWN.match(name):
        level, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        if kind == "downsamplers":  # downsamplers.0.conv.weight -> input_blocks.K.0.op.weight
            return f"input_blocks.{(level + 1) * step}.0.op{rest[len('conv'):]}" if rest.startswith("conv.") else None
        block = 1 + level * step + j
        if kind == "resnets":
            return f"input_blocks.{block}.0.{_rename_head(rest, _UNET_RESNET)}"
        return f"input_blocks.{block}.1.{rest}"
    if m := _MID.match(name):
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "resnets":
            return f"middle_block.{2 * j}.{_rename_head(rest, _UNET_RESNET)}"
        return f"middle_block.1.{rest}"
    if m := _UP.match(name):
        level, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        if kind == "upsamplers":  # after the resnet (and the attention when the level has one)
            slot = 2 if up_has_attn.get(level) else 1
            return f"output_blocks.{level * step + per_level}.{slot}.{rest}" if rest.startswith("conv.") else None
        block = level * step + j
        if kind == "resnets":
            return f"output_blocks.{block}.0.{_rename_head(rest, _UNET_RESNET)}"
        return f"output_blocks.{block}.1.{rest}"
    return None


def unet_ldm_names(names: Iterable[str], config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers ``UNet2DConditionModel`` parameter name -> LDM key (without ``model.diffusion_model.``)."""
    per_level = int(config["layers_per_block"])
    up_has_attn = {i: t.startswith("CrossAttn") for i, t in enumerate(config["up_block_types"])}
    out = {}
    for name in names:
        ldm = _unet_name(name, per_level, up_has_attn)
        if ldm is None:
            raise ValueError(f"no LDM name for UNet parameter {name!r}")
        out[name] = ldm
    return out


def _vae_part(part: str, rest: str, levels: int) -> str | None:
    pattern = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)$")
    if m := pattern.match(rest):
        group, i, kind, j, tail = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        ldm_level = i if group == "down_blocks" else levels - 1 - i
        ldm_group = "down" if group == "down_blocks" else "up"
        if kind == "resnets":
            return f"{part}.{ldm_group}.{ldm_level}.block.{j}.{_rename_head(tail, _VAE_RESNET)}"
        sampler = "downsample" if kind == "downsamplers" else "upsample"
        return f"{part}.{ldm_group}.{ldm_level}.{sampler}.{tail}"
    if m := re.match(r"^mid_block\.resnets\.(\d+)\.(.+)$", rest):
        return f"{part}.mid.block_{int(m.group(1)) + 1}.{_rename_head(m.group(2), _VAE_RESNET)}"
    if m := re.match(r"^mid_block\.attentions\.0\.(.+)$", rest):
        return f"{part}.mid.attn_1.{_rename_head(m.group(1), _VAE_ATTN)}"
    if rest.startswith("conv_norm_out."):
        return f"{part}.norm_out.{rest[len('conv_norm_out.'):]}"
    if rest.startswith(("conv_in.", "conv_out.")):
        return f"{part}.{rest}"
    return None


def vae_ldm_names(names: Iterable[str], config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers ``AutoencoderKL`` parameter name -> LDM key (without ``first_stage_model.``)."""
    levels = len(config["block_out_channels"])
    out = {}
    for name in names:
        if name.startswith(("quant_conv.", "post_quant_conv.")):
            out[name] = name
            continue
        part, _, rest = name.partition(".")
        ldm = _vae_part(part, rest, levels) if part in ("encoder", "decoder") else None
        if ldm is None:
            raise ValueError(f"no LDM name for VAE parameter {name!r}")
        out[name] = ldm
    return out


_OPEN_CLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
    "text_projection.weight": "text_projection",
}
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_QKV = {"q_proj": 0, "k_proj": 1, "v_proj": 2}


def open_clip_ldm_names(names: Iterable[str]) -> dict[str, tuple[str, int | None]]:
    """transformers CLIP text parameter name (``text_model.`` optional) -> (open_clip key, q/k/v index or None).

    q/k/v projections come from one fused ``attn.in_proj_weight`` / ``in_proj_bias``: the index says which third.
    """
    out: dict[str, tuple[str, int | None]] = {}
    layer = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
    for name in names:
        bare = name.removeprefix("text_model.")
        if bare in _OPEN_CLIP_TOP:
            out[name] = (_OPEN_CLIP_TOP[bare], None)
            continue
        m = layer.match(bare)
        if m is None:
            raise ValueError(f"no open_clip name for text parameter {name!r}")
        i, rest = m.group(1), m.group(2)
        head = f"transformer.resblocks.{i}."
        qkv = re.match(r"^self_attn\.([qkv]_proj)\.(weight|bias)$", rest)
        if qkv:
            out[name] = (f"{head}attn.in_proj_{qkv.group(2)}", _QKV[qkv.group(1)])
        else:
            out[name] = (head + _rename_head(rest, _OPEN_CLIP_LAYER), None)
    return out


def is_diffusers_unet(sd: Mapping[str, Any], prefix: str = "") -> bool:
    return f"{prefix}conv_in.weight" in sd and any(k.startswith(f"{prefix}down_blocks.") for k in sd)


def is_diffusers_vae(sd: Mapping[str, Any]) -> bool:
    return "encoder.conv_in.weight" in sd and any(k.startswith("encoder.down_blocks.") for k in sd)


def _count(sd: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in sd if (m := pattern.match(k))})


def diffusers_unet_to_ldm(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a diffusers-layout UNet state dict to LDM keys (no prefix); the tensors are the same objects."""
    levels = _count(sd, "down_blocks.")
    config = {
        "layers_per_block": _count(sd, "down_blocks.0.resnets."),
        "up_block_types": [
            "CrossAttnUpBlock2D" if any(k.startswith(f"up_blocks.{i}.attentions.") for k in sd) else "UpBlock2D"
            for i in range(levels)
        ],
    }
    names = unet_ldm_names(sd.keys(), config)
    return {names[k]: v for k, v in sd.items()}


def diffusers_vae_to_ldm(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a diffusers-layout AutoencoderKL state dict to LDM keys (no prefix); same tensor objects."""
    config = {"block_out_channels": [None] * _count(sd, "encoder.down_blocks.")}
    names = vae_ldm_names(sd.keys(), config)
    return {names[k]: v for k, v in sd.items()}

"""Our own diffusers/transformers -> original single-file (LDM / sgm / open_clip) key mapping.

No library writes the single-file layout, so fixtures that must look like ``v1-5-pruned.safetensors`` or
``sd_xl_base_1.0.safetensors`` are converted here. The mapping is checked tensor by tensor against diffusers' own
single-file readers in ``test_tiny_checkpoints.py``; it works for any depth (levels, res blocks, transformer depth).
"""

from __future__ import annotations

import torch

__all__ = [
    "unet_key_map",
    "unet_to_ldm",
    "vae_key_map",
    "vae_to_ldm",
    "hf_text_state_dict",
    "clip_l_to_ldm",
    "open_clip_to_ldm",
]

_RESNET_UNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_PLAIN = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}


def _unet_prefixes(config: dict) -> list[tuple[str, str, bool]]:
    """(diffusers module prefix, LDM module prefix, is_resnet) for every block of a UNet with this config."""
    levels = len(config["block_out_channels"])
    per_level = config["layers_per_block"]
    out: list[tuple[str, str, bool]] = [(d, ldm, False) for d, ldm in _UNET_PLAIN.items()]
    k = 1  # input_blocks.0 is conv_in
    for i, kind in enumerate(config["down_block_types"]):
        for j in range(per_level):
            out.append((f"down_blocks.{i}.resnets.{j}", f"input_blocks.{k}.0", True))
            if kind.startswith("CrossAttn"):
                out.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{k}.1", False))
            k += 1
        if i != levels - 1:
            out.append((f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{k}.0.op", False))
            k += 1
    out += [
        ("mid_block.resnets.0", "middle_block.0", True),
        ("mid_block.attentions.0", "middle_block.1", False),
        ("mid_block.resnets.1", "middle_block.2", True),
    ]
    k = 0
    for b, kind in enumerate(config["up_block_types"]):
        attn = kind.startswith("CrossAttn")
        for j in range(per_level + 1):
            out.append((f"up_blocks.{b}.resnets.{j}", f"output_blocks.{k}.0", True))
            if attn:
                out.append((f"up_blocks.{b}.attentions.{j}", f"output_blocks.{k}.1", False))
            if j == per_level and b != levels - 1:
                out.append((f"up_blocks.{b}.upsamplers.0.conv", f"output_blocks.{k}.{2 if attn else 1}.conv", False))
            k += 1
    return out


def _translate(key: str, prefixes: list[tuple[str, str, bool]], renames: dict[str, str]) -> str:
    for d_prefix, ldm_prefix, is_resnet in prefixes:
        if key.startswith(d_prefix + "."):
            rest = key[len(d_prefix) + 1 :]
            if is_resnet:
                head, _, tail = rest.partition(".")
                rest = f"{renames.get(head, head)}.{tail}"
            return f"{ldm_prefix}.{rest}"
    raise ValueError(f"no LDM name for diffusers key {key!r}")


def unet_key_map(config: dict, keys) -> dict[str, str]:
    """diffusers UNet2DConditionModel key -> LDM key (without "model.diffusion_model.")."""
    prefixes = _unet_prefixes(config)
    return {k: _translate(k, prefixes, _RESNET_UNET) for k in keys}


def unet_to_ldm(state_dict: dict[str, torch.Tensor], config: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """A diffusers UNet state dict in the LDM layout (all weights keep their shapes)."""
    names = unet_key_map(config, state_dict)
    return {prefix + names[k]: v for k, v in state_dict.items()}


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_key_map(config: dict, keys) -> dict[str, str]:
    """diffusers AutoencoderKL key -> LDM VAE key (without "first_stage_model.")."""
    levels = len(config["block_out_channels"])
    prefixes: list[tuple[str, str, bool]] = []
    for part in ("encoder", "decoder"):
        prefixes += [
            (f"{part}.conv_norm_out", f"{part}.norm_out", False),
            (f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", True),
            (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", True),
        ]
    for i in range(levels):
        prefixes += [
            (f"encoder.down_blocks.{i}.resnets", f"encoder.down.{i}.block", False),
            (f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv", False),
            # decoder up blocks run from the deepest level: diffusers up_blocks.0 is LDM up.<levels-1>
            (f"decoder.up_blocks.{i}.resnets", f"decoder.up.{levels - 1 - i}.block", False),
            (f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{levels - 1 - i}.upsample.conv", False),
        ]
    out = {}
    for key in keys:
        attn = next(
            (p for p in ("encoder.mid_block.attentions.0.", "decoder.mid_block.attentions.0.") if key.startswith(p)),
            None,
        )
        if attn is not None:
            rest = key[len(attn) :]
            module, _, leaf = rest.rpartition(".")
            out[key] = f"{attn.split('.')[0]}.mid.attn_1.{_VAE_ATTN[module]}.{leaf}"
            continue
        try:
            name = _translate(key, prefixes, {})
        except ValueError:
            name = key  # conv_in, conv_out, quant_conv, post_quant_conv keep their names
        out[key] = name.replace(".conv_shortcut.", ".nin_shortcut.")
    return out


def vae_to_ldm(state_dict: dict[str, torch.Tensor], config: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL state dict in the LDM layout (mid attention as 1x1 convs, as LDM stores it)."""
    names = vae_key_map(config, state_dict)
    out = {}
    for key, value in state_dict.items():
        name = names[key]
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # Linear [C, C] -> Conv2d 1x1 [C, C, 1, 1]
        out[prefix + name] = value
    return out


def hf_text_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model's weights under the HF file names ("text_model.*", "text_projection.weight").

    transformers 5 drops the "text_model." prefix for CLIPTextModel but keeps it for the projection variant; files
    (and every reader of them) use the prefixed names.
    """
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("position_ids"):
            continue
        if not key.startswith(("text_model.", "text_projection.")):
            key = "text_model." + key
        out[key] = value
    return out


def clip_l_to_ldm(hf: dict[str, torch.Tensor], prefix: str, *, position_ids: bool = True) -> dict[str, torch.Tensor]:
    """CLIP-L in a checkpoint: the HF names under ``prefix`` (e.g. "cond_stage_model.transformer.").

    Real SD1.5 / SDXL files also carry the ``position_ids`` buffer (int64 [1, 77]); the projection is not stored.
    """
    out = {prefix + k: v for k, v in hf.items() if k.startswith("text_model.")}
    if position_ids:
        positions = hf["text_model.embeddings.position_embedding.weight"].shape[0]
        out[prefix + "text_model.embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64)[None]
    return out


_OPEN_CLIP_LAYER = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def open_clip_to_ldm(hf: dict[str, torch.Tensor], prefix: str, *, width: int) -> dict[str, torch.Tensor]:
    """An HF CLIP text model in the open_clip layout under ``prefix`` (e.g. "cond_stage_model.model.").

    q/k/v are fused into ``attn.in_proj_weight`` [3W, W]; ``text_projection`` is stored as open_clip uses it,
    ``x @ P`` with P [W, proj] (the transpose of HF's Linear weight); ``logit_scale`` is there as in real files.
    """
    out: dict[str, torch.Tensor] = {}
    te = "text_model."
    out[prefix + "token_embedding.weight"] = hf[te + "embeddings.token_embedding.weight"]
    out[prefix + "positional_embedding"] = hf[te + "embeddings.position_embedding.weight"]
    out[prefix + "ln_final.weight"] = hf[te + "final_layer_norm.weight"]
    out[prefix + "ln_final.bias"] = hf[te + "final_layer_norm.bias"]
    if "text_projection.weight" in hf:
        out[prefix + "text_projection"] = hf["text_projection.weight"].T.contiguous()
    else:  # SD2 files carry a projection the diffusion model never uses; keep the key so the layout is real
        out[prefix + "text_projection"] = torch.zeros(width, width)
    out[prefix + "logit_scale"] = torch.tensor(4.6052)
    layers = sorted({int(k.split(".")[3]) for k in hf if k.startswith(te + "encoder.layers.")})
    for n in layers:
        src = f"{te}encoder.layers.{n}."
        dst = f"{prefix}transformer.resblocks.{n}."
        for leaf in ("weight", "bias"):
            qkv = [hf[f"{src}self_attn.{p}_proj.{leaf}"] for p in "qkv"]
            out[f"{dst}attn.in_proj_{leaf}"] = torch.cat(qkv, dim=0)
            for hf_name, oc_name in _OPEN_CLIP_LAYER.items():
                out[f"{dst}{oc_name}.{leaf}"] = hf[f"{src}{hf_name}.{leaf}"]
    return out

"""Tiny kohya-style LoRA files for the tiny checkpoints, and the weight deltas they stand for.

Key names follow kohya's sd-scripts (what ComfyUI's lora.py maps). UNet: ``lora_unet_<module path with "_">``
where the path is the diffusers one for SD1/SD2 (sd-scripts trains those on the diffusers UNet:
``lora_unet_down_blocks_0_attentions_0_proj_in``) and the LDM one for SDXL (``lora_unet_input_blocks_4_1_proj_in``);
``unet_naming`` overrides. Text: ``lora_te_text_model_encoder_layers_<n>_<module>`` (``lora_te1_`` / ``lora_te2_``
for SDXL's two encoders),
each with ``.lora_down.weight`` [r, in(,1,1)], ``.lora_up.weight`` [out, r(,1,1)] and a 0-dim ``.alpha``.
The delta a loader must add to ``<module>.weight`` is ``strength * (up @ down) * alpha / r``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .tiny_checkpoints import TEXT_CONFIGS, UNET_CONFIGS
from .tiny_ldm_keys import hf_text_state_dict, unet_key_map
from .tiny_models import seeded

__all__ = [
    "UNET_LORA_MODULES",
    "TEXT_LORA_MODULES",
    "lora_state_dict",
    "lora_targets",
    "lora_deltas",
    "build_lora_file",
]

# LDM module suffixes inside each SpatialTransformer that kohya trains by default
UNET_LORA_MODULES = (
    "proj_in",
    "proj_out",
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "ff.net.0.proj",
    "ff.net.2",
)
# HF CLIP module names (ComfyUI's LORA_CLIP_MAP) inside text_model.encoder.layers.<n>
TEXT_LORA_MODULES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "mlp.fc1",
    "mlp.fc2",
)
# a SpatialTransformer sits at index 1 of its LDM block: input_blocks.<k>.1, middle_block.1, output_blocks.<k>.1
_IN_TRANSFORMER = re.compile(r"^(input_blocks\.\d+\.1|middle_block\.1|output_blocks\.\d+\.1)\.")
_TE_PREFIXES = {"sd1": ["lora_te_"], "sd2": ["lora_te_"], "sdxl": ["lora_te1_", "lora_te2_"]}


def _naming(arch: str, unet_naming: str | None) -> str:
    naming = unet_naming or ("ldm" if arch == "sdxl" else "diffusers")
    if naming not in ("ldm", "diffusers"):
        raise ValueError(f"unet_naming must be 'ldm' or 'diffusers', got {unet_naming!r}")
    return naming


def _weights_to_patch(arch: str, targets, unet_naming: str | None = None) -> dict[str, tuple[str, torch.Size]]:
    """lora name -> (target weight key, weight shape); target keys as the runtime names them (design's
    ``param_of_ldm``): LDM UNet key without "model.diffusion_model.", HF text key (``te1.``/``te2.`` for SDXL).

    Shapes come from models built on the meta device: no weights are made, so this is instant.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if arch not in _TE_PREFIXES:
        raise ValueError(f"no tiny LoRA layout for {arch!r}; expected one of {sorted(_TE_PREFIXES)}")
    out: dict[str, tuple[str, torch.Size]] = {}
    with torch.device("meta"):
        if "unet" in targets:
            config = UNET_CONFIGS[arch]
            weights = UNet2DConditionModel(**config).state_dict()
            for d_key, ldm_key in unet_key_map(config, weights).items():
                module = ldm_key[: -len(".weight")]
                if ldm_key.endswith(".weight") and _IN_TRANSFORMER.match(module) and module.endswith(UNET_LORA_MODULES):
                    named = module if _naming(arch, unet_naming) == "ldm" else d_key[: -len(".weight")]
                    out["lora_unet_" + named.replace(".", "_")] = (ldm_key, weights[d_key].shape)
        if "te" in targets:
            several = len(TEXT_CONFIGS[arch]) > 1
            for index, ((config, projection), lora_prefix) in enumerate(
                zip(TEXT_CONFIGS[arch], _TE_PREFIXES[arch], strict=True)
            ):
                cls = CLIPTextModelWithProjection if projection else CLIPTextModel
                for key, value in hf_text_state_dict(cls(CLIPTextConfig(**config))).items():
                    module = key[: -len(".weight")]
                    if ".encoder.layers." in key and key.endswith(".weight") and module.endswith(TEXT_LORA_MODULES):
                        name = lora_prefix + module.replace(".", "_")
                        out[name] = ((f"te{index + 1}." if several else "") + key, value.shape)
    return out


def lora_targets(arch: str = "sd1", *, targets=("unet", "te"), unet_naming: str | None = None) -> dict[str, str]:
    """lora name (without ".lora_up.weight") -> the weight it patches (see _weights_to_patch for the naming)."""
    return {name: target for name, (target, _) in _weights_to_patch(arch, targets, unet_naming).items()}


def lora_state_dict(
    arch: str = "sd1",
    *,
    rank: int = 4,
    alpha: float | None = None,
    seed: int = 0,
    targets=("unet", "te"),
    scale: float = 0.15,
    unet_naming: str | None = None,
) -> dict[str, torch.Tensor]:
    """A kohya LoRA for the tiny ``arch`` checkpoints (shapes do not depend on their seed).

    Both factors are non-zero (a trained LoRA, not a fresh one), so applying it changes outputs. ``alpha`` defaults
    to rank / 2 so a loader that ignores alpha is caught. Values depend on the seed and the patched weight, not on
    ``unet_naming``: the same LoRA in both namings must give the same image.
    """
    alpha = rank / 2 if alpha is None else alpha
    sd: dict[str, torch.Tensor] = {}
    patches = _weights_to_patch(arch, targets, unet_naming)
    with seeded(seed + 1000):
        for name, (_, shape) in sorted(patches.items(), key=lambda item: item[1][0]):
            out_dim, in_dim, *kernel = shape
            if any(k != 1 for k in kernel):
                raise ValueError(f"{name}: only linear / 1x1 conv weights are LoRA targets here, got {tuple(shape)}")
            sd[f"{name}.lora_down.weight"] = torch.randn(rank, in_dim, *kernel) * scale
            sd[f"{name}.lora_up.weight"] = torch.randn(out_dim, rank, *kernel) * scale
            sd[f"{name}.alpha"] = torch.tensor(float(alpha))
    return sd


def lora_deltas(lora: dict[str, torch.Tensor], arch: str = "sd1", *, strength: float = 1.0) -> dict[str, torch.Tensor]:
    """target weight key -> the delta the LoRA adds at ``strength`` (an oracle for loader tests, either naming).

    delta = strength * (up @ down) * alpha / rank, shaped like the weight ([out, in] or [out, in, 1, 1]).
    """
    names = {**lora_targets(arch, unet_naming="ldm"), **lora_targets(arch, unet_naming="diffusers")}
    out = {}
    for key, up in lora.items():
        if not key.endswith(".lora_up.weight"):
            continue
        name = key[: -len(".lora_up.weight")]
        down = lora[name + ".lora_down.weight"]
        rank = down.shape[0]
        alpha = float(lora[name + ".alpha"]) if name + ".alpha" in lora else rank
        delta = up.flatten(1) @ down.flatten(1) * (alpha / rank) * strength  # [out, r] @ [r, in] -> [out, in]
        out[names[name]] = delta.reshape(up.shape[0], *down.shape[1:])
    return out


def build_lora_file(
    path: str | Path,
    checkpoint_kind: str = "sd1",
    *,
    rank: int = 4,
    alpha: float | None = None,
    seed: int = 0,
    targets=("unet", "te"),
    scale: float = 0.15,
    unet_naming: str | None = None,
) -> Path:
    """Write :func:`lora_state_dict` to ``path`` as .safetensors with kohya's metadata; returns the path.

    ``targets``: any of "unet", "te" (a UNet-only LoRA is what LoraLoaderModelOnly users typically have).
    """
    from safetensors.torch import save_file

    sd = lora_state_dict(
        checkpoint_kind, rank=rank, alpha=alpha, seed=seed, targets=targets, scale=scale, unet_naming=unet_naming
    )
    if not sd:
        raise ValueError(f"LoRA for {checkpoint_kind!r} with targets {targets!r} would be empty")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(rank / 2 if alpha is None else alpha),
    }
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=meta)
    return path

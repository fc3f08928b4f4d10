"""What a single-file checkpoint is: architecture, prediction type and every size, from key names and shapes.

Why our own detection: diffusers' ``infer_diffusers_model_type`` falls back to SD1 for anything it does not know,
and ComfyUI matches exact channel counts (320, 768, 2048 ...), which tiny test checkpoints do not have. Here the
architecture comes from structure (conditioning-vector input, linear vs conv attention projections, the
text-encoder key layout) and every size from tensor shapes, so real and tiny files go through one path.

Rules (documented because users hit them):

- ``label_emb`` (an ADM / pooled-vector input) means SDXL. The text-encoder layout tells base
  (``conditioner.embedders.0.transformer`` CLIP-L + ``conditioner.embedders.1.model`` bigG) from refiner
  (``conditioner.embedders.0.model`` bigG only); a bare UNet is a refiner when ``adm_in_channels - 5*256`` equals
  the context width (pooled bigG + 5 size numbers) and a base model when it has 6 size numbers.
- Otherwise linear ``proj_in`` in the transformer blocks means SD2, 1x1-conv ``proj_in`` SD1.
- v-prediction, following ComfyUI: an SD2 UNet with 4 input channels whose last output block's
  ``transformer_blocks.0.norm1.bias`` has a (biased) standard deviation above 0.09 is v-prediction (ComfyUI
  reads ``output_blocks.11``, the last output block of every real SD2 UNet). A top-level ``v_pred`` key, ComfyUI's
  marker for v-prediction SDXL files, means v for any architecture.
- Inpainting / unCLIP UNets (extra input channels, SD2 ADM inputs) are refused with a message saying so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfygate.comfy_runtime.diffusion import configs
from comfygate.comfy_runtime.diffusion.errors import ModelLoadError

__all__ = [
    "UNET_PREFIX",
    "VAE_PREFIX",
    "ModelConfig",
    "TextConfig",
    "detect_model",
    "detect_text_encoders",
    "detect_unet",
    "detect_vae",
    "unet_prefix_of",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

# (prefix of the text tower's keys, kind, layout) in the order ComfyUI checks them
_TEXT_LAYOUTS = (
    ("cond_stage_model.transformer.text_model.", "clip_l", "sd"),
    ("cond_stage_model.model.", "open_clip", "sd"),
    ("conditioner.embedders.0.transformer.text_model.", "clip_l", "sgm"),
    ("conditioner.embedders.0.model.", "open_clip", "sgm"),
    ("conditioner.embedders.1.model.", "open_clip", "sgm"),
)


@dataclass
class TextConfig:
    """One text encoder of a checkpoint.

    ``kind`` is ``"clip_l"`` (OpenAI CLIP-L, transformers key layout) or ``"open_clip"`` (OpenCLIP ViT-H / bigG,
    open_clip key layout); ``prefix`` the keys' prefix in the file (for clip_l it ends in ``text_model.``);
    ``projection`` whether the text projection is kept (SDXL's bigG gives the pooled vector through it);
    ``config`` the transformers ``CLIPTextConfig`` kwargs.
    """

    kind: str
    prefix: str
    projection: bool
    config: dict[str, Any]


@dataclass
class ModelConfig:
    """What a state dict is (see the module docstring for the rules).

    ``unet``/``vae`` are diffusers configs, ``text`` one entry per text encoder, ``ldm`` the LDM-yaml-shaped
    config (a shipped base config with every size read from shapes) the diffusers configs came from.
    """

    arch: str
    prediction: str
    unet: dict[str, Any]
    vae: dict[str, Any] | None
    text: list[TextConfig]
    latent_scale: float
    ldm: dict[str, Any] = field(default_factory=dict)
    unet_prefix: str = UNET_PREFIX
    vae_prefix: str | None = VAE_PREFIX

    @property
    def adm_in_channels(self) -> int | None:
        return self.unet.get("projection_class_embeddings_input_dim")

    @property
    def pooled_dim(self) -> int | None:
        """Width of the pooled text vector an SDXL UNet takes (None for SD1/SD2)."""
        adm = self.adm_in_channels
        if adm is None:
            return None
        numbers = 5 if self.arch == "sdxl_refiner" else 6
        return adm - numbers * configs.ADDITION_TIME_EMBED_DIM


def _shape(sd: Mapping[str, Any], key: str, source: str, what: str, prefix: str = "") -> tuple[int, ...]:
    """Shape of ``sd[key]``; ModelLoadError naming the file's key (``prefix + key``) when it is absent."""
    tensor = sd.get(key)
    if tensor is None:
        raise ModelLoadError(f"{source}: missing key {prefix + key!r} (needed to read the {what})")
    return tuple(tensor.shape)


def _indices(keys: list[str], prefix: str) -> list[int]:
    """Sorted distinct N of keys ``prefix + "N." + ...``."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def unet_prefix_of(sd: Mapping[str, Any]) -> str | None:
    """The prefix of the LDM UNet keys (``model.diffusion_model.`` or ``""`` for bare files), None if absent."""
    if f"{UNET_PREFIX}input_blocks.0.0.weight" in sd:
        return UNET_PREFIX
    if "input_blocks.0.0.weight" in sd:
        return ""
    if any(k.startswith(UNET_PREFIX) for k in sd):
        return UNET_PREFIX
    return None


def _transformer_depth(keys: list[str], block: str) -> int:
    return len(_indices(keys, f"{block}.1.transformer_blocks."))


def _unet_params(sd: Mapping[str, Any], prefix: str, source: str) -> tuple[dict[str, Any], list[int]]:
    """LDM ``unet_config.params`` read from shapes, and the up path's attention depths (diffusers order)."""
    keys = [k[len(prefix) :] for k in sd if k.startswith(prefix)]
    sub = {k: sd[prefix + k] for k in keys}
    first = _shape(sub, "input_blocks.0.0.weight", source, "UNet input channels", prefix)
    mc, in_ch = first[0], first[1]
    out_ch = _shape(sub, "out.2.weight", source, "UNet output channels", prefix)[0]
    time_dim = _shape(sub, "time_embed.0.weight", source, "time embedding width", prefix)[0]

    res_counts: list[int] = []
    level_channels: list[int] = []
    level_depths: list[list[int]] = []
    count, chans, depths = 0, None, []
    n_in = _indices(keys, "input_blocks.")
    for i in n_in[1:]:
        if f"input_blocks.{i}.0.op.weight" in sub:
            res_counts.append(count)
            level_channels.append(chans)
            level_depths.append(depths)
            count, chans, depths = 0, None, []
            continue
        chans = _shape(sub, f"input_blocks.{i}.0.out_layers.3.weight", source, "UNet level width", prefix)[0]
        depths.append(_transformer_depth(keys, f"input_blocks.{i}"))
        count += 1
    res_counts.append(count)
    level_channels.append(chans)
    level_depths.append(depths)
    if not n_in or count == 0 or any(c is None for c in level_channels):
        raise ModelLoadError(f"{source}: UNet input blocks have an unknown layout (blocks {n_in})")
    if len(set(res_counts)) != 1:
        raise ModelLoadError(f"{source}: UNet levels have different res-block counts {res_counts} (unsupported)")
    for d in level_depths:
        if len(set(d)) != 1:
            raise ModelLoadError(f"{source}: UNet level with mixed transformer depths {d} (unsupported)")
    depth = [d[0] for d in level_depths]
    if any(c % mc for c in level_channels):
        raise ModelLoadError(f"{source}: UNet level widths {level_channels} are not multiples of {mc}")

    blocks = res_counts[0]
    n_out = _indices(keys, "output_blocks.")
    if len(n_out) != len(depth) * (blocks + 1):
        raise ModelLoadError(
            f"{source}: UNet has {len(n_out)} output blocks, expected {len(depth) * (blocks + 1)} "
            f"({len(depth)} levels x {blocks + 1})"
        )
    depth_out = [_transformer_depth(keys, f"output_blocks.{lvl * (blocks + 1)}") for lvl in range(len(depth))]

    if "middle_block.1.proj_in.weight" not in sub:
        raise ModelLoadError(f"{source}: missing key {prefix + 'middle_block.1.proj_in.weight'!r} (middle attention)")
    middle = _transformer_depth(keys, "middle_block")

    attn_key = next((k for k in keys if k.endswith(".attn2.to_k.weight")), None)
    if attn_key is None:
        raise ModelLoadError(f"{source}: UNet has no cross-attention keys (*.attn2.to_k.weight)")
    context = sub[attn_key].shape[1]
    proj_key = next(k for k in keys if k.endswith(".proj_in.weight"))
    linear = sub[proj_key].ndim == 2

    params: dict[str, Any] = {
        "in_channels": in_ch,
        "out_channels": out_ch,
        "model_channels": mc,
        "channel_mult": [c // mc for c in level_channels],
        "num_res_blocks": blocks,
        "transformer_depth": depth,
        "transformer_depth_middle": middle,
        "attention_resolutions": [2**i for i, d in enumerate(depth) if d > 0],
        "context_dim": context,
        "use_linear_in_transformer": linear,
        "time_embed_dim": time_dim,
    }
    if "label_emb.0.0.weight" in sub:
        params["num_classes"] = "sequential"
        params["adm_in_channels"] = sub["label_emb.0.0.weight"].shape[1]
    return params, depth_out


def _text_layouts(sd: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    found = []
    for prefix, kind, layout in _TEXT_LAYOUTS:
        marker = "embeddings.token_embedding.weight" if kind == "clip_l" else "token_embedding.weight"
        if prefix + marker in sd:
            found.append((prefix, kind, layout))
    return found


def detect_text_encoders(sd: Mapping[str, Any], source: str, *, projection: bool | None = None) -> list[TextConfig]:
    """Text encoders present in ``sd`` (prefixes of :data:`_TEXT_LAYOUTS`), sizes read from shapes.

    ``projection`` forces keeping (True) or dropping (False) OpenCLIP's text projection; by default it is kept
    for the SGM layout (SDXL) and dropped for SD2's ``cond_stage_model.model.``.
    """
    out: list[TextConfig] = []
    for prefix, kind, layout in _text_layouts(sd):
        keys = [k for k in sd if k.startswith(prefix)]
        if kind == "clip_l":
            vocab, hidden = _shape(sd, prefix + "embeddings.token_embedding.weight", source, "CLIP vocabulary")
            positions = _shape(sd, prefix + "embeddings.position_embedding.weight", source, "CLIP positions")[0]
            layers = len(_indices(keys, prefix + "encoder.layers."))
            inter = _shape(sd, prefix + "encoder.layers.0.mlp.fc1.weight", source, "CLIP MLP width")[0]
            proj = None
            keep = False
        else:
            vocab, hidden = _shape(sd, prefix + "token_embedding.weight", source, "OpenCLIP vocabulary")
            positions = _shape(sd, prefix + "positional_embedding", source, "OpenCLIP positions")[0]
            layers = len(_indices(keys, prefix + "transformer.resblocks."))
            inter = _shape(sd, prefix + "transformer.resblocks.0.mlp.c_fc.weight", source, "OpenCLIP MLP width")[0]
            keep = (layout == "sgm") if projection is None else projection
            proj = _shape(sd, prefix + "text_projection", source, "text projection")[1] if keep else None
        if layers == 0:
            raise ModelLoadError(f"{source}: text encoder under {prefix!r} has no layers")
        config = configs.clip_text_config(
            kind,
            hidden=hidden,
            layers=layers,
            intermediate=inter,
            vocab=vocab,
            positions=positions,
            projection_dim=proj,
        )
        out.append(TextConfig(kind=kind, prefix=prefix, projection=keep, config=config))
    return out


def detect_vae(sd: Mapping[str, Any], prefix: str, source: str) -> dict[str, Any]:
    """LDM ``ddconfig`` of the VAE whose keys start with ``prefix``, read from shapes."""
    keys = [k for k in sd if k.startswith(prefix)]
    if prefix + "encoder.conv_in.weight" not in sd and prefix + "decoder.conv_in.weight" not in sd:
        raise ModelLoadError(f"{source}: no VAE keys with prefix {prefix!r} (encoder.conv_in.weight)")
    ch, in_ch = _shape(sd, prefix + "encoder.conv_in.weight", source, "VAE width")[:2]
    levels = _indices(keys, prefix + "encoder.down.")
    if not levels:
        raise ModelLoadError(f"{source}: VAE has no encoder.down.* blocks")
    mult = []
    for i in levels:
        width = _shape(sd, f"{prefix}encoder.down.{i}.block.0.conv2.weight", source, "VAE level width")[0]
        if width % ch:
            raise ModelLoadError(f"{source}: VAE level {i} width {width} is not a multiple of {ch}")
        mult.append(width // ch)
    blocks = len(_indices(keys, prefix + "encoder.down.0.block."))
    z = _shape(sd, prefix + "decoder.conv_in.weight", source, "latent channels")[1]
    out_ch = _shape(sd, prefix + "decoder.conv_out.weight", source, "VAE output channels")[0]
    return {
        "double_z": True,
        "z_channels": z,
        "resolution": 256,
        "in_channels": in_ch,
        "out_ch": out_ch,
        "ch": ch,
        "ch_mult": mult,
        "num_res_blocks": blocks,
        "attn_resolutions": [],
        "dropout": 0.0,
        "mid_attention": prefix + "encoder.mid.attn_1.q.weight" in sd,
    }


def _arch_of(params: dict[str, Any], text: list[TextConfig], source: str) -> str:
    sgm = [t for t in text if t.prefix.startswith("conditioner.")]
    if params.get("adm_in_channels") is not None:
        if text and not sgm:
            raise ModelLoadError(
                f"{source}: UNet takes a {params['adm_in_channels']}-wide ADM vector but the text encoder is "
                "SD1/SD2-style (an unCLIP or other variant, not supported)"
            )
        if sgm:
            clip_l = any(t.kind == "clip_l" for t in sgm)
            return "sdxl" if clip_l else "sdxl_refiner"
        extra = params["adm_in_channels"] - params["context_dim"]
        if extra == 5 * configs.ADDITION_TIME_EMBED_DIM:
            return "sdxl_refiner"
        if params["adm_in_channels"] > 6 * configs.ADDITION_TIME_EMBED_DIM:
            return "sdxl"
        raise ModelLoadError(
            f"{source}: UNet ADM input width {params['adm_in_channels']} matches neither SDXL base nor refiner"
        )
    return "sd2" if params["use_linear_in_transformer"] else "sd1"


def _prediction(sd: Mapping[str, Any], arch: str, params: dict[str, Any], prefix: str) -> str:
    if "v_pred" in sd:
        return "v"
    if arch == "sd2" and params["in_channels"] == 4:
        n_out = len(params["channel_mult"]) * (params["num_res_blocks"] + 1)
        bias = sd.get(f"{prefix}output_blocks.{n_out - 1}.1.transformer_blocks.0.norm1.bias")
        if bias is not None and not bias.is_meta and float(bias.float().std(unbiased=False)) > 0.09:
            return "v"
    return "eps"


def detect_unet(
    sd: Mapping[str, Any], source: str, prefix: str | None = None, text: list[TextConfig] | None = None
) -> ModelConfig:
    """Detect the UNet of ``sd`` (keys under ``prefix``; found automatically when None): a ModelConfig with
    ``vae=None`` and the given ``text`` (empty for bare UNet files)."""
    if prefix is None:
        prefix = unet_prefix_of(sd)
    if prefix is None or not any(k.startswith(prefix + "input_blocks.") for k in sd):
        found = sorted({k.split(".")[0] for k in sd})[:8]
        raise ModelLoadError(
            f"{source}: no UNet keys with prefix {UNET_PREFIX!r} (nor bare input_blocks.*); "
            f"top-level names found: {found}"
        )
    text = text or []
    params, depth_out = _unet_params(sd, prefix, source)
    if params["in_channels"] != 4 or params["out_channels"] != 4:
        raise ModelLoadError(
            f"{source}: UNet has {params['in_channels']} input / {params['out_channels']} output channels "
            "(inpainting or other variants with extra inputs are not supported; 4/4 expected)"
        )
    arch = _arch_of(params, text, source)
    prediction = _prediction(sd, arch, params, prefix)
    ldm = configs.base_config(arch)
    root = ldm["model"]["params"]
    unet_params = root["unet_config"]["params"]
    unet_params.update(params)
    root["parameterization"] = prediction
    try:
        unet = configs.unet_diffusers_config(unet_params, depth_out=depth_out)
    except ValueError as exc:
        raise ModelLoadError(f"{source}: {exc}") from exc
    return ModelConfig(
        arch=arch,
        prediction=prediction,
        unet=unet,
        vae=None,
        text=text,
        latent_scale=configs.LATENT_SCALE[arch],
        ldm=ldm,
        unet_prefix=prefix,
        vae_prefix=None,
    )


def detect_model(state_dict: Mapping[str, Any], source: str) -> ModelConfig:
    """Detect a full single-file checkpoint (UNet under ``model.diffusion_model.``, VAE under
    ``first_stage_model.``, text encoders in the SD or SGM layout). ``source`` names the file in errors."""
    text = detect_text_encoders(state_dict, source)
    config = detect_unet(state_dict, source, None, text)
    if config.arch in ("sd1", "sd2"):
        for t in text:  # SD1/SD2 condition on hidden states only: no pooled vector, so no projection
            t.projection = False
    if any(k.startswith(VAE_PREFIX) for k in state_dict):
        ddconfig = detect_vae(state_dict, VAE_PREFIX, source)
        config.ldm["model"]["params"]["first_stage_config"]["params"]["ddconfig"] = ddconfig
        config.vae = configs.vae_diffusers_config(ddconfig, config.latent_scale)
        config.vae_prefix = VAE_PREFIX
    return config

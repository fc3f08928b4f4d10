"""Single-file checkpoints -> diffusers / transformers modules, offline.

Steps for every component (UNet, VAE, each text encoder):

1. read the file: ``.safetensors`` with safetensors, ``.ckpt``/``.pt``/``.pth``/``.bin`` with
   ``torch.load(weights_only=True)`` only (a pickle that needs more than tensors and plain containers is refused:
   loading it would run code from the file). A ``{"state_dict": ...}`` wrapper, as LDM training writes, is unwrapped;
2. detect the architecture and sizes (detect.py);
3. build the network under ``accelerate.init_empty_weights()`` (no memory, no random init), and check that every
   key it needs is in the file, naming the missing ones (diffusers' converters crash on a missing key unnamed);
4. convert the names with diffusers' single-file converters, then ``load_state_dict(strict=True, assign=True)``:
   the file's tensors become the parameters without a copy; then move to the device / dtype asked for.

Each component records ``param_of_ldm`` (LDM key -> module parameter name, from ldm_names.py) for LoRA files,
which name weights by their LDM keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from comfygate.comfy_runtime.diffusion import configs
from comfygate.comfy_runtime.diffusion.detect import (
    UNET_PREFIX,
    VAE_PREFIX,
    ModelConfig,
    TextConfig,
    detect_model,
    detect_text_encoders,
    detect_unet,
    detect_vae,
    unet_prefix_of,
)
from comfygate.comfy_runtime.diffusion.errors import ModelLoadError
from comfygate.comfy_runtime.diffusion.ldm_names import (
    diffusers_unet_to_ldm,
    diffusers_vae_to_ldm,
    is_diffusers_unet,
    is_diffusers_vae,
    open_clip_ldm_names,
    unet_ldm_names,
    vae_ldm_names,
)
from comfygate.comfy_runtime.diffusion.unet import DiffusionModel
from comfygate.comfy_runtime.diffusion.vae import Vae
from comfygate.comfy_runtime.diffusion.weights import read_weights

__all__ = [
    "LoadedCheckpoint",
    "load_checkpoint",
    "load_diffusion_model",
    "load_text_encoder",
    "load_vae",
    "read_state_dict",
]

log = logging.getLogger(__name__)

_SHOWN = 8  # missing keys named in an error message


@dataclass
class LoadedCheckpoint:
    """One pool entry: the UNet, text encoders and VAE of one checkpoint file (``text``/``vae`` None if absent)."""

    unet: DiffusionModel
    text: Any  # text_encoders.TextEncoder | None
    vae: Vae | None
    config: ModelConfig
    path: str

    @property
    def size_bytes(self) -> int:
        parts = [self.unet, self.text, self.vae]
        return sum(int(p.size_bytes) for p in parts if p is not None)


# -- reading files --------------------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a model file (on the CPU), keys as stored. ModelLoadError names the file on any problem."""
    data: Any = read_weights(path)
    while isinstance(data.get("state_dict"), dict):  # training checkpoints wrap the weights
        data = data["state_dict"]
    tensors = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(f"{path}: the file holds no tensors")
    return tensors


def _normalise_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Older SD1 files keep CLIP-L keys without ``text_model.`` (``cond_stage_model.transformer.encoder...``)."""
    old = "cond_stage_model.transformer."
    if any(k.startswith(old + "text_model.") for k in sd) or not any(k.startswith(old) for k in sd):
        return sd
    return {(old + "text_model." + k[len(old) :] if k.startswith(old) else k): v for k, v in sd.items()}


# -- building modules -------------------------------------------------------------------------------------------


def _check_present(sd: Mapping[str, Any], needed: list[str], source: str, what: str) -> None:
    missing = [k for k in needed if k not in sd]
    if missing:
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        raise ModelLoadError(
            f"{source}: {what} is missing {len(missing)} key(s): {', '.join(missing[:_SHOWN])}{more}"
        )


def _empty(factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on the meta device, buffers real (position ids etc.)
        return factory()


def _fill(
    module: torch.nn.Module,
    converted: Mapping[str, torch.Tensor],
    source: str,
    what: str,
    device: torch.device | str,
    dtype: torch.dtype,
) -> torch.nn.Module:
    """Load ``converted`` into the empty ``module`` (only its own keys; others are logged) and move it."""
    wanted = module.state_dict().keys()
    lost = [k for k in wanted if k not in converted]
    if lost:  # the presence check ran on LDM names; this only trips if a converter skipped something
        raise ModelLoadError(f"{source}: {what} conversion produced no value for {', '.join(lost[:_SHOWN])}")
    extra = [k for k in converted if k not in wanted]
    if extra:
        log.debug("%s: %s keys not used: %s", source, what, ", ".join(extra[:_SHOWN]))
    state = {k: converted[k] for k in wanted}
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = "; ".join(lines[1 : 1 + _SHOWN]) or lines[0]
        raise ModelLoadError(f"{source}: {what} weights do not fit the detected network: {detail}") from exc
    # torch's own .to: diffusers' override warns about fp32-kept modules on every dtype cast, even when it has none
    torch.nn.Module.to(module, device=device, dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return module


def _build_unet(sd: Mapping[str, torch.Tensor], config: ModelConfig, source: str, device, dtype) -> DiffusionModel:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    module = _empty(lambda: UNet2DConditionModel(**config.unet))
    ldm_of = unet_ldm_names(module.state_dict().keys(), config.unet)
    prefix = config.unet_prefix
    _check_present(sd, [prefix + k for k in ldm_of.values()], source, "the UNet")
    if prefix == UNET_PREFIX:
        full = sd
    else:  # the converter reads keys under model.diffusion_model.
        full = {UNET_PREFIX + k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    converted = convert_ldm_unet_checkpoint(full, config.unet)
    _fill(module, converted, source, "the UNet", device, dtype)
    return DiffusionModel(module, config, {ldm: name for name, ldm in ldm_of.items()})


def _build_vae(sd: Mapping[str, torch.Tensor], config: dict, prefix: str, source: str, device, dtype) -> Vae:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    module = _empty(lambda: AutoencoderKL(**config))
    ldm_of = vae_ldm_names(module.state_dict().keys(), config)
    _check_present(sd, [prefix + k for k in ldm_of.values()], source, "the VAE")
    # the converter finds "first_stage_model." itself; any other prefix is taken off here
    sub = sd if prefix in ("", VAE_PREFIX) else {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    converted = convert_ldm_vae_checkpoint(sub, config)
    _fill(module, converted, source, "the VAE", device, dtype)
    return Vae(module, {ldm: name for name, ldm in ldm_of.items()})


def _text_module(text: TextConfig) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if text.projection else CLIPTextModel
    return _empty(lambda: cls(CLIPTextConfig(**text.config)))


def _build_text_part(sd: Mapping[str, torch.Tensor], text: TextConfig, source: str, device, dtype) -> torch.nn.Module:
    """One transformers CLIP text model from the keys under ``text.prefix``."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

    module = _text_module(text)
    wrapped = hasattr(module, "text_model")  # transformers 5: CLIPTextModel is flat, ...WithProjection wraps
    names = list(module.state_dict().keys())
    what = f"the text encoder under {text.prefix!r}" if text.prefix else "the text encoder"
    if text.kind == "clip_l":  # transformers layout: <root>text_model.* (+ <root>text_projection.weight)
        root = text.prefix.removesuffix("text_model.")
        _check_present(sd, [(root + n) if wrapped else (text.prefix + n) for n in names], source, what)
        # the converter strips "cond_stage_model.transformer." and keeps "text_model.*" / "text_projection.weight"
        sub = {"cond_stage_model.transformer." + k[len(root) :]: v for k, v in sd.items() if k.startswith(root)}
        converted = convert_ldm_clip_checkpoint(sub)
    else:
        ldm = open_clip_ldm_names(names)
        _check_present(sd, list(dict.fromkeys(text.prefix + key for key, _ in ldm.values())), source, what)
        # under a neutral prefix: diffusers drops SD2's last layer for "cond_stage_model.model." (its SD2 pipeline
        # reads the penultimate layer); the clip-skip rules in text_encoders.py need every layer
        sub = {"te." + k[len(text.prefix) :]: v for k, v in sd.items() if k.startswith(text.prefix)}
        converted = convert_open_clip_checkpoint(module, sub, prefix="te.")
    if not wrapped:
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    return _fill(module, converted, source, what, device, dtype)


def _build_text(sd, texts: list[TextConfig], arch: str, source: str, device, dtype):
    from comfygate.comfy_runtime.diffusion.text_encoders import build_text_encoder

    modules = [_build_text_part(sd, t, source, device, dtype) for t in texts]
    try:
        return build_text_encoder(arch, modules)
    except ValueError as exc:
        raise ModelLoadError(f"{source}: text encoders do not match a {arch} model: {exc}") from exc


# -- public loaders --------------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | Path, device: torch.device | str, dtype: torch.dtype, *, vae_dtype: torch.dtype | None = None
) -> LoadedCheckpoint:
    """CheckpointLoaderSimple: UNet + text encoders + VAE of a single-file SD1 / SD2 / SDXL checkpoint.

    ``vae_dtype`` defaults to ``dtype`` (a half-precision VAE falls back to float32 when a decode overflows).
    """
    source = str(path)
    sd = _normalise_keys(read_state_dict(path))
    config = detect_model(sd, source)
    unet = _build_unet(sd, config, source, device, dtype)
    text = _build_text(sd, config.text, config.arch, source, device, dtype) if config.text else None
    vae = None
    if config.vae is not None:
        vae = _build_vae(sd, config.vae, config.vae_prefix or VAE_PREFIX, source, device, vae_dtype or dtype)
    log.info("loaded %s: %s (%s-prediction)", source, config.arch, config.prediction)
    return LoadedCheckpoint(unet=unet, text=text, vae=vae, config=config, path=source)


def load_diffusion_model(path: str | Path, device: torch.device | str, dtype: torch.dtype) -> DiffusionModel:
    """UNETLoader: a bare UNet file (LDM keys with or without ``model.diffusion_model.``, or diffusers keys)."""
    source = str(path)
    sd = read_state_dict(path)
    if is_diffusers_unet(sd):
        try:
            sd = diffusers_unet_to_ldm(sd)
        except ValueError as exc:
            raise ModelLoadError(f"{source}: diffusers UNet with unknown keys: {exc}") from exc
    config = detect_unet(sd, source, unet_prefix_of(sd))
    return _build_unet(sd, config, source, device, dtype)


def load_vae(path: str | Path, device: torch.device | str, dtype: torch.dtype) -> Vae:
    """VAELoader: a VAE file (LDM keys, bare or under ``first_stage_model.``, or diffusers keys)."""
    source = str(path)
    sd = read_state_dict(path)
    if is_diffusers_vae(sd):
        try:
            sd = diffusers_vae_to_ldm(sd)
        except ValueError as exc:
            raise ModelLoadError(f"{source}: diffusers VAE with unknown keys: {exc}") from exc
    prefix = VAE_PREFIX if any(k.startswith(VAE_PREFIX) for k in sd) else ""
    ddconfig = detect_vae(sd, prefix, source)
    return _build_vae(sd, configs.vae_diffusers_config(ddconfig, 0.18215), prefix, source, device, dtype)


# text towers by width: OpenAI CLIP-L 768, OpenCLIP ViT-H 1024 (SD2), OpenCLIP bigG 1280 (SDXL)
_TOWER_OF_WIDTH = {768: "clip_l", 1024: "clip_h", 1280: "clip_g"}
_STANDALONE_ARCH = {"clip_l": "sd1", "clip_h": "sd2", "clip_g": "sdxl_refiner"}


def load_text_encoder(path: str | Path, kind: str, device: torch.device | str, dtype: torch.dtype):
    """CLIPLoader with ``type="stable_diffusion"``: one CLIP-L, OpenCLIP-H or OpenCLIP-bigG text model.

    Keys in the transformers layout (``text_model.*``, as ComfyUI's text_encoders folder has them) or the open_clip
    layout (``transformer.resblocks.*``). The tower is told by its width (768 CLIP-L, 1024 ViT-H, 1280 bigG, like
    ComfyUI); other widths (test models) are, in the transformers layout, bigG when the file has
    ``text_projection.weight`` and CLIP-L otherwise, and ViT-H in the open_clip layout (whose SD2 files carry an
    unused projection too). The result encodes as that tower does in SD1 / SD2 / the SDXL refiner.
    """
    source = str(path)
    if kind != "stable_diffusion":
        raise ModelLoadError(
            f"{source}: CLIPLoader type {kind!r} is not supported here; only 'stable_diffusion' (SD1/SD2/SDXL)"
        )
    sd = _as_text_layout(read_state_dict(path))
    texts = detect_text_encoders(sd, source, projection=False)
    if len(texts) != 1:
        raise ModelLoadError(
            f"{source}: expected one CLIP text model (keys text_model.* or transformer.resblocks.*), found {len(texts)}"
        )
    text = texts[0]
    hidden = int(text.config["hidden_size"])
    if text.kind == "clip_l":
        proj_key = "cond_stage_model.transformer.text_projection.weight"
        tower = _TOWER_OF_WIDTH.get(hidden) or ("clip_g" if proj_key in sd else "clip_l")
        proj_dim = int(sd[proj_key].shape[0]) if proj_key in sd else None
        if tower != "clip_l":  # an OpenCLIP tower saved with transformers names
            text.config["hidden_act"] = "gelu"
    else:
        proj_key = text.prefix + "text_projection"
        tower = _TOWER_OF_WIDTH.get(hidden) or "clip_h"  # SD2's ViT-H files carry a projection too
        proj_dim = int(sd[proj_key].shape[1]) if proj_key in sd else None
    if tower == "clip_l" and text.kind != "clip_l":
        raise ModelLoadError(f"{source}: a 768-wide text model in the open_clip layout is not a known SD text encoder")
    if tower == "clip_g":
        if proj_dim is None:
            raise ModelLoadError(f"{source}: OpenCLIP bigG text model without its text projection")
        text.projection = True
        text.config["projection_dim"] = proj_dim
    module = _build_text_part(sd, text, source, device, dtype)
    from comfygate.comfy_runtime.diffusion.text_encoders import build_text_encoder

    return build_text_encoder(_STANDALONE_ARCH[tower], [module])


def _as_text_layout(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Put a standalone text model's keys under the SD checkpoint prefixes detect.py knows."""
    if any(k.startswith("text_model.") for k in sd):
        return {"cond_stage_model.transformer." + k: v for k, v in sd.items()}
    if "token_embedding.weight" in sd:
        return {"cond_stage_model.model." + k: v for k, v in sd.items()}
    return dict(sd)

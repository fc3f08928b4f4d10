"""The built-in diffusion nodes (ComfyUI's names, inputs and output types).

Loader nodes need the process's model library (files on disk, the warm pool). Instead of a global, the
registry calls :func:`diffusion_nodes` with its library and registers the returned classes like any pack's
NODE_CLASS_MAPPINGS; loader classes are subclassed with ``models`` bound, the rest are used as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .conditioning import CLIPSetLastLayer, CLIPTextEncode, ConditioningCombine, ConditioningSetArea
from .latent import EmptyLatentImage, LatentUpscale, LatentUpscaleBy, SetLatentNoiseMask
from .loaders import (
    CheckpointLoaderSimple,
    CLIPLoader,
    LoraLoader,
    LoraLoaderModelOnly,
    ModelNode,
    UNETLoader,
    UpscaleModelLoader,
    VAELoader,
)
from .sampling import KSampler, KSamplerAdvanced
from .upscale import ImageUpscaleWithModel
from .vae import VAEDecode, VAEEncode, VAEEncodeForInpaint

if TYPE_CHECKING:
    from comfygate.comfy_runtime.diffusion.library import ModelLibrary

__all__ = ["DISPLAY_NAMES", "diffusion_nodes"]

_NODES: tuple[type, ...] = (
    CheckpointLoaderSimple, VAELoader, LoraLoader, LoraLoaderModelOnly, UNETLoader, CLIPLoader,
    UpscaleModelLoader, CLIPSetLastLayer, CLIPTextEncode, ConditioningCombine, ConditioningSetArea,
    EmptyLatentImage, LatentUpscale, LatentUpscaleBy, SetLatentNoiseMask, KSampler, KSamplerAdvanced,
    VAEDecode, VAEEncode, VAEEncodeForInpaint, ImageUpscaleWithModel,
)

DISPLAY_NAMES = {
    "CheckpointLoaderSimple": "Load Checkpoint",
    "VAELoader": "Load VAE",
    "LoraLoader": "Load LoRA",
    "UNETLoader": "Load Diffusion Model",
    "CLIPLoader": "Load CLIP",
    "UpscaleModelLoader": "Load Upscale Model",
    "CLIPSetLastLayer": "CLIP Set Last Layer",
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "ConditioningCombine": "Conditioning (Combine)",
    "ConditioningSetArea": "Conditioning (Set Area)",
    "EmptyLatentImage": "Empty Latent Image",
    "LatentUpscale": "Upscale Latent",
    "LatentUpscaleBy": "Upscale Latent By",
    "SetLatentNoiseMask": "Set Latent Noise Mask",
    "KSampler": "KSampler",
    "KSamplerAdvanced": "KSampler (Advanced)",
    "VAEDecode": "VAE Decode",
    "VAEEncode": "VAE Encode",
    "VAEEncodeForInpaint": "VAE Encode (for Inpainting)",
    "ImageUpscaleWithModel": "Upscale Image (using Model)",
}


def diffusion_nodes(models: ModelLibrary) -> dict[str, type]:
    """class_type -> node class, with the loader classes bound to ``models``."""
    return {cls.__name__: (type(cls.__name__, (cls,), {"models": models, "__module__": cls.__module__})
                           if issubclass(cls, ModelNode) else cls)
            for cls in _NODES}

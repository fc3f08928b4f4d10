"""Loader nodes: checkpoints, VAEs, LoRAs, bare diffusion models, text encoders, upscale models.

Each COMBO lists the files present in its model folders now (model_paths.py); the classes get their
``models`` library when the registry binds the pack (see __init__.py), so nothing here is global.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from comfygate.comfy_runtime.diffusion.handles import ClipHandle, ModelHandle
    from comfygate.comfy_runtime.diffusion.library import ModelLibrary

STRENGTH = ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01})
# CLIPLoader types this runtime can build: ComfyUI's "stable_diffusion" covers SD1's CLIP-L and SD2's OpenCLIP-H.
CLIP_TYPES = ["stable_diffusion"]


class ModelNode:
    """A node that reads model files: ``models`` is set on the bound subclass."""

    models: ClassVar[ModelLibrary]

    @classmethod
    def files(cls, folder: str) -> list[str]:
        return cls.models.paths.list_files(folder)


class CheckpointLoaderSimple(ModelNode):
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"
    DESCRIPTION = "Loads a single-file SD1.x, SD2.x or SDXL checkpoint; it stays warm in the worker's model pool."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (cls.files("checkpoints"),
                                           {"tooltip": "The name of the checkpoint (model) to load."})}}

    def load_checkpoint(self, ckpt_name: str):
        return self.models.checkpoint(ckpt_name)


class VAELoader(ModelNode):
    CATEGORY = "loaders"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load_vae"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": (cls.files("vae"),)}}

    def load_vae(self, vae_name: str):
        return (self.models.vae(vae_name),)


class LoraLoader(ModelNode):
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "load_lora"
    DESCRIPTION = "Patches the model and the text encoders with a LoRA for the runs that use this node's outputs."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}),
            "clip": ("CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}),
            "lora_name": (cls.files("loras"), {"tooltip": "The name of the LoRA."}),
            "strength_model": (STRENGTH[0], {**STRENGTH[1], "tooltip": "How strongly to modify the diffusion model. "
                                             "This value can be negative."}),
            "strength_clip": (STRENGTH[0], {**STRENGTH[1], "tooltip": "How strongly to modify the CLIP model. "
                                            "This value can be negative."}),
        }}

    def load_lora(self, model: ModelHandle, clip: ClipHandle, lora_name: str, strength_model: float,
                  strength_clip: float):
        if strength_model == 0 and strength_clip == 0:
            return model, clip
        lora = self.models.lora(lora_name)
        # A checkpoint without text encoders gives CLIP None: the LoRA then patches the model only, as in ComfyUI.
        patched = (model.with_lora(lora, strength_model), clip.with_lora(lora, strength_clip) if clip else None)
        for handle in patched:
            if handle is not None:
                handle.check_loras()  # a LoRA for another architecture fails here, naming this node
        return patched


class LoraLoaderModelOnly(ModelNode):
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "lora_name": (cls.files("loras"),), "strength_model": STRENGTH}}

    def load_lora_model_only(self, model: ModelHandle, lora_name: str, strength_model: float):
        if strength_model == 0:
            return (model,)
        patched = model.with_lora(self.models.lora(lora_name), strength_model)
        patched.check_loras()
        return (patched,)


class UNETLoader(ModelNode):
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_unet"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": (cls.files("diffusion_models"),), "weight_dtype": (["default"],)}}

    def load_unet(self, unet_name: str, weight_dtype: str):
        return (self.models.diffusion_model(unet_name, weight_dtype),)


class CLIPLoader(ModelNode):
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": (cls.files("text_encoders"),), "type": (CLIP_TYPES,)},
                "optional": {"device": (["default", "cpu"], {"advanced": True})}}

    def load_clip(self, clip_name: str, type: str, device: str = "default"):  # noqa: A002 (ComfyUI's input name)
        return (self.models.text_encoder(clip_name, type, on_cpu=device == "cpu"),)


class UpscaleModelLoader(ModelNode):
    CATEGORY = "loaders"
    RETURN_TYPES = ("UPSCALE_MODEL",)
    FUNCTION = "load_model"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": (cls.files("upscale_models"),)}}

    def load_model(self, model_name: str):
        return (self.models.upscale_model(model_name),)

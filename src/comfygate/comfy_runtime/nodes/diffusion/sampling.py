"""Sampler nodes: KSampler and KSamplerAdvanced. The sampling itself lives in diffusion/sampling/."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from comfygate.comfy_runtime.progress import report_progress

if TYPE_CHECKING:
    from comfygate.comfy_runtime.diffusion.handles import ModelHandle

MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF


def _names() -> tuple[list[str], list[str]]:
    """The samplers implemented here (ComfyUI's others fail validation, naming the input) and every scheduler."""
    from comfygate.comfy_runtime.diffusion.sampling import SCHEDULER_NAMES, SUPPORTED_SAMPLERS

    return list(SUPPORTED_SAMPLERS), list(SCHEDULER_NAMES)


def _sample(model: ModelHandle, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
            positive: list, negative: list, latent_image: dict, **options: Any) -> tuple[dict]:
    from comfygate.comfy_runtime.diffusion.sampling import common_ksampler

    def step_done(step: int, total: int) -> None:
        report_progress(step, total)  # a progress event per step, and the run's cancel check

    with model.use() as diffusion_model:
        latent = common_ksampler(diffusion_model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                 latent_image, callback=step_done, **options)
    return (latent,)


class KSampler:
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    DESCRIPTION = "Denoises the latent image with the model, guided by the positive and negative conditioning."

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = _names()
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model used for denoising the input latent."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "The random seed used for creating the noise."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000,
                              "tooltip": "The number of steps used in the denoising process."}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale: how closely to follow the prompt."}),
            "sampler_name": (samplers, {"tooltip": "The algorithm used when sampling."}),
            "scheduler": (schedulers, {"tooltip": "How the noise level falls from step to step."}),
            "positive": ("CONDITIONING", {"tooltip": "What to include in the image."}),
            "negative": ("CONDITIONING", {"tooltip": "What to exclude from the image."}),
            "latent_image": ("LATENT", {"tooltip": "The latent image to denoise."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "Below 1 keeps the structure of the input latent (image to image)."}),
        }}

    def sample(self, model: ModelHandle, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
               positive: list, negative: list, latent_image: dict, denoise: float = 1.0):
        return _sample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                       denoise=denoise)


class KSamplerAdvanced:
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = _names()
        return {"required": {
            "model": ("MODEL",),
            "add_noise": (["enable", "disable"],),
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "sampler_name": (samplers,),
            "scheduler": (schedulers,),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent_image": ("LATENT",),
            "start_at_step": ("INT", {"default": 0, "min": 0, "max": 10000}),
            "end_at_step": ("INT", {"default": 10000, "min": 0, "max": 10000}),
            "return_with_leftover_noise": (["disable", "enable"],),
        }}

    def sample(self, model: ModelHandle, add_noise: str, noise_seed: int, steps: int, cfg: float,
               sampler_name: str, scheduler: str, positive: list, negative: list, latent_image: dict,
               start_at_step: int, end_at_step: int, return_with_leftover_noise: str):
        return _sample(model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                       disable_noise=add_noise == "disable", start_step=start_at_step, last_step=end_at_step,
                       force_full_denoise=return_with_leftover_noise != "enable")

"""Sampling for the diffusion nodes: noise schedules, k-diffusion samplers, CFG guidance and KSampler semantics.

Pure torch, written against ComfyUI 0.3.64's behaviour so a workflow's seed, sampler and scheduler give the
same sigma sequence and (for the same model and device) the same result as in ComfyUI.
"""

from .denoiser import CFGDenoiser, PreparedCond, prepare_conditioning
from .ksampler import common_ksampler, ksampler_sigmas, model_sampling_for, prepare_mask, prepare_noise
from .samplers import (
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS,
    SAMPLER_NAMES,
    SUPPORTED_SAMPLERS,
    default_noise_sampler,
    get_sampler,
    sample,
)
from .schedules import SCHEDULER_NAMES, ModelSampling, calculate_sigmas

__all__ = [
    "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
    "SAMPLER_NAMES",
    "SCHEDULER_NAMES",
    "SUPPORTED_SAMPLERS",
    "CFGDenoiser",
    "ModelSampling",
    "PreparedCond",
    "calculate_sigmas",
    "common_ksampler",
    "default_noise_sampler",
    "get_sampler",
    "ksampler_sigmas",
    "model_sampling_for",
    "prepare_conditioning",
    "prepare_mask",
    "prepare_noise",
    "sample",
]

"""KSampler / KSamplerAdvanced semantics (ComfyUI's ``common_ksampler`` -> ``comfy.sample`` -> ``KSampler``).

Flow of one call:
  noise = prepare_noise(latent, seed)                       (CPU generator, so a seed is device independent)
  sigmas = scheduler sigmas, cut for denoise < 1 / start / end steps
  x = latent * latent_scale + noise * sigma_0               (sqrt(1 + sigma_0^2) for a full denoise)
  x0 = sampler(guided denoiser with inpainting blend, x, sigmas)
  samples = x0 / latent_scale
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .denoiser import CFGDenoiser, repeat_to_batch
from .samplers import (
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS,
    RANDOM_INPAINT_NOISE_SAMPLERS,
    ModelFn,
    default_noise_sampler,
    get_sampler,
)
from .schedules import ModelSampling, calculate_sigmas, scaled_linear_alphas_cumprod

__all__ = ["common_ksampler", "ksampler_sigmas", "model_sampling_for", "prepare_mask", "prepare_noise"]

ProgressCallback = Callable[[int, int], None]  # (steps done, total steps)
_MASK64 = 0xFFFF_FFFF_FFFF_FFFF


def _generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return torch.Generator(device="cpu").manual_seed(seed & _MASK64)


def prepare_noise(latent: torch.Tensor, seed: int, batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """Initial noise like ComfyUI: one CPU generator seeded with ``seed``, randn of the latent's shape.

    With ``batch_index`` (from a latent batch split), noise is drawn for items 0..max(index) one at a time and
    item i gets the draw for ``batch_index[i]``, so a sub-batch reproduces the matching images of the full batch.
    """
    generator = _generator(seed)
    if batch_index is None:
        return torch.randn(latent.shape, dtype=latent.dtype, layout=latent.layout, generator=generator, device="cpu")
    indices = [int(i) for i in batch_index]
    if not indices or min(indices) < 0:
        raise ValueError(f"batch_index must be a non-empty list of non-negative integers, got {batch_index!r}")
    wanted = set(indices)
    draws: dict[int, torch.Tensor] = {}
    for i in range(max(indices) + 1):
        noise = torch.randn(
            [1, *latent.shape[1:]], dtype=latent.dtype, layout=latent.layout, generator=generator, device="cpu"
        )
        if i in wanted:
            draws[i] = noise
    return torch.cat([draws[i] for i in indices], dim=0)


def prepare_mask(noise_mask: torch.Tensor, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """A LATENT noise mask ([B,H,W], [B,1,H,W] or [H,W], any size) as a 0/1 [B, C, h, w] latent mask."""
    if not isinstance(noise_mask, torch.Tensor) or noise_mask.ndim < 2:
        got = tuple(noise_mask.shape) if isinstance(noise_mask, torch.Tensor) else type(noise_mask).__name__
        raise ValueError(f"latent noise_mask must be a [B, H, W] tensor, got {got}")
    mask = noise_mask.float().reshape(-1, 1, noise_mask.shape[-2], noise_mask.shape[-1])
    mask = F.interpolate(mask, size=(int(shape[2]), int(shape[3])), mode="bilinear").round()
    mask = torch.cat([mask] * int(shape[1]), dim=1)
    return repeat_to_batch(mask, int(shape[0])).to(device)


def model_sampling_for(model: Any) -> ModelSampling:
    """The noise schedule of ``model``; the standard SD schedule is rebuilt in float64 to match ComfyUI exactly."""
    prediction = getattr(model, "prediction", "eps")
    acp = getattr(model, "alphas_cumprod", None)
    if acp is not None:
        default = scaled_linear_alphas_cumprod()
        acp = torch.as_tensor(acp).detach().cpu().double().flatten()
        if acp.shape == default.shape and torch.allclose(acp, default, rtol=1e-5, atol=0):
            acp = None
    return ModelSampling(prediction, acp)


def ksampler_sigmas(
    model_sampling: ModelSampling, sampler_name: str, scheduler: str, steps: int, denoise: float | None = 1.0
) -> torch.Tensor:
    """KSampler's sigma sequence: denoise < 1 runs the last ``steps`` of a ``steps / denoise`` schedule."""

    def compute(n: int) -> torch.Tensor:
        if sampler_name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
            sigmas = calculate_sigmas(model_sampling, scheduler, n + 1)
            return torch.cat([sigmas[:-2], sigmas[-1:]])
        return calculate_sigmas(model_sampling, scheduler, n)

    if denoise is None or denoise > 0.9999:
        return compute(steps)
    if denoise <= 0.0:
        return torch.zeros(0)
    return compute(int(steps / denoise))[-(steps + 1) :]


class _InpaintModelFn:
    """Keeps the unmasked region on the input latent (ComfyUI's KSamplerX0Inpaint).

    Before each model call the known region of ``x`` is replaced by the input latent noised to the current
    sigma; the returned x0 there is the input latent itself, so samplers converge to it outside the mask.
    """

    def __init__(self, inner: ModelFn, latent: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor | None):
        self.inner, self.latent, self.noise, self.mask = inner, latent, noise, mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            return self.inner(x, sigma)
        keep = 1.0 - self.mask
        s = sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))
        x = x * self.mask + (self.latent + self.noise * s) * keep
        return self.inner(x, sigma) * self.mask + self.latent * keep


def _check_latent(model: Any, latent: Any) -> torch.Tensor:
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise ValueError("latent_image must be a LATENT dict with a 'samples' tensor")
    samples = latent["samples"]
    if samples.ndim != 4:
        raise ValueError(f"latent 'samples' must be [batch, channels, height, width], got {tuple(samples.shape)}")
    channels = int(getattr(model, "latent_channels", samples.shape[1]))
    if samples.shape[1] != channels:
        if torch.count_nonzero(samples) == 0:  # an empty latent made for another model family: just resize it
            return torch.zeros((samples.shape[0], channels, *samples.shape[2:]), dtype=samples.dtype)
        raise ValueError(f"latent has {samples.shape[1]} channels but the model expects {channels}")
    return samples


@torch.no_grad()
def common_ksampler(
    model: Any,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Any,
    negative: Any,
    latent: dict,
    denoise: float = 1.0,
    disable_noise: bool = False,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
    callback: ProgressCallback | None = None,
) -> dict:
    """Run KSampler (``denoise``) or KSamplerAdvanced (``disable_noise``/``start_step``/``last_step``/
    ``force_full_denoise``) on a LATENT dict; returns a copy of it with new raw (unscaled) ``samples``.

    ``callback(done, total)`` is called after every sampler step; raising from it aborts the run.
    """
    sampler = get_sampler(sampler_name)  # refuse unknown names before doing any work
    _generator(seed)  # validates the seed
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    latent_image = _check_latent(model, latent)
    device = torch.device(getattr(model, "device", "cpu"))
    model_sampling = model_sampling_for(model)
    sigmas = ksampler_sigmas(model_sampling, sampler_name, scheduler, steps, denoise)

    if disable_noise:
        noise = torch.zeros(latent_image.shape, dtype=latent_image.dtype, device="cpu")
    else:
        noise = prepare_noise(latent_image, seed, latent.get("batch_index"))

    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    out = dict(latent)
    if start_step is not None:
        if start_step < len(sigmas) - 1:
            sigmas = sigmas[start_step:]
        else:
            out["samples"] = latent_image.clone()
            return out
    if len(sigmas) == 0:
        out["samples"] = latent_image.clone()
        return out

    scale = float(getattr(model, "latent_scale", 1.0))
    latent_in = latent_image.to(device, torch.float32) * scale
    noise = noise.to(device, torch.float32)
    sigmas = sigmas.to(device)
    mask = latent.get("noise_mask")
    mask = None if mask is None else prepare_mask(mask, latent_in.shape, device)

    inpaint_noise = noise
    if mask is not None and sampler_name in RANDOM_INPAINT_NOISE_SAMPLERS:
        inpaint_noise = torch.randn(noise.shape, generator=_generator(seed + 1), device="cpu").to(device)
    denoiser = CFGDenoiser(model, model_sampling, positive, negative, cfg, latent_in.shape, device)
    model_fn = _InpaintModelFn(denoiser, latent_in, inpaint_noise, mask)

    sigma_max = model_sampling.sigma_max
    first = float(sigmas[0])
    max_denoise = math.isclose(sigma_max, first, rel_tol=1e-5) or first > sigma_max
    x = model_sampling.noise_scaling(sigmas[0], noise, latent_in, max_denoise)

    total = len(sigmas) - 1

    def on_step(i: int, x_i: torch.Tensor, denoised: torch.Tensor) -> None:
        if callback is not None:
            callback(i + 1, total)

    samples = sampler(model_fn, x, sigmas, default_noise_sampler(x, seed), on_step)
    samples = model_sampling.inverse_noise_scaling(sigmas[-1], samples)
    out["samples"] = (samples.float() / scale).cpu()
    return out

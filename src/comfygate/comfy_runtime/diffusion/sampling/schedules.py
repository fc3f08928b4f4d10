"""Noise levels: the discrete SD noise schedule and ComfyUI's sigma schedulers.

Everything here works in k-diffusion's "sigma" parameterisation, as ComfyUI does: a noisy latent is
``x = x0 + sigma * noise``; the network sees ``x / sqrt(sigma**2 + 1)`` and a timestep in 0..999.
The scheduler values reproduce ComfyUI 0.3.64 (``comfy/samplers.py``) so a workflow gives the same
sigma sequence, and therefore the same image for a seed, as it does in ComfyUI.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "SCHEDULER_NAMES",
    "ModelSampling",
    "beta_ppf",
    "calculate_sigmas",
    "scaled_linear_alphas_cumprod",
]

# ComfyUI's KSampler "scheduler" COMBO, in its order.
SCHEDULER_NAMES: tuple[str, ...] = (
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
)


def scaled_linear_alphas_cumprod(
    linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000
) -> torch.Tensor:
    """alphas_cumprod [timesteps] float64 of SD's "scaled linear" betas (ComfyUI calls the schedule "linear")."""
    betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


class ModelSampling:
    """The discrete noise schedule of an eps- or v-prediction model (ComfyUI's ModelSamplingDiscrete + EPS/V).

    ``sigmas`` [1000] float32 ascending (index = timestep); ``sigma_min``/``sigma_max`` are its ends.
    """

    def __init__(self, prediction: str = "eps", alphas_cumprod: torch.Tensor | None = None) -> None:
        if prediction not in ("eps", "v"):
            raise ValueError(f"unknown prediction type {prediction!r}: expected 'eps' or 'v'")
        self.prediction = prediction
        if alphas_cumprod is None:
            alphas_cumprod = scaled_linear_alphas_cumprod()
        acp = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).flatten()
        if acp.numel() < 2 or not bool(((acp > 0) & (acp < 1)).all()):
            raise ValueError("alphas_cumprod must hold at least 2 values strictly between 0 and 1")
        sigmas = ((1 - acp) / acp) ** 0.5  # computed in float64, stored in float32 like ComfyUI
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()

    @classmethod
    def for_model(cls, model: object) -> ModelSampling:
        """The schedule of a DiffusionModel-like object (its ``prediction`` and ``alphas_cumprod``)."""
        return cls(getattr(model, "prediction", "eps"), getattr(model, "alphas_cumprod", None))

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The discrete timestep (as float) whose sigma is nearest in log space; same shape as ``sigma``."""
        sigma = torch.as_tensor(sigma)
        dists = sigma.log().float().cpu().reshape(1, -1) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(device=sigma.device, dtype=torch.float32)

    def sigma(self, timestep: torch.Tensor | float) -> torch.Tensor:
        """Sigma at a (fractional) timestep, interpolating log-sigma linearly between integer steps."""
        ts = torch.as_tensor(timestep)
        t = torch.clamp(ts.float().cpu(), min=0, max=len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(ts.device)

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at a fraction of the sampling run (0 = start, 1 = end), for timestep-ranged conditioning."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * 999.0)))

    # --- prediction-type maths (sigma_data = 1) -------------------------------------------------------------

    @staticmethod
    def _view(sigma: torch.Tensor, ndim: int) -> torch.Tensor:
        sigma = torch.as_tensor(sigma)
        return sigma.reshape(sigma.shape[:1] + (1,) * (ndim - 1)) if sigma.ndim else sigma

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The network input for noisy ``x`` at ``sigma`` [B]: x / sqrt(sigma^2 + 1)."""
        sigma = self._view(sigma, x.ndim)
        return x / (sigma**2 + 1.0) ** 0.5

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x0 estimate from the raw network output (eps or v) for noisy ``x`` at ``sigma`` [B]."""
        sigma = self._view(sigma, model_output.ndim)
        if self.prediction == "v":
            return x / (sigma**2 + 1.0) - model_output * sigma / (sigma**2 + 1.0) ** 0.5
        return x - model_output * sigma

    def noise_scaling(
        self, sigma: torch.Tensor | float, noise: torch.Tensor, latent: torch.Tensor, max_denoise: bool = False
    ) -> torch.Tensor:
        """The starting point ``latent + noise * sigma``; a full denoise scales by sqrt(1 + sigma^2) as ComfyUI."""
        sigma = self._view(torch.as_tensor(sigma, device=noise.device, dtype=noise.dtype), noise.ndim)
        scale = torch.sqrt(1.0 + sigma**2) if max_denoise else sigma
        return noise * scale + latent

    def inverse_noise_scaling(self, sigma: torch.Tensor | float, latent: torch.Tensor) -> torch.Tensor:
        """Identity for eps/v models (kept for symmetry with ComfyUI's flow models)."""
        return latent


# --- schedulers ---------------------------------------------------------------------------------------------


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _simple(ms: ModelSampling, steps: int) -> torch.Tensor:
    stride = len(ms.sigmas) / steps
    sigs = [float(ms.sigmas[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.tensor([*sigs, 0.0], dtype=torch.float32)


def _ddim_uniform(ms: ModelSampling, steps: int) -> torch.Tensor:
    # Every (N // steps)-th training sigma from index 1; like ComfyUI this can give more than steps + 1 values.
    sigs = [0.0]
    stride = max(len(ms.sigmas) // steps, 1)
    sigs += [float(ms.sigmas[i]) for i in range(1, len(ms.sigmas), stride)]
    return torch.tensor(sigs[::-1], dtype=torch.float32)


def _normal(ms: ModelSampling, steps: int, sgm: bool = False) -> torch.Tensor:
    start = ms.timestep(torch.tensor(ms.sigma_max))
    end = ms.timestep(torch.tensor(ms.sigma_min))
    timesteps = (
        torch.linspace(float(start), float(end), steps + 1)[:-1]
        if sgm
        else torch.linspace(float(start), float(end), steps)
    )
    sigs = [float(ms.sigma(t)) for t in timesteps]
    return torch.tensor([*sigs, 0.0], dtype=torch.float32)


def _karras(ms: ModelSampling, steps: int, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho, max_inv_rho = ms.sigma_min ** (1 / rho), ms.sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def _exponential(ms: ModelSampling, steps: int) -> torch.Tensor:
    return _append_zero(torch.linspace(math.log(ms.sigma_max), math.log(ms.sigma_min), steps).exp())


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast only below this point: use symmetry
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    frac = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            frac *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return math.exp(log_front) * frac / a


def beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse CDF of the Beta(a, b) distribution (what ComfyUI takes from scipy.stats.beta.ppf)."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(200):  # bisection: the CDF is monotone, so this cannot diverge
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _beta(ms: ModelSampling, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    total = len(ms.sigmas) - 1
    sigs: list[float] = []
    last = None
    for i in range(steps):
        q = 1.0 - i / steps
        # round away float noise first so exact halves (e.g. 499.5) round half-to-even like numpy.rint
        t = int(round(round(beta_ppf(q, alpha, beta) * total, 9)))
        if t != last:
            sigs.append(float(ms.sigmas[t]))
        last = t
    return torch.tensor([*sigs, 0.0], dtype=torch.float32)


def _linear_quadratic(ms: ModelSampling, steps: int, threshold_noise: float = 0.025) -> torch.Tensor:
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        linear_steps = steps // 2
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quad_coef = step_diff / (linear_steps * quadratic_steps**2)
        lin_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
        const = quad_coef * linear_steps**2
        quadratic = [quad_coef * i**2 + lin_coef * i + const for i in range(linear_steps, steps)]
        schedule = [1.0 - s for s in [*linear, *quadratic, 1.0]]
    return torch.tensor(schedule, dtype=torch.float32) * ms.sigma_max


def _kl_optimal(ms: ModelSampling, steps: int) -> torch.Tensor:
    if steps == 1:  # ComfyUI divides by steps - 1 here (NaN); one step is simply sigma_max -> 0
        return torch.tensor([ms.sigma_max, 0.0], dtype=torch.float32)
    frac = torch.arange(steps, dtype=torch.float32) / (steps - 1)
    sigmas = torch.zeros(steps + 1)
    sigmas[:-1] = (frac * math.atan(ms.sigma_min) + (1 - frac) * math.atan(ms.sigma_max)).tan()
    return sigmas


_SCHEDULERS: dict[str, Callable[[ModelSampling, int], torch.Tensor]] = {
    "simple": _simple,
    "sgm_uniform": lambda ms, steps: _normal(ms, steps, sgm=True),
    "karras": _karras,
    "exponential": _exponential,
    "ddim_uniform": _ddim_uniform,
    "beta": _beta,
    "normal": _normal,
    "linear_quadratic": _linear_quadratic,
    "kl_optimal": _kl_optimal,
}


def calculate_sigmas(model_sampling: ModelSampling, scheduler_name: str, steps: int) -> torch.Tensor:
    """The descending sigma sequence (float32, CPU, last value 0) of a scheduler for ``steps`` steps.

    Usually ``steps + 1`` values; "ddim_uniform" may give more and "beta" fewer, exactly as ComfyUI does.
    """
    handler = _SCHEDULERS.get(scheduler_name)
    if handler is None:
        raise ValueError(f"unknown scheduler {scheduler_name!r}; supported: {', '.join(SCHEDULER_NAMES)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return handler(model_sampling, steps).float()

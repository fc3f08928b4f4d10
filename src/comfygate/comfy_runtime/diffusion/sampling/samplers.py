"""k-diffusion style samplers under ComfyUI's names.

Every sampler has the signature ``fn(model_fn, x, sigmas, noise_sampler, callback) -> x0`` where
``model_fn(x [B,...], sigma [B]) -> denoised [B,...]`` is the guided x0 prediction, ``x`` is the starting
point already scaled to ``sigmas[0]``, and ``sigmas`` is a descending 1-D tensor usually ending in 0.
The update rules follow k-diffusion / ComfyUI 0.3.64 (``comfy/k_diffusion/sampling.py``) so results match
for eps/v models.

Noise: ancestral and SDE samplers draw unit Gaussian noise from ``noise_sampler(sigma, sigma_next)``.
:func:`default_noise_sampler` seeds a ``torch.Generator`` like ComfyUI's default (seed + 1 on CPU), so a seed
always gives the same image on the same device. ComfyUI's dpmpp_sde / dpmpp_2m_sde / dpmpp_3m_sde use a
torchsde Brownian tree instead; here they use the same seeded per-step Gaussian noise (same distribution,
different draws), and the ``*_gpu`` names are aliases of the plain ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .unipc import sample_uni_pc, sample_uni_pc_bh2

__all__ = [
    "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
    "RANDOM_INPAINT_NOISE_SAMPLERS",
    "SAMPLER_NAMES",
    "SUPPORTED_SAMPLERS",
    "ModelFn",
    "NoiseSampler",
    "StepCallback",
    "default_noise_sampler",
    "get_ancestral_step",
    "get_sampler",
    "sample",
]

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B,...], sigma [B]) -> denoised [B,...]
NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (sigma, sigma_next) -> N(0, 1) like x
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]  # (step index, x, denoised)
SamplerFn = Callable[[ModelFn, torch.Tensor, torch.Tensor, NoiseSampler, "StepCallback | None"], torch.Tensor]

# ComfyUI's KSampler "sampler_name" COMBO, in its order (0.3.64).
SAMPLER_NAMES: tuple[str, ...] = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)  # fmt: skip

# ComfyUI computes one extra step for these and drops the second-to-last sigma.
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})
# ComfyUI's "ddim" is Euler whose inpainting noise comes from its own generator (seed + 1).
RANDOM_INPAINT_NOISE_SAMPLERS = frozenset({"ddim"})

_MASK64 = 0xFFFF_FFFF_FFFF_FFFF


def default_noise_sampler(x: torch.Tensor, seed: int | None = None) -> NoiseSampler:
    """Unit Gaussian noise shaped like ``x`` from a generator seeded as ComfyUI does (seed + 1 on CPU)."""
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed((seed + 1 if x.device.type == "cpu" else seed) & _MASK64)

    def noise(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)

    return noise


def get_ancestral_step(
    sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_down, sigma_up): deterministic step target and the noise to add to land on ``sigma_to``."""
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma."""
    return (x - denoised) / sigma


def _report(callback: StepCallback | None, i: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback(i, x, denoised)


# --- first/second order ODE samplers ------------------------------------------------------------------------


def sample_euler(model_fn, x, sigmas, noise_sampler, callback=None):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        _report(callback, i, x, denoised)
        x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def sample_heun(model_fn, x, sigmas, noise_sampler, callback=None):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        _report(callback, i, x, denoised)
        d = _to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, sigmas[i + 1], model_fn(x_2, sigmas[i + 1] * s_in))
            x = x + (d + d_2) / 2 * dt
    return x


def sample_heunpp2(model_fn, x, sigmas, noise_sampler, callback=None):
    s_in = x.new_ones([x.shape[0]])
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        _report(callback, i, x, denoised)
        d = _to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == s_end:
            x = x + d * dt
        elif sigmas[i + 2] == s_end:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, sigmas[i + 1], model_fn(x_2, sigmas[i + 1] * s_in))
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, sigmas[i + 1], model_fn(x_2, sigmas[i + 1] * s_in))
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = _to_d(x_3, sigmas[i + 2], model_fn(x_3, sigmas[i + 2] * s_in))
            w2, w3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
            x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


def sample_dpm_2(model_fn, x, sigmas, noise_sampler, callback=None):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        _report(callback, i, x, denoised)
        d = _to_d(x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = _to_d(x_2, sigma_mid, model_fn(x_2, sigma_mid * s_in))
            x = x + d_2 * (sigmas[i + 1] - sigmas[i])
    return x


def sample_lms(model_fn, x, sigmas, noise_sampler, callback=None, order: int = 4):
    s_in = x.new_ones([x.shape[0]])
    t = [float(s) for s in sigmas]
    ds: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        ds = [*ds, _to_d(x, sigmas[i], denoised)][-order:]
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            cur_order = min(i + 1, order)
            coeffs = [_lms_coeff(cur_order, t, i, j) for j in range(cur_order)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=False))
    return x


def _lms_coeff(order: int, t: list[float], i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial of node t_{i-j} (nodes t_i .. t_{i-order+1})."""
    poly = [1.0]  # ascending coefficients
    for k in range(order):
        if k == j:
            continue
        denom = t[i - j] - t[i - k]
        shifted = [0.0, *poly]  # poly * tau
        scaled = [c * t[i - k] for c in poly] + [0.0]
        poly = [(a - b) / denom for a, b in zip(shifted, scaled, strict=True)]

    def antiderivative(tau: float) -> float:
        return sum(c * tau ** (n + 1) / (n + 1) for n, c in enumerate(poly))

    return antiderivative(t[i + 1]) - antiderivative(t[i])


def sample_dpmpp_2m(model_fn, x, sigmas, noise_sampler, callback=None):
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
            h = t_next - t
            denoised_d = denoised
            if old_denoised is not None:
                r = (t + sigmas[i - 1].log()) / h  # h_last / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def sample_ipndm(model_fn, x, sigmas, noise_sampler, callback=None, max_order: int = 4):
    s_in = x.new_ones([x.shape[0]])
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model_fn(x, t_cur * s_in)
        _report(callback, i, x, denoised)
        d_cur = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + (t_next - t_cur) * d_cur
        elif order == 2:
            x_next = x + (t_next - t_cur) * (3 * d_cur - history[-1]) / 2
        elif order == 3:
            x_next = x + (t_next - t_cur) * (23 * d_cur - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            x_next = x + (t_next - t_cur) * (55 * d_cur - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        history = [*history, d_cur][-(max_order - 1) :]
        x = x_next
    return x


def sample_ipndm_v(model_fn, x, sigmas, noise_sampler, callback=None, max_order: int = 4):
    """iPNDM with variable step sizes (coefficients from the step-size ratios)."""
    s_in = x.new_ones([x.shape[0]])
    ts = sigmas
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model_fn(x, t_cur * s_in)
        _report(callback, i, x, denoised)
        d_cur = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        h = t_next - t_cur
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + h * d_cur
        elif order == 2:
            h1 = t_cur - ts[i - 1]
            x_next = x + h * ((2 + h / h1) / 2 * d_cur - (h / h1) / 2 * history[-1])
        elif order == 3:
            h1, h2 = t_cur - ts[i - 1], ts[i - 1] - ts[i - 2]
            temp = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
            c1 = (2 + h / h1) / 2 + temp
            c2 = -(h / h1) / 2 - (1 + h1 / h2) * temp
            c3 = temp * h1 / h2
            x_next = x + h * (c1 * d_cur + c2 * history[-1] + c3 * history[-2])
        else:
            h1, h2, h3 = t_cur - ts[i - 1], ts[i - 1] - ts[i - 2], ts[i - 2] - ts[i - 3]
            temp1 = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
            temp2 = (
                ((1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2)))
                * (h * (h + h1) * (h + h1 + h2))
                / (h1 * (h1 + h2) * (h1 + h2 + h3))
            )
            ratio = h1 * (h1 + h2) / (h2 * (h2 + h3))
            c1 = (2 + h / h1) / 2 + temp1 + temp2
            c2 = -(h / h1) / 2 - (1 + h1 / h2) * temp1 - (1 + h1 / h2 + ratio) * temp2
            c3 = temp1 * h1 / h2 + (h1 / h2 + ratio * (1 + h2 / h3)) * temp2
            c4 = -temp2 * ratio * h1 / h2
            x_next = x + h * (c1 * d_cur + c2 * history[-1] + c3 * history[-2] + c4 * history[-3])
        history = [*history, d_cur][-(max_order - 1) :]
        x = x_next
    return x


# --- ancestral / stochastic samplers ------------------------------------------------------------------------


def sample_euler_ancestral(model_fn, x, sigmas, noise_sampler, callback=None, eta: float = 1.0):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, i, x, denoised)
        if sigma_down == 0:
            x = denoised
        else:
            x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def sample_dpm_2_ancestral(model_fn, x, sigmas, noise_sampler, callback=None, eta: float = 1.0):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, i, x, denoised)
        d = _to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = _to_d(x_2, sigma_mid, model_fn(x_2, sigma_mid * s_in))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def sample_dpmpp_2s_ancestral(model_fn, x, sigmas, noise_sampler, callback=None, eta: float = 1.0):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, i, x, denoised)
        if sigma_down == 0:
            x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = -sigmas[i].log(), -sigma_down.log()
            h = t_next - t
            sigma_s = (-(t + h / 2)).exp()
            x_2 = (sigma_s / sigmas[i]) * x - (-h / 2).expm1() * denoised
            denoised_2 = model_fn(x_2, sigma_s * s_in)
            x = (sigma_down / sigmas[i]) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def sample_dpmpp_sde(model_fn, x, sigmas, noise_sampler, callback=None, eta: float = 1.0, r: float = 0.5):
    """DPM-Solver++ (stochastic), two model calls per step; alpha = 1 for eps/v models."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = -sigmas[i].log(), -sigmas[i + 1].log()
        h = lambda_t - lambda_s
        sigma_s_1 = (-(lambda_s + r * h)).exp()
        fac = 1 / (2 * r)
        # step 1: to the intermediate noise level
        sd, su = get_ancestral_step(sigmas[i], sigma_s_1, eta)
        h_ = -sd.log() - lambda_s
        x_2 = (-h_).exp() * x - (-h_).expm1() * denoised
        if eta > 0:
            x_2 = x_2 + noise_sampler(sigmas[i], sigma_s_1) * su
        denoised_2 = model_fn(x_2, sigma_s_1 * s_in)
        # step 2: to the next noise level with the combined estimate
        sd, su = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        h_ = -sd.log() - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (-h_).exp() * x - (-h_).expm1() * denoised_d
        if eta > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * su
    return x


def _dpmpp_2m_sde(model_fn, x, sigmas, noise_sampler, callback=None, eta: float = 1.0, solver: str = "midpoint"):
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()  # lambda_t - lambda_s with lambda = -log sigma
            h_eta = h * (eta + 1)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver == "heun":
                    x = x + ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt()
        old_denoised, h_last = denoised, h
    return x


def sample_dpmpp_2m_sde(model_fn, x, sigmas, noise_sampler, callback=None):
    return _dpmpp_2m_sde(model_fn, x, sigmas, noise_sampler, callback, solver="midpoint")


def sample_dpmpp_2m_sde_heun(model_fn, x, sigmas, noise_sampler, callback=None):
    return _dpmpp_2m_sde(model_fn, x, sigmas, noise_sampler, callback, solver="heun")


def sample_dpmpp_3m_sde(model_fn, x, sigmas, noise_sampler, callback=None, eta: float = 1.0):
    s_in = x.new_ones([x.shape[0]])
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            h_eta = h * (eta + 1)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + (-h_eta).expm1().neg() * denoised
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            if eta > 0:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt()
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def sample_ddpm(model_fn, x, sigmas, noise_sampler, callback=None):
    """Ancestral DDPM posterior steps, done in the variance-preserving space."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        denoised = model_fn(x, sigma * s_in)
        _report(callback, i, x, denoised)
        eps = (x - denoised) / sigma
        x_vp = x / torch.sqrt(1.0 + sigma**2)
        acp, acp_prev = 1 / (sigma**2 + 1), 1 / (sigma_prev**2 + 1)
        alpha = acp / acp_prev
        mu = (1.0 / alpha).sqrt() * (x_vp - (1 - alpha) * eps / (1 - acp).sqrt())
        if sigma_prev > 0:
            mu = mu + ((1 - alpha) * (1.0 - acp_prev) / (1.0 - acp)).sqrt() * noise_sampler(sigma, sigma_prev)
            mu = mu * torch.sqrt(1.0 + sigma_prev**2)
        x = mu
    return x


def sample_lcm(model_fn, x, sigmas, noise_sampler, callback=None):
    """Latent-consistency sampling: jump to x0, then re-noise to the next level."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model_fn(x, sigmas[i] * s_in)
        _report(callback, i, x, denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
    return x


_SAMPLERS: dict[str, SamplerFn] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "heunpp2": sample_heunpp2,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_sde_gpu": sample_dpmpp_sde,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_heun": sample_dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": sample_dpmpp_2m_sde_heun,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": sample_dpmpp_3m_sde,
    "ddpm": sample_ddpm,
    "lcm": sample_lcm,
    "ipndm": sample_ipndm,
    "ipndm_v": sample_ipndm_v,
    "ddim": sample_euler,
    "uni_pc": sample_uni_pc,
    "uni_pc_bh2": sample_uni_pc_bh2,
}

SUPPORTED_SAMPLERS: tuple[str, ...] = tuple(name for name in SAMPLER_NAMES if name in _SAMPLERS)


def get_sampler(name: str) -> SamplerFn:
    """The sampler function for a ComfyUI sampler name; ValueError naming it when it is not implemented."""
    fn = _SAMPLERS.get(name)
    if fn is None:
        known = "is not implemented by this runtime" if name in SAMPLER_NAMES else "is not a ComfyUI sampler"
        raise ValueError(f"sampler_name {name!r} {known}; supported samplers: {', '.join(SUPPORTED_SAMPLERS)}")
    return fn


@torch.no_grad()
def sample(
    name: str,
    model_fn: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    seed: int | None = None,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run sampler ``name`` from ``x`` (already at noise level ``sigmas[0]``) down the ``sigmas`` sequence."""
    fn = get_sampler(name)
    if len(sigmas) <= 1:
        return x
    if noise_sampler is None:
        noise_sampler = default_noise_sampler(x, seed)
    return fn(model_fn, x, sigmas.to(x.device), noise_sampler, callback)

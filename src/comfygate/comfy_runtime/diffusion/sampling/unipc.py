"""UniPC multistep predictor-corrector (Zhao et al. 2023), data-prediction form, B(h) variants bh1 / bh2.

Works as ComfyUI's ``uni_pc`` does: the k-diffusion latent is moved to the variance-preserving space
(``x_vp = x / sqrt(1 + sigma^2)``), with ``alpha = 1 / sqrt(1 + sigma^2)``, ``std = sigma * alpha`` and
half-log-SNR ``lambda = -log(sigma)``; a final sigma of 0 is replaced by 0.001; order up to 3 with lower
orders for warm-up and for the last steps, and no corrector on the last step.
"""

from __future__ import annotations

import math

import torch

__all__ = ["sample_uni_pc", "sample_uni_pc_bh2"]


def _uni_pc_update(model_fn, x, model_prev, sigma_prev, sigma_t, order, use_corrector, variant, s_in):
    """One UniPC step from ``sigma_prev[-1]`` to ``sigma_t``; returns (x_vp at sigma_t, x0 estimate there or None)."""
    lambda_0 = -math.log(sigma_prev[-1])
    h = -math.log(sigma_t) - lambda_0
    m0 = model_prev[-1]
    rks: list[float] = []
    d1s: list[torch.Tensor] = []
    for i in range(1, order):
        rk = (-math.log(sigma_prev[-(i + 1)]) - lambda_0) / h
        rks.append(rk)
        d1s.append((model_prev[-(i + 1)] - m0) / rk)
    rks.append(1.0)

    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    rows, b = [], []
    factorial = 1
    for i in range(1, order + 1):
        rows.append([rk ** (i - 1) for rk in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    big_r = torch.tensor(rows, dtype=torch.float64)
    big_b = torch.tensor(b, dtype=torch.float64)

    alpha_t = 1.0 / math.sqrt(1.0 + sigma_t**2)
    std_ratio = (sigma_t * alpha_t) / (sigma_prev[-1] / math.sqrt(1.0 + sigma_prev[-1] ** 2))
    x_t_ = std_ratio * x - alpha_t * h_phi_1 * m0

    x_t = x_t_
    if d1s:
        rhos_p = [0.5] if order == 2 else torch.linalg.solve(big_r[:-1, :-1], big_b[:-1]).tolist()
        x_t = x_t_ - alpha_t * b_h * sum(float(r) * d for r, d in zip(rhos_p, d1s, strict=True))

    model_t = None
    if use_corrector:
        rhos_c = [0.5] if order == 1 else torch.linalg.solve(big_r, big_b).tolist()
        model_t = model_fn(x_t / alpha_t, sigma_t * s_in)
        corr = sum((float(r) * d for r, d in zip(rhos_c[:-1], d1s, strict=True)), torch.zeros_like(x))
        x_t = x_t_ - alpha_t * b_h * (corr + float(rhos_c[-1]) * (model_t - m0))
    return x_t, model_t


def _sample_uni_pc(model_fn, x, sigmas, callback, variant):
    ts = [float(s) for s in sigmas]
    if ts[-1] == 0:
        ts[-1] = 0.001
    steps = len(ts) - 1
    order = max(1, min(3, steps - 1))  # ComfyUI's order; at least 1 so a single step still denoises
    s_in = x.new_ones([x.shape[0]])
    x_vp = x / math.sqrt(1.0 + ts[0] ** 2)
    model_prev = [model_fn(x, sigmas[0] * s_in)]
    sigma_prev = [ts[0]]
    for s in range(1, steps + 1):
        step_order = s if s < order else min(order, steps + 1 - s)
        x_vp, model_t = _uni_pc_update(
            model_fn, x_vp, model_prev, sigma_prev, ts[s], step_order, s != steps, variant, s_in
        )
        if callback is not None:
            callback(s - 1, x_vp * math.sqrt(1.0 + ts[s] ** 2), model_prev[-1])
        if s < steps:
            model_prev = [*model_prev, model_t][-order:]
            sigma_prev = [*sigma_prev, ts[s]][-order:]
    return x_vp * math.sqrt(1.0 + ts[-1] ** 2)


def sample_uni_pc(model_fn, x, sigmas, noise_sampler, callback=None):
    return _sample_uni_pc(model_fn, x, sigmas, callback, "bh1")


def sample_uni_pc_bh2(model_fn, x, sigmas, noise_sampler, callback=None):
    return _sample_uni_pc(model_fn, x, sigmas, callback, "bh2")

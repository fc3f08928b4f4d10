"""Sampling library: schedules, samplers, CFG/area guidance and KSampler semantics.

The models here are analytic: data is Gaussian, x0 ~ N(mu, s^2) per element, so the exact denoiser is known in
closed form (E[x0 | x] = mu + s^2 / (s^2 + sigma^2) * (x - mu)) and a correct sampler must reproduce the data
distribution -- and, for deterministic samplers, the exact probability-flow ODE map
x0 = mu + s / sqrt(s^2 + sigma_0^2) * (x_T - mu).
"""

from __future__ import annotations

import math

import pytest
import torch

from comfygate.comfy_runtime.diffusion.sampling import (
    SAMPLER_NAMES,
    SCHEDULER_NAMES,
    SUPPORTED_SAMPLERS,
    CFGDenoiser,
    ModelSampling,
    calculate_sigmas,
    common_ksampler,
    default_noise_sampler,
    get_sampler,
    ksampler_sigmas,
    prepare_noise,
    sample,
)
from comfygate.comfy_runtime.diffusion.sampling.schedules import beta_ppf, scaled_linear_alphas_cumprod

MS = ModelSampling()
DATA_STD = 0.5


# --- fixtures: analytic models ------------------------------------------------------------------------------


def _sd_sigmas_by_hand() -> list[float]:
    """The 1000 SD training sigmas, computed with plain floats (independent of the library)."""
    n, start, end = 1000, 0.00085**0.5, 0.012**0.5
    acp, out = 1.0, []
    for i in range(n):
        beta = (start + (end - start) * i / (n - 1)) ** 2
        acp *= 1.0 - beta
        out.append(math.sqrt((1.0 - acp) / acp))
    return out


SD_SIGMAS = _sd_sigmas_by_hand()


def gaussian_denoiser(mu: torch.Tensor | float, s: float = DATA_STD):
    """Exact x0 estimate for data N(mu, s^2) observed as x = x0 + sigma * noise."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sig = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return mu + s**2 / (s**2 + sig**2) * (x - mu)

    return denoise


class ToyModel:
    """A DiffusionModel stand-in: exact eps / v prediction for Gaussian data whose mean is the prompt.

    The data mean of each batch item is ``context[:, 0, 0]`` (the first value of the text embedding), so
    what the model generates depends on the conditioning. Like a real UNet it sees ``x / sqrt(sigma^2 + 1)``
    and a discrete timestep, and works from ``alphas_cumprod[timestep]``.
    """

    def __init__(self, prediction: str = "eps", latent_scale: float = 1.0, s: float = DATA_STD, device="cpu") -> None:
        self.prediction = prediction
        self.latent_scale = latent_scale
        self.latent_channels = 4
        self.alphas_cumprod = scaled_linear_alphas_cumprod().float()
        self.device = torch.device(device)
        self.s = s
        self.calls: list[dict] = []

    def extra_conds(self, cond: dict, latent_hw: tuple[int, int], prompt_type: str = "positive") -> dict:
        return {"y": cond["pooled_output"]} if "pooled_output" in cond else {}

    def __call__(self, x_in, timestep, context, **extra):
        self.calls.append({"batch": x_in.shape[0], "means": context[:, 0, 0].tolist(), "extra": extra})
        assert context.shape[0] == x_in.shape[0] and timestep.shape == (x_in.shape[0],)
        assert x_in.device.type == self.device.type
        acp = self.alphas_cumprod.to(x_in.device)[timestep.long()].view(-1, 1, 1, 1)
        a, b = acp.sqrt(), (1 - acp).sqrt()
        mu = context[:, 0, 0].view(-1, 1, 1, 1)
        x0 = mu + a * self.s**2 / (a**2 * self.s**2 + b**2) * (x_in - a * mu)
        eps = (x_in - a * x0) / b
        return a * eps - b * x0 if self.prediction == "v" else eps


def cond(mean: float, tokens: int = 77, **options) -> list:
    return [torch.full((1, tokens, 8), float(mean)), options]


def empty_latent(batch: int = 2, h: int = 8, w: int = 8) -> dict:
    return {"samples": torch.zeros(batch, 4, h, w)}


def run(model=None, latent=None, positive=None, negative=None, **kw):
    args = {"seed": 7, "steps": 12, "cfg": 1.0, "sampler_name": "euler", "scheduler": "karras", **kw}
    return common_ksampler(
        model or ToyModel(),
        positive=positive if positive is not None else [cond(1.0)],
        negative=negative if negative is not None else [cond(-1.0)],
        latent=latent if latent is not None else empty_latent(),
        **args,
    )


# --- schedules ----------------------------------------------------------------------------------------------


def test_model_sampling_is_the_sd_schedule():
    assert MS.sigma_max == pytest.approx(SD_SIGMAS[-1], rel=1e-6)  # 14.6146...
    assert MS.sigma_min == pytest.approx(SD_SIGMAS[0], rel=1e-6)  # 0.0292...
    assert MS.sigma_max == pytest.approx(14.6146, abs=1e-4) and MS.sigma_min == pytest.approx(0.0292, abs=1e-4)
    ts = torch.tensor([0.0, 1.0, 250.0, 999.0])
    assert torch.equal(MS.timestep(MS.sigma(ts)), ts)
    # fractional timesteps interpolate log sigma
    assert float(MS.sigma(torch.tensor(499.5))) == pytest.approx(math.sqrt(SD_SIGMAS[499] * SD_SIGMAS[500]), rel=1e-5)


def test_eps_and_v_predictions_turn_into_the_same_x0():
    x0, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigma = torch.tensor([0.5, 2.0, 10.0])
    s = sigma.view(-1, 1, 1, 1)
    x = x0 + s * eps
    a, b = 1 / (1 + s**2).sqrt(), s / (1 + s**2).sqrt()
    v = a * eps - b * x0
    assert torch.allclose(ModelSampling("eps").calculate_denoised(sigma, eps, x), x0, atol=1e-5)
    assert torch.allclose(ModelSampling("v").calculate_denoised(sigma, v, x), x0, atol=1e-5)
    with pytest.raises(ValueError, match="prediction"):
        ModelSampling("flow")


def test_names_are_comfyui_combos_in_order(reference):
    combos = reference["KSampler"]["input"]["required"]
    assert list(SCHEDULER_NAMES) == combos["scheduler"][0]
    assert list(SAMPLER_NAMES) == combos["sampler_name"][0]
    required = {"euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m", "dpmpp_2m_sde",
                "dpmpp_sde", "dpmpp_3m_sde", "ddim", "lcm", "uni_pc"}  # fmt: skip
    assert required <= set(SUPPORTED_SAMPLERS) <= set(SAMPLER_NAMES)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("steps", [1, 4, 20])
def test_every_scheduler_descends_from_sigma_max_to_zero(name, steps):
    sigmas = calculate_sigmas(MS, name, steps)
    assert sigmas.dtype == torch.float32 and float(sigmas[-1]) == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all()), sigmas
    if name == "ddim_uniform":  # every (1000 // steps)-th sigma from index 1, so it starts below sigma_max
        top = 1 + (999 // (1000 // steps)) * (1000 // steps)
        assert float(sigmas[0]) == pytest.approx(SD_SIGMAS[top], rel=1e-5)
    else:
        assert float(sigmas[0]) == pytest.approx(MS.sigma_max, rel=1e-5)
    if name not in ("ddim_uniform", "beta"):
        assert len(sigmas) == steps + 1


def test_scheduler_values_match_their_formulas():
    lo, hi = SD_SIGMAS[0], SD_SIGMAS[-1]

    def close(name, steps, expected):
        got = calculate_sigmas(MS, name, steps).tolist()
        assert got == pytest.approx([*expected, 0.0], rel=2e-5), name

    rho = 7.0
    karras = [(hi ** (1 / rho) + i / 9 * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(10)]
    close("karras", 10, karras)
    close("exponential", 5, [math.exp(math.log(hi) + i / 4 * (math.log(lo) - math.log(hi))) for i in range(5)])
    close("normal", 3, [hi, math.sqrt(SD_SIGMAS[499] * SD_SIGMAS[500]), lo])
    close("simple", 4, [SD_SIGMAS[999], SD_SIGMAS[749], SD_SIGMAS[499], SD_SIGMAS[249]])
    close("ddim_uniform", 4, [SD_SIGMAS[751], SD_SIGMAS[501], SD_SIGMAS[251], SD_SIGMAS[1]])

    def at(t):  # log-linear interpolation between training sigmas
        i = math.floor(t)
        return math.exp((1 - (t - i)) * math.log(SD_SIGMAS[i]) + (t - i) * math.log(SD_SIGMAS[min(i + 1, 999)]))

    close("sgm_uniform", 4, [at(999), at(749.25), at(499.5), at(249.75)])
    close("linear_quadratic", 4, [hi * v for v in (1.0, 0.9875, 0.975, 0.725)])
    close("kl_optimal", 3, [hi, math.tan((math.atan(lo) + math.atan(hi)) / 2), lo])
    # beta(0.6, 0.6) timesteps, as ComfyUI gets them from scipy.stats.beta.ppf
    close("beta", 10, [SD_SIGMAS[t] for t in (999, 959, 876, 765, 637, 500, 362, 234, 123, 40)])


def test_beta_scheduler_drops_repeated_timesteps_like_comfyui():
    sigmas = calculate_sigmas(MS, "beta", 400)
    assert len(sigmas) == 388  # ComfyUI (scipy) gives 387 distinct timesteps + the final 0 for 400 steps
    assert bool((sigmas[1:] < sigmas[:-1]).all())


def test_beta_ppf_matches_scipy_values():
    # scipy.stats.beta.ppf([0.1, 0.25, 0.5, 0.999], 0.6, 0.6)
    expected = [0.03958440558878085, 0.17568037865269498, 0.5, 0.9999814412614826]
    assert [beta_ppf(q, 0.6, 0.6) for q in (0.1, 0.25, 0.5, 0.999)] == pytest.approx(expected, rel=1e-9)
    assert beta_ppf(0.0, 0.6, 0.6) == 0.0 and beta_ppf(1.0, 0.6, 0.6) == 1.0


def test_denoise_below_one_takes_the_tail_of_a_longer_schedule():
    assert torch.equal(ksampler_sigmas(MS, "euler", "normal", 10, 0.5), calculate_sigmas(MS, "normal", 20)[-11:])
    assert len(ksampler_sigmas(MS, "euler", "karras", 10, 0.0)) == 0
    # dpm_2 / uni_pc compute one more step and drop the second-to-last sigma
    full = calculate_sigmas(MS, "karras", 6)
    assert torch.equal(ksampler_sigmas(MS, "dpm_2", "karras", 5), torch.cat([full[:-2], full[-1:]]))


# --- samplers -----------------------------------------------------------------------------------------------

FIRST_ORDER = {"euler", "ddim", "euler_ancestral", "ddpm", "dpmpp_sde", "dpmpp_sde_gpu", "heunpp2"}
CHANNEL_MEANS = torch.tensor([-0.5, 0.0, 0.3, 1.0]).view(1, 4, 1, 1)


def _start(sigma_0: float, n: int = 5000, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return CHANNEL_MEANS + (DATA_STD**2 + sigma_0**2) ** 0.5 * torch.randn(n, 4, 1, 1, generator=g)


@pytest.mark.parametrize("name", [n for n in SUPPORTED_SAMPLERS if n != "lcm"])
def test_sampler_reproduces_the_data_distribution(name):
    sigmas = calculate_sigmas(MS, "karras", 100)
    out = sample(name, gaussian_denoiser(CHANNEL_MEANS), _start(float(sigmas[0])), sigmas, seed=3)
    mean, std = out.mean(dim=(0, 2, 3)), out.std(dim=(0, 2, 3))
    assert torch.allclose(mean, CHANNEL_MEANS.flatten(), atol=0.03), mean
    tolerance = 0.06 if name in FIRST_ORDER else 0.03
    assert torch.allclose(std, torch.full((4,), DATA_STD), rtol=tolerance), std


@pytest.mark.parametrize(
    "name", ["euler", "heun", "heunpp2", "dpm_2", "lms", "dpmpp_2m", "ipndm", "ipndm_v", "uni_pc", "uni_pc_bh2"]
)
def test_deterministic_sampler_follows_the_exact_ode(name):
    def error(steps):
        sigmas = calculate_sigmas(MS, "karras", steps)
        x = _start(float(sigmas[0]), n=64)
        exact = CHANNEL_MEANS + DATA_STD / (DATA_STD**2 + float(sigmas[0]) ** 2) ** 0.5 * (x - CHANNEL_MEANS)
        return float((sample(name, gaussian_denoiser(CHANNEL_MEANS), x, sigmas) - exact).abs().max())

    if name in ("euler", "heunpp2"):
        e30, e60 = error(30), error(60)
        assert e30 < 0.1 and e60 < 0.6 * e30  # first order: halving the step roughly halves the error
    else:
        assert error(30) < 0.01


@pytest.mark.parametrize(
    ("name", "expected"),
    [  # from a line-by-line float64 transcription of ComfyUI 0.3.64's functions, 8 karras steps
        ("uni_pc", [-0.96779, -0.33389, 0.3, 0.93389, 1.56779]),
        ("uni_pc_bh2", [-0.88869, -0.29435, 0.3, 0.89435, 1.48869]),
        ("heunpp2", [-0.5026, -0.1013, 0.3, 0.7013, 1.1026]),
    ],
)
def test_sampler_matches_comfyui_reference_values(name, expected):
    sigmas = calculate_sigmas(MS, "karras", 8)
    x = (0.3 + (DATA_STD**2 + float(sigmas[0]) ** 2) ** 0.5 * torch.linspace(-2, 2, 5)).view(-1, 1, 1, 1)
    out = sample(name, gaussian_denoiser(0.3), x, sigmas)
    assert out.flatten().tolist() == pytest.approx(expected, abs=1e-4)


def test_lcm_follows_its_own_variance_recursion():
    # LCM jumps to x0 and re-noises: Var(x_{i+1}) = (s^2 / (s^2 + sigma_i^2))^2 Var(x_i) + sigma_{i+1}^2
    sigmas = calculate_sigmas(MS, "karras", 8)
    x = _start(float(sigmas[0]), n=20000)
    var = DATA_STD**2 + float(sigmas[0]) ** 2
    for i in range(len(sigmas) - 1):
        shrink = DATA_STD**2 / (DATA_STD**2 + float(sigmas[i]) ** 2)
        var = shrink**2 * var + float(sigmas[i + 1]) ** 2
    out = sample("lcm", gaussian_denoiser(CHANNEL_MEANS), x, sigmas, seed=3)
    assert torch.allclose(out.var(dim=(0, 2, 3)), torch.full((4,), var), rtol=0.05)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), CHANNEL_MEANS.flatten(), atol=0.03)


def test_unknown_and_unimplemented_samplers_are_refused_by_name():
    with pytest.raises(ValueError, match=r"'dpm_adaptive' is not implemented.*supported samplers: euler"):
        get_sampler("dpm_adaptive")
    with pytest.raises(ValueError, match="'nope' is not a ComfyUI sampler"):
        run(sampler_name="nope")
    with pytest.raises(ValueError, match="unknown scheduler 'nope'.*karras"):
        run(scheduler="nope")


# --- KSampler -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ksampler_generates_the_model_distribution_in_raw_latent_units(prediction):
    scale = 0.5
    out = run(ToyModel(prediction, latent_scale=scale), empty_latent(batch=64), steps=30, sampler_name="dpmpp_2m")[
        "samples"
    ]
    assert out.shape == (64, 4, 8, 8) and out.dtype == torch.float32
    # the model's data is N(1, 0.5^2) in scaled units; raw = scaled / latent_scale
    assert float(out.mean()) == pytest.approx(1.0 / scale, abs=0.1)
    assert float(out.std()) == pytest.approx(DATA_STD / scale, rel=0.05)


def test_prepare_noise_is_comfyui_seeded_cpu_noise():
    latent = torch.zeros(4, 4, 3, 3)
    state = torch.get_rng_state()
    noise = prepare_noise(latent, 1234)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    assert torch.equal(noise, torch.randn(latent.shape, generator=torch.Generator().manual_seed(1234)))
    # with batch_index, item i gets the batch_index[i]-th single-item draw of the seeded generator
    g = torch.Generator().manual_seed(1234)
    draws = [torch.randn(1, 4, 3, 3, generator=g) for _ in range(4)]
    picked = prepare_noise(latent[:2], 1234, batch_index=[3, 1])
    assert torch.equal(picked, torch.cat([draws[3], draws[1]]))
    assert prepare_noise(latent, 2**64 - 1).shape == latent.shape  # ComfyUI's max seed


@pytest.mark.parametrize("sampler_name", ["euler", "euler_ancestral", "dpmpp_2m_sde", "dpmpp_sde", "uni_pc"])
def test_seed_gives_the_same_result_every_time(sampler_name):
    a = run(seed=11, sampler_name=sampler_name, cfg=3.0)["samples"]
    b = run(seed=11, sampler_name=sampler_name, cfg=3.0)["samples"]
    c = run(seed=12, sampler_name=sampler_name, cfg=3.0)["samples"]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_ancestral_noise_comes_from_the_seed():
    # like ComfyUI, sampler noise on CPU comes from a generator seeded with seed + 1
    x = torch.zeros(2, 4, 3, 3)
    draws = default_noise_sampler(x, 41)
    g = torch.Generator().manual_seed(42)
    first, second = draws(torch.tensor(2.0), torch.tensor(1.0)), draws(torch.tensor(1.0), torch.tensor(0.5))
    assert torch.equal(first, torch.randn(x.shape, generator=g)) and torch.equal(
        second, torch.randn(x.shape, generator=g)
    )
    # with add_noise disabled only the sampler's own noise depends on the seed
    a = run(seed=1, disable_noise=True, sampler_name="euler_ancestral")["samples"]
    b = run(seed=1, disable_noise=True, sampler_name="euler_ancestral")["samples"]
    c = run(seed=2, disable_noise=True, sampler_name="euler_ancestral")["samples"]
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_small_denoise_keeps_the_input_latent():
    image = {"samples": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))}
    model = ToyModel(latent_scale=0.5)
    nearly = run(model, image, denoise=0.01, steps=4)["samples"]
    half = run(model, image, denoise=0.5, steps=4)["samples"]
    none = run(model, image, denoise=0.0)["samples"]
    assert torch.equal(none, image["samples"])
    # denoise 0.01 starts at sigma ~0.03 (scaled units): only that much noise is added and taken away again
    assert float((nearly - image["samples"]).abs().mean()) < 0.1
    assert float((half - image["samples"]).abs().mean()) > 10 * float((nearly - image["samples"]).abs().mean())


@pytest.mark.parametrize("sampler_name", ["euler", "dpmpp_2m", "ddim", "euler_ancestral"])
def test_noise_mask_repaints_only_the_masked_region(sampler_name):
    source = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    mask = torch.zeros(1, 64, 64)  # pixel-resolution mask, 1 = repaint: left half
    mask[:, :, :32] = 1.0
    latent = {"samples": source, "noise_mask": mask}
    out = run(ToyModel(latent_scale=0.18215), latent, sampler_name=sampler_name, steps=10)
    kept, painted = out["samples"][..., 4:], out["samples"][..., :4]
    assert torch.allclose(kept, source[..., 4:], atol=1e-4)
    assert float((painted - source[..., :4]).abs().mean()) > 1.0
    assert out["noise_mask"] is mask  # the LATENT's other keys are carried over


def test_advanced_start_end_steps_and_leftover_noise():
    model = ToyModel()
    common = {"steps": 20, "scheduler": "normal", "sampler_name": "euler", "latent": empty_latent(batch=16)}
    full = run(model, **common)["samples"]
    first = run(model, start_step=0, last_step=10, force_full_denoise=False, **common)["samples"]
    # stopped halfway with leftover noise: far noisier than a finished image
    sigma_10 = float(calculate_sigmas(MS, "normal", 20)[10])
    assert float(first.std()) == pytest.approx((DATA_STD**2 + sigma_10**2) ** 0.5, rel=0.15)
    assert float(first.std()) > 2 * float(full.std())
    # a second pass without new noise, from step 10 to the end, finishes the same image as one full pass
    second = run(model, disable_noise=True, start_step=10, last_step=10000, force_full_denoise=True,
                 **{**common, "latent": {"samples": first}})["samples"]  # fmt: skip
    assert torch.allclose(second, full, atol=1e-4)
    # stopping early without leftover noise jumps from step 9 straight to x0: a clean (if blurry) estimate
    early = run(model, start_step=0, last_step=10, force_full_denoise=True, **common)["samples"]
    sigma_9 = float(calculate_sigmas(MS, "normal", 20)[9])
    assert float(early.std()) == pytest.approx(DATA_STD**2 / (DATA_STD**2 + sigma_9**2) ** 0.5, rel=0.15)
    # starting at or past the last step returns the input untouched
    assert torch.equal(run(model, start_step=20, **common)["samples"], common["latent"]["samples"])


def test_callback_reports_every_step_and_can_abort():
    seen = []
    run(steps=6, callback=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 6) for i in range(1, 7)]

    def cancel(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(steps=6, callback=cancel)


@pytest.mark.parametrize("sampler_name", SUPPORTED_SAMPLERS)
def test_every_sampler_runs_through_ksampler(sampler_name):
    seen = []
    out = run(ToyModel("v"), steps=4, sampler_name=sampler_name, cfg=2.0, callback=lambda d, t: seen.append(d))
    assert out["samples"].shape == (2, 4, 8, 8) and bool(torch.isfinite(out["samples"]).all())
    assert seen == [1, 2, 3, 4]


def test_latent_and_conditioning_errors_name_the_input():
    with pytest.raises(ValueError, match="'samples'"):
        run(latent={"noise": torch.zeros(1)})
    with pytest.raises(ValueError, match="3 channels but the model expects 4"):
        run(latent={"samples": torch.ones(1, 3, 8, 8)})
    assert run(latent={"samples": torch.zeros(1, 3, 8, 8)})["samples"].shape == (1, 4, 8, 8)  # empty: resized
    with pytest.raises(ValueError, match="positive conditioning entry 0"):
        run(positive=[[torch.zeros(1, 77, 8)]])
    with pytest.raises(ValueError, match="negative conditioning entry 1: 'area'"):
        run(negative=[cond(0.0), cond(0.0, area=(1, 2))], cfg=2.0)
    with pytest.raises(ValueError, match="steps"):
        run(steps=0)


# --- guidance -----------------------------------------------------------------------------------------------


def _denoiser(model, positive, negative, cfg, shape=(2, 4, 8, 8)):
    return CFGDenoiser(model, MS, positive, negative, cfg, shape, torch.device("cpu"))


def test_cfg_combines_positive_and_negative_and_skips_negative_at_one():
    model = ToyModel()
    x, sigma = torch.randn(2, 4, 8, 8), torch.full((2,), 3.0)
    d_pos = _denoiser(model, [cond(1.0)], [], 1.0)(x, sigma)
    d_neg = _denoiser(model, [cond(-1.0)], [], 1.0)(x, sigma)
    model.calls.clear()
    guided = _denoiser(model, [cond(1.0)], [cond(-1.0)], 7.0)(x, sigma)
    assert torch.allclose(guided, d_neg + 7.0 * (d_pos - d_neg), atol=1e-4)
    assert [c["batch"] for c in model.calls] == [4]  # positive and negative share one network call
    model.calls.clear()
    _denoiser(model, [cond(1.0)], [cond(-1.0)], 1.0)(x, sigma)
    assert model.calls == [{"batch": 2, "means": [1.0, 1.0], "extra": {}}]  # cfg 1: negative never evaluated


def test_prompts_of_different_lengths_and_extra_inputs_are_handled():
    model = ToyModel()
    x, sigma = torch.randn(2, 4, 8, 8), torch.full((2,), 3.0)
    pooled = torch.arange(6.0).view(1, 6)
    long_pos = _denoiser(model, [cond(1.0, tokens=154, pooled_output=pooled)], [cond(-1.0)], 5.0)(x, sigma)
    short_pos = _denoiser(model, [cond(1.0, pooled_output=pooled)], [cond(-1.0)], 5.0)(x, sigma)
    assert torch.allclose(long_pos, short_pos, atol=1e-5)
    y = [c["extra"]["y"] for c in model.calls if "y" in c["extra"]]
    assert y and all(t.shape == (2, 6) and torch.equal(t[1], pooled[0]) for t in y)


def test_extra_inputs_know_which_side_they_are_for():
    class RefinerLike(ToyModel):
        def extra_conds(self, cond, latent_hw, prompt_type="positive"):
            score = 6.0 if prompt_type == "positive" else 2.5
            return {"y": torch.tensor([[float(latent_hw[0]), float(latent_hw[1]), score]])}

    model = RefinerLike()
    _denoiser(model, [cond(1.0)], [cond(-1.0)], 5.0, (1, 4, 6, 8))(torch.randn(1, 4, 6, 8), torch.full((1,), 3.0))
    (call,) = model.calls
    assert call["means"] == [1.0, -1.0]
    assert call["extra"]["y"].tolist() == [[6.0, 8.0, 6.0], [6.0, 8.0, 2.5]]


def test_several_prompts_average():
    model = ToyModel()
    x, sigma = torch.randn(2, 4, 8, 8), torch.full((2,), 3.0)
    both = _denoiser(model, [cond(1.0), cond(3.0)], [], 1.0)(x, sigma)
    middle = _denoiser(model, [cond(2.0)], [], 1.0)(x, sigma)  # the toy's x0 is linear in the prompt mean
    assert torch.allclose(both, middle, atol=1e-5)
    weighted = _denoiser(model, [cond(1.0), cond(4.0, strength=2.0)], [], 1.0)(x, sigma)
    assert torch.allclose(weighted, _denoiser(model, [cond(3.0)], [], 1.0)(x, sigma), atol=1e-5)


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_area_conditioning_only_changes_its_area(cfg):
    model = ToyModel()
    area = (8, 8, 8, 0)  # h, w, y, x in latent units: the bottom-left 8x8 of a 16x16 latent
    latent = empty_latent(batch=4, h=16, w=16)
    base = run(model, latent, positive=[cond(1.0)], cfg=cfg)["samples"]
    with_area = run(model, latent, positive=[cond(1.0), cond(-2.0, area=area)], cfg=cfg)["samples"]
    changed = (with_area - base).abs().amax(dim=(0, 1)) > 1e-4  # [16, 16]
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[8:16, 0:8] = True
    assert not bool(changed[~inside].any())
    assert bool(changed[inside].all())
    # inside, the positive prediction is the average of the two prompts ((1 - 2) / 2); outside it stays 1;
    # the negative (-1) is given a copy on the same area, so it stays -1 everywhere
    inside_mean, outside_mean = -1.0 + cfg * (-0.5 + 1.0), -1.0 + cfg * (1.0 + 1.0)
    assert float(with_area[:, :, 12, 4].mean()) == pytest.approx(inside_mean, abs=0.1 + 0.05 * abs(inside_mean))
    assert float(with_area[:, :, 4, 12].mean()) == pytest.approx(outside_mean, abs=0.1 + 0.05 * abs(outside_mean))


def test_mask_conditioning_weights_by_the_mask():
    model = ToyModel()
    x, sigma = torch.randn(2, 4, 8, 8), torch.full((2,), 3.0)
    mask = torch.zeros(1, 64, 64)
    mask[:, :32] = 1.0  # top half, at pixel resolution
    plain = _denoiser(model, [cond(1.0)], [], 1.0)(x, sigma)
    masked = _denoiser(model, [cond(1.0), cond(5.0, mask=mask, set_area_to_bounds=True)], [], 1.0)(x, sigma)
    assert torch.allclose(masked[:, :, 4:], plain[:, :, 4:], atol=1e-6)
    assert float((masked[:, :, :4] - plain[:, :, :4]).abs().min()) > 0.1


def test_timestep_range_limits_when_a_prompt_applies():
    model = ToyModel()
    x = torch.randn(2, 4, 8, 8)
    late = [cond(1.0), cond(9.0, start_percent=0.5, end_percent=1.0)]
    early_sigma, late_sigma = torch.full((2,), MS.sigma_max), torch.full((2,), 0.1)
    plain = _denoiser(model, [cond(1.0)], [], 1.0)
    ranged = _denoiser(model, late, [], 1.0)
    assert torch.allclose(ranged(x, early_sigma), plain(x, early_sigma))
    assert not torch.allclose(ranged(x, late_sigma), plain(x, late_sigma))


def test_area_edges_blend_and_the_negative_gets_a_matching_area():
    model = ToyModel()
    shape = (2, 4, 16, 16)
    x, sigma = torch.randn(shape), torch.full((2,), 2.0)

    def single(mean):
        return _denoiser(model, [cond(mean)], [], 1.0, shape)(x, sigma)

    small, big = (8, 8, 8, 0), (12, 12, 4, 0)  # (h, w, y, x); small lies inside big
    positive = [cond(1.0), cond(-2.0, area=small)]
    # weight of an area prediction ramps up over min(8, size // 4) = 2 pixels at inner borders: row 8 gets 1/2
    edge = _denoiser(model, positive, [], 1.0, shape)(x, sigma)
    assert torch.allclose(edge[:, :, 8, 4], ((single(1.0) + 0.5 * single(-2.0)) / 1.5)[:, :, 8, 4], atol=1e-5)
    # each side gets, on every area of the other side, a copy of its own smallest entry covering that area
    guided = _denoiser(model, positive, [cond(-1.0), cond(2.0, area=big)], 2.0, shape)(x, sigma)
    pos = (2 * single(1.0) + single(-2.0)) / 3  # global + small area + copy of global on the big area
    neg = (single(-1.0) + 2 * single(2.0)) / 3  # global + big area + copy of big on the small area
    assert torch.allclose(guided[:, :, 12, 4], (neg + 2.0 * (pos - neg))[:, :, 12, 4], atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sampler_name", ["euler", "euler_ancestral", "dpmpp_2m_sde", "uni_pc", "ddim"])
def test_sampling_on_cuda_is_seeded_and_matches_cpu_for_ode_samplers(sampler_name):
    mask = torch.zeros(2, 8, 8)
    mask[:, :, :4] = 1.0
    latent = {"samples": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3)), "noise_mask": mask}
    positive = [cond(1.0), cond(-1.0, area=(4, 4, 0, 0))]
    outs = [run(ToyModel(device="cuda"), latent, positive, sampler_name=sampler_name, cfg=3.0) for _ in range(2)]
    assert outs[0]["samples"].device.type == "cpu"
    assert torch.equal(outs[0]["samples"], outs[1]["samples"])
    # (uni_pc stops at sigma 0.001 like ComfyUI, so the kept region is only within ~1e-3 of the input)
    assert torch.allclose(outs[0]["samples"][..., 4:], latent["samples"][..., 4:], atol=1e-2)
    if sampler_name in ("euler", "uni_pc"):  # no sampler noise: the CPU run starts from the same seeded noise
        on_cpu = run(ToyModel(), latent, positive, sampler_name=sampler_name, cfg=3.0)["samples"]
        assert torch.allclose(outs[0]["samples"], on_cpu, atol=1e-3)

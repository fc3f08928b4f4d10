"""Whole diffusion workflows through the executor, on tiny real checkpoints in the single-file layouts.

Each test builds ComfyUI-format prompts with the built-in nodes (checkpoint loader, text encoders, samplers,
VAE) and runs them as a worker would: model files in a models folder, one model library and pool, an
Executor. What a user checks: an image of the asked size comes back, the same seed gives the same image,
a second run loads nothing, a small memory budget evicts instead of failing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comfygate.comfy_runtime import Executor, NodeExecutionError, RunContext, WorkflowInvalid, create_registry
from comfygate.comfy_runtime.diffusion.library import ModelLibrary
from comfygate.comfy_runtime.diffusion.model_paths import ModelPaths

from .tiny_checkpoints import build_sd1_checkpoint, build_sd2_checkpoint, build_sdxl_checkpoint
from .tiny_lora import build_lora_file


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_sd1_checkpoint(root / "checkpoints" / "tiny_sd1.safetensors", seed=0)
    build_sd1_checkpoint(root / "checkpoints" / "other_sd1.safetensors", seed=5)
    build_sd2_checkpoint(root / "checkpoints" / "tiny_sd2_v.safetensors")
    build_sdxl_checkpoint(root / "checkpoints" / "tiny_sdxl.safetensors")
    build_lora_file(root / "loras" / "tiny_sd1_lora.safetensors", "sd1")
    build_lora_file(root / "loras" / "tiny_sdxl_lora.safetensors", "sdxl")
    return root


def make_executor(models_dir: Path, budget_bytes: int = 0) -> tuple[Executor, ModelLibrary]:
    library = ModelLibrary(ModelPaths(models_dir), device="cpu", budget_bytes=budget_bytes)
    return Executor(create_registry(models=library)), library


@pytest.fixture(scope="module")
def shared(models_dir):
    """One executor for the module, as in a worker process (tests that count loads make their own)."""
    return make_executor(models_dir)


def txt2img(ckpt: str = "tiny_sd1.safetensors", seed: int = 1, *, steps: int = 2, sampler: str = "euler",
            scheduler: str = "normal", size: int = 64, text: str = "a red circle", lora: tuple | None = None,
            cfg: float = 7.0) -> dict:
    model, clip = ["1", 0], ["1", 1]
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": clip}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "t2i"}},
    }
    if lora is not None:
        name, strength_model, strength_clip = lora
        prompt["8"] = {"class_type": "LoraLoader", "inputs": {
            "model": model, "clip": clip, "lora_name": name, "strength_model": strength_model,
            "strength_clip": strength_clip}}
        for node, inputs in (("2", "clip"), ("3", "clip"), ("5", "model")):
            prompt[node]["inputs"][inputs] = ["8", 0 if inputs == "model" else 1]
    return prompt


def run(executor: Executor, prompt: dict, input_dir: Path | None = None):
    return executor.run(prompt, RunContext(input_dir=input_dir or Path("/nonexistent")))


def pixels(result) -> np.ndarray:
    assert len(result.outputs) == 1
    return result.outputs[0].pixels


@pytest.mark.parametrize("ckpt", ["tiny_sd1.safetensors", "tiny_sd2_v.safetensors", "tiny_sdxl.safetensors"])
def test_txt2img_gives_an_image_of_the_asked_size_for_each_architecture(shared, ckpt):
    executor, _ = shared
    image = pixels(run(executor, txt2img(ckpt, size=64)))
    assert image.shape == (64, 64, 3)
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    assert image.std() > 0  # decoded from a sampled latent, not a blank frame


def test_same_seed_same_image_and_another_seed_another(models_dir):
    first, _ = make_executor(models_dir)
    second, _ = make_executor(models_dir)  # a fresh process-like executor: nothing shared but the files
    a = pixels(run(first, txt2img(seed=7)))
    b = pixels(run(second, txt2img(seed=7)))
    c = pixels(run(second, txt2img(seed=8)))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("sampler,scheduler", [
    ("euler_ancestral", "karras"), ("heun", "exponential"), ("dpm_2", "simple"), ("dpm_2_ancestral", "normal"),
    ("lms", "karras"), ("dpmpp_2m", "karras"), ("dpmpp_2m_sde", "sgm_uniform"), ("dpmpp_sde", "normal"),
    ("dpmpp_3m_sde", "exponential"), ("ddim", "ddim_uniform"), ("lcm", "simple"), ("uni_pc", "beta"),
])
def test_every_sampler_runs_a_workflow_and_is_seeded(shared, sampler, scheduler):
    executor, _ = shared
    a = pixels(run(executor, txt2img(seed=3, steps=3, sampler=sampler, scheduler=scheduler)))
    executor.free_cache()  # run the sampler again rather than answer from the node cache
    b = pixels(run(executor, txt2img(seed=3, steps=3, sampler=sampler, scheduler=scheduler)))
    assert np.isfinite(a).all()
    assert np.array_equal(a, b)


def test_a_second_run_loads_nothing_and_the_pool_reports_the_load(models_dir):
    library = ModelLibrary(ModelPaths(models_dir), device="cpu")
    first = run(Executor(create_registry(models=library)), txt2img(seed=1))
    # A new executor (empty node cache) on the same library: the loader node runs, the pool answers it.
    second = run(Executor(create_registry(models=library)), txt2img(seed=2))
    assert first.model_load_ms > 0
    assert [load["model"].split("/")[-1] for load in first.model_loads] == ["tiny_sd1.safetensors"]
    assert second.model_loads == [] and second.model_load_ms == 0
    (entry,) = library.report()
    assert entry["key"][1].endswith("tiny_sd1.safetensors")
    assert entry["loads"] == 1 and entry["load_ms"] > 0 and entry["size_bytes"] > 0


def test_a_small_budget_evicts_the_idle_model_instead_of_failing(models_dir):
    probe, probe_library = make_executor(models_dir)
    run(probe, txt2img("tiny_sd1.safetensors"))
    one_model = probe_library.report()[0]["size_bytes"]

    executor, library = make_executor(models_dir, budget_bytes=int(one_model * 1.5))
    run(executor, txt2img("tiny_sd1.safetensors"))
    result = run(executor, txt2img("other_sd1.safetensors"))  # does not fit beside the first: it goes
    assert pixels(result).shape == (64, 64, 3)
    assert [Path(entry["key"][1]).name for entry in library.report()] == ["other_sd1.safetensors"]
    executor.free_cache()
    again = run(executor, txt2img("tiny_sd1.safetensors"))  # evicted earlier, so loaded again
    assert [load["model"].split("/")[-1] for load in again.model_loads] == ["tiny_sd1.safetensors"]


def test_lora_changes_the_image_and_strength_zero_does_not(shared):
    executor, _ = shared
    plain = pixels(run(executor, txt2img(seed=4)))
    patched = pixels(run(executor, txt2img(seed=4, lora=("tiny_sd1_lora.safetensors", 1.0, 1.0))))
    zero = pixels(run(executor, txt2img(seed=4, lora=("tiny_sd1_lora.safetensors", 0.0, 0.0))))
    executor.free_cache()
    after = pixels(run(executor, txt2img(seed=4)))  # the base model is unpatched after a LoRA run
    assert not np.array_equal(plain, patched)
    assert np.array_equal(plain, zero)
    assert np.array_equal(plain, after)


def img2img(denoise: float, *, mask: bool = False) -> dict:
    prompt = txt2img(seed=11)
    prompt["9"] = {"class_type": "LoadImage", "inputs": {"image": "source.png"}}
    if mask:
        prompt["10"] = {"class_type": "VAEEncodeForInpaint", "inputs": {
            "pixels": ["9", 0], "vae": ["1", 2], "mask": ["9", 1], "grow_mask_by": 0}}
    else:
        prompt["10"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["9", 0], "vae": ["1", 2]}}
    prompt["5"]["inputs"].update(latent_image=["10", 0], denoise=denoise)
    del prompt["4"]
    return prompt


@pytest.fixture
def source_image(tmp_path) -> Path:
    """A 96x64 RGBA picture: a gradient with a square; alpha 0 (LoadImage's mask = 1) on the right half."""
    ys, xs = np.mgrid[0:64, 0:96]
    rgba = np.zeros((64, 96, 4), np.uint8)
    rgba[..., 0] = xs * 255 // 95
    rgba[..., 1] = ys * 255 // 63
    rgba[16:48, 16:48, 2] = 255
    rgba[..., 3] = np.where(xs < 48, 255, 0)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "source.png")
    return tmp_path


def test_img2img_keeps_the_size_and_low_denoise_stays_close_to_the_vae_round_trip(shared, source_image):
    executor, _ = shared
    round_trip = txt2img()
    round_trip["9"] = {"class_type": "LoadImage", "inputs": {"image": "source.png"}}
    round_trip["10"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["9", 0], "vae": ["1", 2]}}
    round_trip["6"]["inputs"]["samples"] = ["10", 0]
    for node in ("2", "3", "4", "5"):
        del round_trip[node]
    decoded = pixels(run(executor, round_trip, source_image))
    light = pixels(run(executor, img2img(0.05), source_image))
    heavy = pixels(run(executor, img2img(1.0), source_image))
    assert decoded.shape == light.shape == heavy.shape == (64, 96, 3)
    assert np.abs(light - decoded).mean() < np.abs(heavy - decoded).mean()


def call_node(executor: Executor, class_type: str, **inputs):
    cls = executor.registry.get(class_type)
    return getattr(cls(), cls.FUNCTION)(**inputs)


def test_inpainting_changes_only_the_masked_latent_cells(shared, source_image):
    # Checked on the latent: a random-weight VAE decoder mixes the whole frame (its mid block attends globally).
    executor, _ = shared
    model, clip, vae = call_node(executor, "CheckpointLoaderSimple", ckpt_name="tiny_sd1.safetensors")
    image, mask = call_node(executor, "LoadImage", image="source.png", input_dir=source_image)
    (latent,) = call_node(executor, "VAEEncodeForInpaint", pixels=image, vae=vae, mask=mask, grow_mask_by=0)
    (positive,) = call_node(executor, "CLIPTextEncode", clip=clip, text="a red circle")
    (sampled,) = call_node(executor, "KSampler", model=model, seed=2, steps=3, cfg=7.0, sampler_name="euler",
                           scheduler="normal", positive=positive, negative=positive, latent_image=latent, denoise=1.0)
    before, after = latent["samples"], sampled["samples"]
    assert after.shape == before.shape == (1, 4, 8, 12)
    assert latent["noise_mask"].shape == (1, 1, 64, 96)
    # Left half of the picture (alpha 255, LoadImage mask 0) is kept; the right half (mask 1) is repainted.
    assert torch.allclose(after[..., :6], before[..., :6], atol=1e-5)  # up to float rounding of the scaling
    assert not torch.allclose(after[..., 6:], before[..., 6:])


def test_a_checkpoint_not_in_the_folder_is_refused_at_validation_naming_node_and_input(shared):
    executor, _ = shared
    with pytest.raises(WorkflowInvalid) as caught:
        run(executor, txt2img("missing.safetensors"))
    errors = caught.value.node_errors["1"]["errors"]
    assert errors[0]["type"] == "value_not_in_list"
    assert errors[0]["extra_info"]["input_name"] == "ckpt_name"


def test_a_file_added_later_is_listed_without_a_restart(tmp_path):
    library = ModelLibrary(ModelPaths(tmp_path), device="cpu")
    registry = create_registry(models=library)
    combo = registry.schemas()["CheckpointLoaderSimple"]
    assert combo.inputs["ckpt_name"].choices == ()
    build_sd1_checkpoint(tmp_path / "checkpoints" / "late.safetensors")
    assert registry.schemas()["CheckpointLoaderSimple"].inputs["ckpt_name"].choices == ("late.safetensors",)


@pytest.mark.parametrize("name", ["broken.safetensors", "broken.ckpt"])
def test_a_corrupt_checkpoint_fails_the_loader_node_with_the_file_named(tmp_path, name):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / name).write_bytes(b"not a model file at all")
    executor, _ = make_executor(tmp_path)
    with pytest.raises(NodeExecutionError) as caught:
        run(executor, txt2img(name))
    assert caught.value.node_id == "1"
    assert name in str(caught.value) and "not a readable" in str(caught.value)
    assert "weights_only" not in str(caught.value)  # never the advice to load it unsafely


def test_a_prompt_encoded_for_another_model_family_is_named_not_a_matrix_error(shared):
    executor, _ = shared
    prompt = txt2img("tiny_sd1.safetensors")
    prompt["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd2_v.safetensors"}}
    prompt["2"]["inputs"]["clip"] = ["20", 1]
    prompt["3"]["inputs"]["clip"] = ["20", 1]
    with pytest.raises(NodeExecutionError) as caught:
        run(executor, prompt)
    assert caught.value.node_id == "5"
    assert "another model family" in str(caught.value)


def test_a_lora_for_another_architecture_fails_at_the_lora_loader(shared):
    executor, _ = shared
    with pytest.raises(NodeExecutionError) as caught:
        run(executor, txt2img(lora=("tiny_sdxl_lora.safetensors", 1.0, 1.0)))
    assert caught.value.node_id == "8"
    assert "tiny_sdxl_lora.safetensors" in str(caught.value)


@pytest.mark.parametrize("width,height,expected_cells", [
    (0, 128, (16, 24)),    # width follows the height, keeping 64x96's aspect
    (192, 0, (16, 24)),
    (8, 8, (8, 8)),        # sides below 64 pixels are raised to 64
    (256, 128, (16, 32)),
])
def test_latent_upscale_sizes_follow_comfyui(shared, width, height, expected_cells):
    executor, _ = shared
    latent = {"samples": torch.zeros(1, 4, 8, 12)}
    (scaled,) = call_node(executor, "LatentUpscale", samples=latent, upscale_method="bilinear", width=width,
                          height=height, crop="disabled")
    assert tuple(scaled["samples"].shape[-2:]) == expected_cells


def test_inpaint_encoding_crops_pixels_and_mask_alike_around_the_centre(shared):
    executor, _ = shared
    _, _, vae = call_node(executor, "CheckpointLoaderSimple", ckpt_name="tiny_sd1.safetensors")
    pixels = torch.rand(1, 70, 77, 3)  # crops to 64x72: 3 rows off the top, 2 columns off the left
    mask = torch.zeros(1, 70, 77)
    mask[:, 3:35, 2:38] = 1.0  # exactly the top-left quarter of the cropped frame
    (latent,) = call_node(executor, "VAEEncodeForInpaint", pixels=pixels, vae=vae, mask=mask, grow_mask_by=0)
    assert latent["samples"].shape == (1, 4, 8, 9)
    kept = latent["noise_mask"][0, 0]
    assert kept.shape == (64, 72)
    assert kept[:32, :36].min() == 1 and kept[32:, :].max() == 0 and kept[:, 36:].max() == 0

"""Single-file checkpoint loading: detection, conversion, refusal of bad files, UNet / VAE behaviour.

The tiny fixtures (tiny_checkpoints.py) are written from diffusers / transformers modules in the real single-file
layouts, so "loaded correctly" is checked against those source modules: same weights, same outputs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from comfygate.comfy_runtime.diffusion import configs
from comfygate.comfy_runtime.diffusion.checkpoints import (
    load_checkpoint,
    load_diffusion_model,
    load_text_encoder,
    load_vae,
    read_state_dict,
)
from comfygate.comfy_runtime.diffusion.detect import UNET_PREFIX, VAE_PREFIX, detect_model
from comfygate.comfy_runtime.diffusion.errors import ModelLoadError
from comfygate.comfy_runtime.diffusion.ldm_names import open_clip_ldm_names

from .tiny_checkpoints import (
    TinyCheckpoint,
    build_clip_l_file,
    build_text_encoder_file,
    build_vae_file,
    save_state_dict,
    tiny_checkpoint,
)
from .tiny_configs import TINY_CLIP_L, TINY_OPEN_CLIP_G, TINY_OPEN_CLIP_H, TINY_VAE
from .tiny_ldm_keys import clip_l_to_ldm, hf_text_state_dict, open_clip_to_ldm, unet_to_ldm, vae_to_ldm

ARCHS = ["sd1", "sd2", "sdxl", "sdxl_refiner"]
CPU = torch.device("cpu")


@functools.cache
def _tiny(arch: str) -> TinyCheckpoint:
    return tiny_checkpoint(arch)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One .safetensors per tiny architecture (written lazily, once per module)."""
    root = tmp_path_factory.mktemp("ckpt")

    class Files(dict):
        def __missing__(self, arch: str) -> Path:
            self[arch] = save_state_dict(_tiny(arch).state_dict, root / f"{arch}.safetensors")
            return self[arch]

    return Files()


@functools.cache
def _loaded(path: Path):
    return load_checkpoint(path, CPU, torch.float32)


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.state_dict())


# -- detection -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_each_tiny_architecture_is_detected(arch):
    tc = _tiny(arch)
    cfg = detect_model(tc.state_dict, f"{arch}.safetensors")
    assert (cfg.arch, cfg.prediction) == (arch, tc.prediction)
    src = tc.unet_config
    assert cfg.unet["block_out_channels"] == list(src["block_out_channels"])
    assert cfg.unet["layers_per_block"] == src["layers_per_block"]
    assert cfg.unet["cross_attention_dim"] == src["cross_attention_dim"]
    assert cfg.unet["use_linear_projection"] == src["use_linear_projection"]
    assert cfg.unet["down_block_types"] == list(src["down_block_types"])
    assert cfg.unet.get("projection_class_embeddings_input_dim") == src.get("projection_class_embeddings_input_dim")
    # head counts matter only where there is attention; there they must be the source model's
    heads = cfg.unet["attention_head_dim"]
    src_heads = src["attention_head_dim"]
    for level, kind in enumerate(src["down_block_types"]):
        if kind.startswith("CrossAttn"):
            got = heads if isinstance(heads, int) else heads[level]
            want = src_heads if isinstance(src_heads, int) else src_heads[level]
            assert got == want, f"level {level}"
    assert cfg.latent_scale == (0.13025 if arch.startswith("sdxl") else 0.18215)
    assert cfg.vae["block_out_channels"] == list(TINY_VAE["block_out_channels"])
    assert cfg.vae["latent_channels"] == 4
    for text, want in zip(cfg.text, tc.text_configs, strict=True):
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act"):
            assert text.config[key] == want[key], key


def test_sd2_without_the_v_marker_is_eps_and_v_pred_key_means_v():
    sd = dict(_tiny("sd2").state_dict)
    marker = UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
    assert detect_model(sd, "sd2").prediction == "v"
    sd[marker] = torch.zeros_like(sd[marker])
    assert detect_model(sd, "sd2").prediction == "eps"
    xl = dict(_tiny("sdxl").state_dict)
    assert detect_model(xl, "xl").prediction == "eps"
    xl["v_pred"] = torch.tensor([])
    assert detect_model(xl, "xl").prediction == "v"


def _meta_checkpoint(arch: str) -> dict[str, torch.Tensor]:
    """A real-size single-file state dict of meta tensors (shapes only), built from the released configs."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    sd1 = {
        "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280, 1280),
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    }
    unets = {
        "sd1": sd1,
        "sd2": {**sd1, "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20),
                "use_linear_projection": True},
        "sdxl": {
            "layers_per_block": 2,
            "block_out_channels": (320, 640, 1280),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "transformer_layers_per_block": (1, 2, 10),
            "cross_attention_dim": 2048,
            "attention_head_dim": (5, 10, 20),
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
        },
        "sdxl_refiner": {
            "layers_per_block": 2,
            "block_out_channels": (384, 768, 1536, 1536),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "transformer_layers_per_block": 4,
            "cross_attention_dim": 1280,
            "attention_head_dim": (6, 12, 24, 24),
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2560,
        },
    }
    vae_cfg = {
        "block_out_channels": (128, 256, 512, 512),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 2,
    }
    clip = {"vocab_size": 49408, "max_position_embeddings": 77}
    clip_l = CLIPTextConfig(**clip, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, hidden_act="quick_gelu")
    clip_h = CLIPTextConfig(**clip, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                            num_attention_heads=16, hidden_act="gelu")
    clip_g = CLIPTextConfig(**clip, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                            num_attention_heads=20, hidden_act="gelu", projection_dim=1280)
    with init_empty_weights(include_buffers=True):
        unet = UNet2DConditionModel(**unets[arch])
        vae = AutoencoderKL(**vae_cfg)
        texts = {
            "sd1": [(CLIPTextModel(clip_l), "cond_stage_model.transformer.", "hf")],
            "sd2": [(CLIPTextModel(clip_h), "cond_stage_model.model.", "oc")],
            "sdxl": [
                (CLIPTextModel(clip_l), "conditioner.embedders.0.transformer.", "hf"),
                (CLIPTextModelWithProjection(clip_g), "conditioner.embedders.1.model.", "oc"),
            ],
            "sdxl_refiner": [(CLIPTextModelWithProjection(clip_g), "conditioner.embedders.0.model.", "oc")],
        }[arch]
    sd = unet_to_ldm(unet.state_dict(), unets[arch], UNET_PREFIX)
    sd.update(vae_to_ldm(vae.state_dict(), vae_cfg, VAE_PREFIX))
    for model, prefix, layout in texts:
        hf = hf_text_state_dict(model)
        if layout == "hf":
            sd.update(clip_l_to_ldm(hf, prefix, position_ids=False))
        else:
            sd.update(open_clip_to_ldm(hf, prefix, width=model.config.hidden_size))
    return sd


@pytest.mark.parametrize(
    ("arch", "heads", "layers", "adm", "text_heads"),
    [
        ("sd1", 8, 1, None, [12]),
        ("sd2", [5, 10, 20, 20], 1, None, [16]),
        ("sdxl", [5, 10, 20], [10, 2, 10], 2816, [12, 20]),
        ("sdxl_refiner", [6, 12, 24, 24], 4, 2560, [20]),
    ],
)
def test_real_sized_layouts_give_the_released_configs(arch, heads, layers, adm, text_heads):
    cfg = detect_model(_meta_checkpoint(arch), f"{arch}-full.safetensors")
    assert cfg.arch == arch
    assert cfg.unet["attention_head_dim"] == heads
    # levels without attention carry the middle block's depth (diffusers reads the last entry for the middle)
    assert cfg.unet["transformer_layers_per_block"] == layers
    assert cfg.unet.get("projection_class_embeddings_input_dim") == adm
    assert cfg.unet["norm_num_groups"] == 32 and cfg.vae["norm_num_groups"] == 32
    assert [t.config["num_attention_heads"] for t in cfg.text] == text_heads
    assert cfg.vae["block_out_channels"] == [128, 256, 512, 512]
    if arch == "sd2":
        assert cfg.text[0].config["num_hidden_layers"] == 24  # all layers kept: CLIPSetLastLayer picks one
    if arch.startswith("sdxl"):
        assert cfg.pooled_dim == 1280


# -- loading ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_loaded_weights_are_the_files_tensors(arch, files):
    tc = _tiny(arch)
    loaded = _loaded(files[arch])
    sd = read_state_dict(files[arch])
    unet = _params(loaded.unet.module)
    assert len(loaded.unet.param_of_ldm) == len(unet)
    for ldm, name in loaded.unet.param_of_ldm.items():
        assert torch.equal(unet[name], sd[UNET_PREFIX + ldm]), ldm
    vae = _params(loaded.vae.module)
    for ldm, name in loaded.vae.param_of_ldm.items():
        assert torch.equal(vae[name].flatten(), sd[VAE_PREFIX + ldm].flatten()), ldm  # LDM attention is 1x1 conv
    assert len(loaded.text.modules) == len(tc.text_encoders)
    for module, source in zip(loaded.text.modules, tc.text_encoders, strict=True):
        got, want = _params(module), _params(source)
        assert got.keys() == want.keys()
        for name in got:
            assert torch.equal(got[name], want[name]), name
    assert loaded.size_bytes == loaded.unet.size_bytes + loaded.text.size_bytes + loaded.vae.size_bytes > 0


def test_param_names_agree_with_diffusers_converters():
    """The LDM -> parameter table (LoRA, key checks) points at the very tensors diffusers' converters move."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    sd = _tiny("sdxl").state_dict
    cfg = detect_model(sd, "sdxl")
    loaded = _loaded_from_dict("sdxl")
    converted = convert_ldm_unet_checkpoint(sd, cfg.unet)
    for ldm, name in loaded.unet.param_of_ldm.items():
        assert converted[name].data_ptr() == sd[UNET_PREFIX + ldm].data_ptr(), ldm
    converted = convert_ldm_vae_checkpoint(sd, cfg.vae)
    for ldm, name in loaded.vae.param_of_ldm.items():
        assert converted[name].data_ptr() == sd[VAE_PREFIX + ldm].data_ptr(), ldm
    # open_clip: q/k/v are thirds of the fused in_proj
    names = open_clip_ldm_names(["text_model.encoder.layers.1.self_attn.k_proj.weight", "text_projection.weight"])
    assert names == {
        "text_model.encoder.layers.1.self_attn.k_proj.weight": ("transformer.resblocks.1.attn.in_proj_weight", 1),
        "text_projection.weight": ("text_projection", None),
    }


@functools.cache
def _loaded_from_dict(arch: str):
    import tempfile

    path = Path(tempfile.mkdtemp()) / f"{arch}.safetensors"
    return load_checkpoint(save_state_dict(_tiny(arch).state_dict, path), CPU, torch.float32)


def test_ckpt_loads_the_same_as_safetensors(tmp_path, files):
    ckpt = save_state_dict(_tiny("sd1").state_dict, tmp_path / "sd1.ckpt")  # {"state_dict": ..., "global_step": 0}
    a, b = _loaded(files["sd1"]), load_checkpoint(ckpt, CPU, torch.float32)
    for x, y in [(a.unet.module, b.unet.module), (a.vae.module, b.vae.module), (a.text.modules[0], b.text.modules[0])]:
        px, py = _params(x), _params(y)
        assert px.keys() == py.keys()
        assert all(torch.equal(px[k], py[k]) for k in px)


def test_half_precision_file_loads_in_the_dtype_asked_for(tmp_path):
    path = save_state_dict(_tiny("sd1").state_dict, tmp_path / "half.safetensors", dtype=torch.float16)
    loaded = load_checkpoint(path, CPU, torch.float32)
    assert loaded.unet.dtype == loaded.vae.dtype == loaded.text.modules[0].dtype == torch.float32
    sd = read_state_dict(path)
    name = loaded.unet.param_of_ldm["out.2.weight"]
    assert torch.equal(loaded.unet.module.get_parameter(name), sd[UNET_PREFIX + "out.2.weight"].float())


def test_old_sd1_clip_keys_without_text_model_load(tmp_path):
    old = "cond_stage_model.transformer."
    sd = {k.replace(old + "text_model.", old): v for k, v in _tiny("sd1").state_dict.items()}
    loaded = load_checkpoint(save_state_dict(sd, tmp_path / "old.safetensors"), CPU, torch.float32)
    want = _params(_tiny("sd1").text_encoders[0])
    assert all(torch.equal(v, want[k]) for k, v in _params(loaded.text.modules[0]).items())


# -- refusals --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",  # only the key check sees it
        "model.diffusion_model.out.2.weight",  # detection reads this one
        "first_stage_model.decoder.up.0.block.1.conv2.bias",
        "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.weight",
    ],
)
def test_a_missing_key_is_refused_by_name(tmp_path, key):
    sd = dict(_tiny("sd1").state_dict)
    del sd[key]
    path = save_state_dict(sd, tmp_path / "broken.safetensors")
    with pytest.raises(ModelLoadError) as err:
        load_checkpoint(path, CPU, torch.float32)
    assert key in str(err.value) and "broken.safetensors" in str(err.value)


def test_missing_open_clip_key_is_refused_by_name(tmp_path):
    sd = dict(_tiny("sdxl").state_dict)
    key = "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight"
    del sd[key]
    with pytest.raises(ModelLoadError, match=key.replace(".", r"\.")):
        load_checkpoint(save_state_dict(sd, tmp_path / "xl.safetensors"), CPU, torch.float32)


def test_a_wrong_shape_is_refused_with_the_parameter(tmp_path):
    sd = dict(_tiny("sd1").state_dict)
    key = UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    sd[key] = torch.zeros(3, 3)
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_checkpoint(save_state_dict(sd, tmp_path / "shape.safetensors"), CPU, torch.float32)


def test_a_file_of_random_tensors_is_refused(tmp_path):
    path = save_state_dict({"foo.weight": torch.randn(4, 4), "bar": torch.randn(3)}, tmp_path / "random.safetensors")
    with pytest.raises(ModelLoadError) as err:
        load_checkpoint(path, CPU, torch.float32)
    message = str(err.value)
    assert "random.safetensors" in message and "no UNet keys with prefix 'model.diffusion_model.'" in message
    with pytest.raises(ModelLoadError, match="no VAE keys"):
        load_vae(path, CPU, torch.float32)


class NotAWeight:
    """Pickled by reference: loading it would need to import and build this class."""

    def __init__(self) -> None:
        self.payload = "code would run here"


def test_a_pickle_with_more_than_weights_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "callback": NotAWeight()}, path)
    with pytest.raises(ModelLoadError) as err:
        read_state_dict(path)
    assert "evil.ckpt" in str(err.value) and "refused" in str(err.value)


def test_unreadable_and_unknown_files_are_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="bad.safetensors"):
        read_state_dict(bad)
    with pytest.raises(ModelLoadError, match="no such model file"):
        read_state_dict(tmp_path / "absent.safetensors")
    other = tmp_path / "model.onnx"
    other.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unknown model file type"):
        read_state_dict(other)


def test_inpainting_unet_is_refused_clearly():
    sd = dict(_tiny("sd1").state_dict)
    key = UNET_PREFIX + "input_blocks.0.0.weight"
    sd[key] = torch.zeros(sd[key].shape[0], 9, 3, 3)
    with pytest.raises(ModelLoadError, match="9 input"):
        detect_model(sd, "inpaint.safetensors")


# -- bare component files --------------------------------------------------------------------------------------


def test_bare_unet_files_in_ldm_and_diffusers_layouts(tmp_path):
    tc = _tiny("sdxl")
    ldm = save_state_dict(unet_to_ldm(tc.unet.state_dict(), tc.unet_config), tmp_path / "unet_ldm.safetensors")
    diffusers = save_state_dict(tc.unet.state_dict(), tmp_path / "unet_diffusers.safetensors")
    want = _params(tc.unet)
    for path in (ldm, diffusers):
        model = load_diffusion_model(path, CPU, torch.float32)
        assert (model.arch, model.prediction) == ("sdxl", "eps")
        got = _params(model.module)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
        assert model.param_of_ldm["label_emb.0.0.weight"] == "add_embedding.linear_1.weight"


def test_bare_refiner_unet_is_told_from_base_by_its_adm_width(tmp_path):
    tc = _tiny("sdxl_refiner")
    path = save_state_dict(unet_to_ldm(tc.unet.state_dict(), tc.unet_config), tmp_path / "refiner.safetensors")
    assert load_diffusion_model(path, CPU, torch.float32).arch == "sdxl_refiner"


def test_bare_vae_files_in_ldm_and_diffusers_layouts(tmp_path):
    from .tiny_models import make_vae

    ldm = build_vae_file(tmp_path / "vae.safetensors", seed=5)
    diffusers = save_state_dict(make_vae(5).state_dict(), tmp_path / "vae_diffusers.safetensors")
    want = _params(make_vae(5))
    for path in (ldm, diffusers):
        vae = load_vae(path, CPU, torch.float32)
        got = _params(vae.module)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


@pytest.mark.parametrize(
    ("kind", "layout", "arch", "config", "projection"),
    [
        ("clip_l", "hf", "sd1", TINY_CLIP_L, False),
        ("open_clip_g", "hf", "sdxl_refiner", TINY_OPEN_CLIP_G, True),
        ("open_clip_h", "open_clip", "sd2", TINY_OPEN_CLIP_H, False),
    ],
)
def test_standalone_text_encoder_files(tmp_path, kind, layout, arch, config, projection):
    from .tiny_models import make_text_encoder

    path = build_text_encoder_file(tmp_path / f"{kind}.safetensors", kind, layout=layout, seed=7)
    encoder = load_text_encoder(path, "stable_diffusion", CPU, torch.float32)
    assert encoder.arch == arch
    source = make_text_encoder(config, 7, projection=projection)
    got, want = _params(encoder.modules[0]), _params(source)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert encoder.modules[0].config.hidden_act == config["hidden_act"]
    with pytest.raises(ModelLoadError, match="not supported"):
        load_text_encoder(path, "sd3", CPU, torch.float32)


def test_clip_l_file_encodes_like_its_source(tmp_path):
    from .tiny_models import make_text_encoder

    encoder = load_text_encoder(build_clip_l_file(tmp_path / "clip_l.safetensors"), "stable_diffusion", CPU,
                                torch.float32)
    source = make_text_encoder(TINY_CLIP_L, 2)
    ids = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73])
    with torch.no_grad():
        assert torch.equal(encoder.modules[0](input_ids=ids).last_hidden_state, source(input_ids=ids).last_hidden_state)


# -- the UNet --------------------------------------------------------------------------------------------------


def test_sd1_unet_forward_matches_the_source_model(files):
    tc, model = _tiny("sd1"), _loaded(files["sd1"]).unet
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([999.0, 10.5]), torch.randn(1, 77, 32)
    assert model.extra_conds({}, (8, 8)) == {}
    out = model(x, t, ctx)
    assert out.shape == (2, 4, 8, 8) and out.dtype == torch.float32
    with torch.no_grad():
        want = tc.unet(x, t, encoder_hidden_states=ctx.expand(2, -1, -1)).sample
    torch.testing.assert_close(out, want)
    assert (model.prediction, model.latent_scale, model.latent_channels) == ("eps", 0.18215, 4)


def test_sdxl_unet_forward_with_size_conditioning(files):
    tc, model = _tiny("sdxl"), _loaded(files["sdxl"]).unet
    pooled = torch.randn(1, 48)
    extra = model.extra_conds({"pooled_output": pooled}, (8, 12))
    assert extra["time_ids"].tolist() == [[64.0, 96.0, 0.0, 0.0, 64.0, 96.0]]  # h, w from the latent x 8
    sized = {"pooled_output": pooled, "height": 1024, "width": 768, "crop_h": 8, "crop_w": 16, "target_width": 512}
    assert model.extra_conds(sized, (8, 12))["time_ids"].tolist() == [[1024.0, 768.0, 8.0, 16.0, 1024.0, 512.0]]
    x, t, ctx = torch.randn(2, 4, 8, 12), torch.tensor([500.0, 500.0]), torch.randn(1, 77, 80)
    out = model(x, t, ctx, **extra)
    assert out.shape == (2, 4, 8, 12)
    added = {"text_embeds": pooled.expand(2, -1), "time_ids": extra["time_ids"].expand(2, -1)}
    with torch.no_grad():
        want = tc.unet(x, t, encoder_hidden_states=ctx.expand(2, -1, -1), added_cond_kwargs=added).sample
    torch.testing.assert_close(out, want)
    other = model(x, t, ctx, **model.extra_conds(sized, (8, 12)))
    assert not torch.allclose(out, other)  # the size numbers reach the network
    with pytest.raises(ValueError, match="pooled_output"):
        model.extra_conds({}, (8, 8))
    with pytest.raises(ValueError, match="width 48"):
        model.extra_conds({"pooled_output": torch.randn(1, 32)}, (8, 8))


def test_refiner_aesthetic_score_defaults(files):
    model = _loaded(files["sdxl_refiner"]).unet
    pooled = {"pooled_output": torch.randn(1, 48)}
    assert model.extra_conds(pooled, (8, 8))["time_ids"].tolist() == [[64.0, 64.0, 0.0, 0.0, 6.0]]
    assert model.extra_conds(pooled, (8, 8), prompt_type="negative")["time_ids"].tolist() == [[64, 64, 0, 0, 2.5]]


def test_alphas_cumprod_is_the_scaled_linear_schedule(files):
    acp = _loaded(files["sd1"]).unet.alphas_cumprod
    assert acp.shape == (1000,) and acp.dtype == torch.float32
    assert acp[0].item() == pytest.approx(1 - 0.00085, rel=1e-6)
    assert acp[-1].item() == pytest.approx(0.0047, abs=1e-4)  # SD's known final value


# -- the VAE ---------------------------------------------------------------------------------------------------


def test_vae_round_trip_shapes_and_range(files):
    tc, vae = _tiny("sd1"), _loaded(files["sd1"]).vae
    pixels = torch.rand(2, 64, 64, 3)
    latent = vae.encode(pixels)
    assert latent.shape == (2, 4, 8, 8) and latent.dtype == torch.float32 and latent.device.type == "cpu"
    with torch.no_grad():
        want = tc.vae.encode(pixels.movedim(-1, 1) * 2 - 1).latent_dist.mean
    torch.testing.assert_close(latent, want)  # the mean: encoding is deterministic
    image = vae.decode(latent)
    assert image.shape == (2, 64, 64, 3) and image.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(image, ((tc.vae.decode(latent).sample + 1) / 2).clamp(0, 1).movedim(1, -1))
    # sizes that are not multiples of 8 are centre-cropped like ComfyUI's VAEEncode
    odd = torch.rand(1, 70, 66, 4)
    torch.testing.assert_close(vae.encode(odd), vae.encode(odd[:, 3:67, 1:65, :3]))


def test_half_precision_vae_that_overflows_decodes_in_float32(tmp_path, caplog):
    from .tiny_models import make_vae

    source = make_vae(3)
    with torch.no_grad():  # weights that fit float16, activations that do not (max 65504): as the SDXL VAE does
        weight = source.decoder.conv_in.weight
        weight.mul_(30000 / weight.abs().max())
    source = source.half().float()  # exactly representable in float16, so both loads hold the same weights
    path = save_state_dict(vae_to_ldm(source.state_dict(), TINY_VAE), tmp_path / "hot_vae.safetensors")
    vae = load_vae(path, CPU, torch.float16)
    assert vae.dtype == torch.float16
    latent = torch.randn(1, 4, 2, 2)
    image = vae.decode(latent)
    assert vae.upcast and vae.dtype == torch.float32  # the float16 pass was not finite
    assert "float32" in caplog.text
    assert torch.isfinite(image).all() and image.shape == (1, 16, 16, 3)
    torch.testing.assert_close(image, load_vae(path, CPU, torch.float32).decode(latent))


def test_half_precision_vae_that_stays_finite_keeps_its_dtype(tmp_path):
    path = build_vae_file(tmp_path / "vae.safetensors")
    vae = load_vae(path, CPU, torch.float16)
    image = vae.decode(torch.randn(1, 4, 2, 2))
    assert torch.isfinite(image).all() and vae.dtype == torch.float16 and not vae.upcast


def test_configs_rules_for_widths_the_weights_do_not_encode():
    assert [configs.heads_for(c) for c in (320, 640, 1280, 384, 32, 64, 128)] == [5, 10, 20, 6, 1, 1, 2]
    assert [configs.text_heads_for(h) for h in (768, 1024, 1280, 32, 48)] == [12, 16, 20, 2, 2]
    assert configs.groups_for([128, 256, 512]) == 32 and configs.groups_for([16, 32]) == 16

"""The tiny fixture files really have the single-file layout: diffusers' own single-file readers give back every
tensor of the modules they were written from, key for key and bit for bit."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from .tiny_checkpoints import (
    TEXT_PREFIXES,
    UNET_CONFIGS,
    UNET_PREFIX,
    VAE_PREFIX,
    build_clip_l_file,
    build_sd1_checkpoint,
    build_sd2_checkpoint,
    build_sdxl_checkpoint,
    build_sdxl_refiner_checkpoint,
    build_text_encoder_file,
    build_unet_file,
    build_vae_file,
    tiny_checkpoint,
)
from .tiny_configs import LDM_UNET_PARAMS, LDM_VAE_DDCONFIG, TINY_SD2_UNET, TINY_VAE
from .tiny_ldm_keys import hf_text_state_dict, unet_key_map
from .tiny_lora import build_lora_file, lora_deltas, lora_state_dict, lora_targets
from .tiny_models import SD2_V_MARKER, make_unet

BUILDERS = {
    "sd1": build_sd1_checkpoint,
    "sd2": build_sd2_checkpoint,
    "sdxl": build_sdxl_checkpoint,
    "sdxl_refiner": build_sdxl_refiner_checkpoint,
}


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: str) -> None:
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not extra, f"{what}: missing {missing[:5]}, unexpected {extra[:5]}"
    differ = [k for k in want if got[k].shape != want[k].shape or not torch.equal(got[k], want[k])]
    assert not differ, f"{what}: tensors differ at {differ[:5]}"


def read_back(ck, sd: dict[str, torch.Tensor]) -> None:
    """Convert a written single-file dict with diffusers' converters and compare with the source modules."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    unet = convert_ldm_unet_checkpoint(sd, dict(ck.unet.config))
    assert_same_tensors(unet, ck.unet.state_dict(), f"{ck.arch} unet")
    vae = convert_ldm_vae_checkpoint(sd, dict(ck.vae.config))
    assert_same_tensors(vae, ck.vae.state_dict(), f"{ck.arch} vae")
    for model, (prefix, layout) in zip(ck.text_encoders, TEXT_PREFIXES[ck.arch], strict=True):
        if layout == "hf":
            text = convert_ldm_clip_checkpoint({k: v for k, v in sd.items() if k.startswith(prefix)})
            # the position_ids buffer real SD1/SDXL files carry; transformers 5 no longer saves it
            assert torch.equal(text.pop("text_model.embeddings.position_ids"), torch.arange(77)[None])
        else:
            text = convert_open_clip_checkpoint(model, sd, prefix=prefix)
        assert_same_tensors(text, hf_text_state_dict(model), f"{ck.arch} text {prefix}")


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
def test_single_file_round_trip(arch, tmp_path):
    path = BUILDERS[arch](tmp_path / f"{arch}.safetensors")
    sd = load_file(path)
    ck = tiny_checkpoint(arch)
    assert_same_tensors(sd, ck.state_dict, f"{arch} file")
    read_back(ck, sd)
    # nothing in the file is outside the known components (plus SD1/SD2's DDPM schedule buffers)
    prefixes = (UNET_PREFIX, VAE_PREFIX, *(p for p, _ in TEXT_PREFIXES[arch]))
    stray = {k for k in sd if not k.startswith(prefixes)}
    assert stray == (
        set() if arch.startswith("sdxl") else {k for k in stray if "cumprod" in k or "betas" in k or "posterior" in k}
    ), stray
    assert path.stat().st_size < 64_000_000  # tiny: a few MB of UNet, the rest is the real vocabulary


def test_ckpt_variant_loads_weights_only(tmp_path):
    path = build_sd1_checkpoint(tmp_path / "sd1.ckpt")
    data = torch.load(path, map_location="cpu", weights_only=True)
    assert_same_tensors(data["state_dict"], tiny_checkpoint("sd1").state_dict, "ckpt")


def test_fp16_and_legacy_clip_variants(tmp_path):
    sd = load_file(build_sd1_checkpoint(tmp_path / "a.safetensors", dtype=torch.float16, legacy_clip_keys=True))
    ref = tiny_checkpoint("sd1").state_dict
    key = "cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight"
    assert sd[key].dtype == torch.float16
    assert torch.equal(sd[key], ref[key.replace("transformer.", "transformer.text_model.")].half())
    assert not any(".text_model." in k for k in sd)
    assert sd["cond_stage_model.transformer.embeddings.position_ids"].dtype == torch.int64
    assert len(sd) == len(ref)


def test_real_key_names_and_shapes():
    """Spot checks of names/ranks every real release has (what ComfyUI and diffusers key their detection on)."""
    sd1 = tiny_checkpoint("sd1").state_dict
    assert sd1[UNET_PREFIX + "input_blocks.1.1.proj_in.weight"].ndim == 4  # SD1: conv 1x1 projection
    assert UNET_PREFIX + "output_blocks.11.0.skip_connection.weight" in sd1
    assert sd1[UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape[1] == 32
    assert sd1[VAE_PREFIX + "encoder.mid.attn_1.q.weight"].ndim == 4
    assert sd1["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"].shape[0] == 49408

    sd2 = tiny_checkpoint("sd2").state_dict
    assert sd2[UNET_PREFIX + "input_blocks.1.1.proj_in.weight"].ndim == 2  # SD2: linear projection
    w = sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"]
    assert w.shape == (3 * 48, 48)
    assert sd2["cond_stage_model.model.positional_embedding"].shape == (77, 48)

    xl = tiny_checkpoint("sdxl").state_dict
    assert xl[UNET_PREFIX + "label_emb.0.0.weight"].shape[1] == 48 + 6 * 256
    assert UNET_PREFIX + "input_blocks.1.1.proj_in.weight" not in xl  # no attention on SDXL's first level
    assert UNET_PREFIX + "input_blocks.7.1.transformer_blocks.1.attn1.to_q.weight" in xl  # depth 2 on level 2
    assert xl["conditioner.embedders.1.model.text_projection"].shape == (48, 48)
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in xl

    ref = tiny_checkpoint("sdxl_refiner").state_dict
    assert ref[UNET_PREFIX + "label_emb.0.0.weight"].shape[1] == 48 + 5 * 256
    assert "conditioner.embedders.0.model.ln_final.weight" in ref
    assert not any(k.startswith("conditioner.embedders.1.") for k in ref)


def test_v_prediction_markers():
    """SD2-v is told apart by ComfyUI's heuristic (std of one norm bias > 0.09); SDXL-v by a "v_pred" key."""
    sd2 = tiny_checkpoint("sd2")  # 2.1 768-v is the default
    assert sd2.prediction == "v"
    assert sd2.state_dict[UNET_PREFIX + SD2_V_MARKER].std(unbiased=False) > 0.09
    eps_unet = make_unet(TINY_SD2_UNET, v_marker=False).state_dict()
    eps_key = {ldm: d for d, ldm in unet_key_map(TINY_SD2_UNET, eps_unet).items()}[SD2_V_MARKER]
    assert eps_unet[eps_key].std(unbiased=False) < 0.09
    assert "v_pred" in tiny_checkpoint("sdxl", v_prediction=True).state_dict
    assert not any("v_pred" in k for k in sd2.state_dict)
    with pytest.raises(ValueError, match="sd1"):
        tiny_checkpoint("sd1", v_prediction=True)


def test_seeds_are_deterministic_and_distinct():
    a, b, c = (tiny_checkpoint("sd1", seed=s).state_dict for s in (0, 0, 1))
    key = UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(a[key], b[key])
    assert not torch.equal(a[key], c[key])


def test_standalone_files(tmp_path):
    ck = tiny_checkpoint("sd1")
    vae = load_file(build_vae_file(tmp_path / "vae.safetensors"))
    assert_same_tensors(
        vae, {k[len(VAE_PREFIX) :]: v for k, v in ck.state_dict.items() if k.startswith(VAE_PREFIX)}, "vae file"
    )
    unet = load_file(build_unet_file(tmp_path / "unet.safetensors", "sd1"))
    assert_same_tensors(
        unet, {k[len(UNET_PREFIX) :]: v for k, v in ck.state_dict.items() if k.startswith(UNET_PREFIX)}, "unet file"
    )
    clip = load_file(build_clip_l_file(tmp_path / "clip_l.safetensors"))
    assert_same_tensors(clip, hf_text_state_dict(ck.text_encoders[0]), "clip_l file")
    g = load_file(build_text_encoder_file(tmp_path / "g.safetensors", "open_clip_g", layout="open_clip"))
    assert g["text_projection"].shape == (48, 48) and "transformer.resblocks.2.attn.in_proj_bias" in g
    with pytest.raises(ValueError, match="sd9"):
        build_unet_file(tmp_path / "x.safetensors", "sd9")


def _module_of_diffusers_lora_key(key: str) -> tuple[str, str]:
    """(component, module path) named by a key of diffusers' converted LoRA dict."""
    component, _, rest = key.partition(".")
    for suffix in (".lora_linear_layer.down.weight", ".lora.down.weight", "_lora.down.weight"):
        if rest.endswith(suffix):
            rest = rest[: -len(suffix)]
    rest = rest.replace(".processor.", ".")
    if component == "unet":
        return component, rest + ".0" if rest.endswith("to_out") else rest
    for short, hf in (("to_q", "q_proj"), ("to_k", "k_proj"), ("to_v", "v_proj"), ("to_out", "out_proj")):
        if rest.endswith("self_attn." + short):
            rest = rest[: -len(short)] + hf
    return component, rest


@pytest.mark.parametrize(("arch", "naming"), [("sd1", None), ("sd1", "ldm"), ("sdxl", None)])
def test_lora_keys_are_what_diffusers_reads_as_kohya(arch, naming):
    """diffusers' own kohya-LoRA reader sends every key to the very weight our target map names."""
    from diffusers.loaders.lora_conversion_utils import (
        _convert_non_diffusers_lora_to_diffusers,
        _maybe_map_sgm_blocks_to_diffusers,
    )

    ck = tiny_checkpoint(arch)
    lora = lora_state_dict(arch, unet_naming=naming)
    names = {k[: -len(".lora_down.weight")] for k in lora if k.endswith(".lora_down.weight")}
    assert all(n + ".alpha" in lora and n + ".lora_up.weight" in lora for n in names)
    assert any(
        n.startswith("lora_unet_down_blocks_" if arch == "sd1" and naming is None else "lora_unet_input_blocks_")
        for n in names
    )
    targets = lora_targets(arch, unet_naming=naming)
    assert set(targets) == names
    d_of_ldm = {ldm: d for d, ldm in unet_key_map(ck.unet_config, ck.unet.state_dict()).items()}
    text_names = ["text_encoder", "text_encoder_2"]

    if any("input_blocks" in n for n in names):
        lora = _maybe_map_sgm_blocks_to_diffusers(dict(lora), ck.unet.config)
    converted, alphas = _convert_non_diffusers_lora_to_diffusers(dict(lora))
    assert set(alphas.values()) == {2.0}  # rank 4, alpha rank / 2
    got = {}
    for key in converted:
        if key.endswith("down.weight"):
            component, module = _module_of_diffusers_lora_key(key)
            got[(component, module)] = converted[key].shape
    want = {}
    for name, target in targets.items():
        if target.startswith(("te1.", "te2.", "text_model.")):
            several = target.startswith(("te1.", "te2."))
            index = int(target[2]) - 1 if several else 0
            hf = target.split(".", 1)[1] if several else target
            assert hf in hf_text_state_dict(ck.text_encoders[index]), hf
            want[(text_names[index], hf[: -len(".weight")])] = name
        else:
            want[("unet", d_of_ldm[target][: -len(".weight")])] = name
    assert set(got) == set(want)


def test_lora_changes_the_model_by_the_stated_delta(tmp_path):
    """The file is a trained-looking LoRA: applying lora_deltas changes UNet and text outputs, alpha scales it."""
    path = build_lora_file(tmp_path / "tiny_lora.safetensors", "sd1")
    lora = load_file(path)
    assert torch.equal(lora["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"], torch.tensor(2.0))
    deltas = lora_deltas(lora, "sd1", strength=0.5)
    assert len(deltas) == len(lora) // 3

    # same seed, other naming -> same weights patched by the same amounts
    ldm_deltas = lora_deltas(lora_state_dict("sd1", unet_naming="ldm"), "sd1", strength=0.5)
    assert set(ldm_deltas) == set(deltas) and all(torch.equal(ldm_deltas[k], deltas[k]) for k in deltas)

    ck = tiny_checkpoint("sd1")
    d_of_ldm = {ldm: d for d, ldm in unet_key_map(ck.unet_config, ck.unet.state_dict()).items()}
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73])
    with torch.no_grad():
        context = ck.text_encoders[0](ids).last_hidden_state  # [1, 77, 32]
        before = ck.unet(x, torch.tensor([500.0]), context).sample
        for key, delta in deltas.items():
            if key.startswith("text_model."):
                ck.text_encoders[0].get_parameter(key.removeprefix("text_model.")).add_(delta)
            else:
                ck.unet.get_parameter(d_of_ldm[key]).add_(delta)
        patched_context = ck.text_encoders[0](ids).last_hidden_state
        after = ck.unet(x, torch.tensor([500.0]), patched_context).sample
    assert (patched_context - context).abs().max() > 1e-2
    assert (after - before).abs().mean() > 1e-3 * before.abs().mean()


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
def test_ldm_yaml_params_describe_the_same_unet(arch):
    """LDM_UNET_PARAMS, read by diffusers' LDM-yaml reader, give the diffusers config the fixtures are built from."""
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    original = {
        "model": {
            "params": {
                "unet_config": {"params": LDM_UNET_PARAMS[arch]},
                "first_stage_config": {"params": {"ddconfig": LDM_VAE_DDCONFIG}},
            }
        }
    }
    got = create_unet_diffusers_config_from_ldm(original, {})
    want = UNET_CONFIGS[arch]
    for key in (
        "down_block_types",
        "up_block_types",
        "block_out_channels",
        "layers_per_block",
        "cross_attention_dim",
        "use_linear_projection",
        "in_channels",
        "out_channels",
    ):
        assert (tuple(got[key]) if isinstance(got[key], list) else got[key]) == want[key], key
    assert tuple(got["block_out_channels"]) == want["block_out_channels"]
    heads = got["attention_head_dim"]
    assert (tuple(heads) if isinstance(heads, list) else heads) == want["attention_head_dim"]
    depth = got["transformer_layers_per_block"]
    want_depth = want.get("transformer_layers_per_block", 1)
    if isinstance(depth, list):  # sgm writes 0 for levels without attention; diffusers ignores those entries
        attn = [t.startswith("CrossAttn") for t in want["down_block_types"]]
        assert [d for d, a in zip(depth, attn, strict=True) if a] == [
            d for d, a in zip(want_depth, attn, strict=True) if a
        ]
    else:
        assert depth == want_depth
    # diffusers' reader only recognises SDXL's size conditioning at the real context widths (2048 / 1280)
    assert got["projection_class_embeddings_input_dim"] == want.get("projection_class_embeddings_input_dim")

    vae = create_vae_diffusers_config_from_ldm(original, {})
    for key in ("block_out_channels", "layers_per_block", "latent_channels", "in_channels", "out_channels"):
        assert (tuple(vae[key]) if isinstance(vae[key], list) else vae[key]) == TINY_VAE[key], key

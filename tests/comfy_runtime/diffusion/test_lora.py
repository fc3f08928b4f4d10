"""LoRA files: reading, matching to a model's weights, applying per run and restoring the base exactly.

The models are real (a tiny diffusers UNet, a tiny transformers CLIP text model) with random weights; the LoRA
files are written by the tests in the layouts trainers use (kohya LDM and diffusers names, peft, LyCORIS).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from comfygate.comfy_runtime.diffusion.errors import ModelFileNotFound, ModelLoadError
from comfygate.comfy_runtime.diffusion.lora import LoraFile, apply_loras, load_lora, patched

# -- a tiny UNet with the loader's LDM-name table ------------------------------------------------------------

_UNET_CONFIG = dict(
    sample_size=8, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64), layers_per_block=1,
    cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8,
)

# LDM key -> diffusers parameter, as checkpoints.py records it (input_blocks.1 = level 0's resnet + attention).
_ATTN = "down_blocks.0.attentions.0"
_PARAM_OF_LDM = {
    "input_blocks.1.0.in_layers.2.weight": "down_blocks.0.resnets.0.conv1.weight",  # 3x3 conv 32 -> 32
    "input_blocks.1.1.proj_in.weight": f"{_ATTN}.proj_in.weight",  # 1x1 conv 32 -> 32
    "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": f"{_ATTN}.transformer_blocks.0.attn1.to_q.weight",
    "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": f"{_ATTN}.transformer_blocks.0.attn2.to_k.weight",
    "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight":
        f"{_ATTN}.transformer_blocks.0.attn1.to_out.0.weight",
}
TO_Q = f"{_ATTN}.transformer_blocks.0.attn1.to_q.weight"
PROJ_IN = f"{_ATTN}.proj_in.weight"
CONV1 = "down_blocks.0.resnets.0.conv1.weight"


@dataclass(eq=False)
class TinyDiffusionModel:
    """The parts of DiffusionModel a LoRA needs: the diffusers module and the LDM-name table."""

    module: torch.nn.Module
    param_of_ldm: dict[str, str] = field(default_factory=lambda: dict(_PARAM_OF_LDM))

    def __call__(self, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        x, context = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 5, 32, generator=gen)
        with torch.no_grad():
            return self.module(x, torch.tensor([500.0]), context).sample


@pytest.fixture(scope="module")
def unet() -> TinyDiffusionModel:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return TinyDiffusionModel(UNet2DConditionModel(**_UNET_CONFIG).eval())


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def assert_unchanged(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    changed = [name for name, p in module.named_parameters() if not torch.equal(p, before[name])]
    assert changed == []


def lora_pair(out_features: int, in_features: int, rank: int = 4, *, seed: int, kernel: int | None = None,
              scale: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) of a random LoRA; conv-shaped (4-D) when ``kernel`` is given, as kohya writes LoCon."""
    gen = torch.Generator().manual_seed(seed)
    up = torch.randn(out_features, rank, generator=gen) * scale
    if kernel is None:
        return up, torch.randn(rank, in_features, generator=gen) * scale
    return up[:, :, None, None], torch.randn(rank, in_features, kernel, kernel, generator=gen) * scale


def write(tmp_path: Path, sd: dict[str, torch.Tensor], name: str = "lora") -> Path:
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(path))
    return path


def kohya(stem: str, up: torch.Tensor, down: torch.Tensor, alpha: float | None = None) -> dict[str, torch.Tensor]:
    sd = {f"{stem}.lora_up.weight": up, f"{stem}.lora_down.weight": down}
    if alpha is not None:
        sd[f"{stem}.alpha"] = torch.tensor(alpha)
    return sd


# -- reading files ---------------------------------------------------------------------------------------------

def test_kohya_file_is_grouped_per_weight(tmp_path):
    up, down = lora_pair(32, 32, seed=1)
    path = write(tmp_path, {**kohya("lora_unet_input_blocks_1_1_proj_in", up, down, 2.0),
                            **kohya("lora_te_text_model_encoder_layers_0_mlp_fc1", up, down)})
    lora = load_lora(path)
    assert isinstance(lora, LoraFile)
    assert sorted(e.stem for e in lora.entries) == ["lora_te_text_model_encoder_layers_0_mlp_fc1",
                                                    "lora_unet_input_blocks_1_1_proj_in"]
    assert lora.size_bytes == 2 * (up.numel() + down.numel()) * 4
    assert lora.unrecognised == ()


def test_file_without_lora_keys_is_refused_naming_it(tmp_path):
    path = write(tmp_path, {"model.diffusion_model.out.2.weight": torch.zeros(4, 32, 3, 3)}, "not_a_lora")
    with pytest.raises(ModelLoadError, match="not_a_lora.safetensors has no LoRA weights"):
        load_lora(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ModelFileNotFound, match="nothere"):
        load_lora(tmp_path / "nothere")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="cannot read LoRA file .*bad.safetensors"):
        load_lora(bad)


def test_pt_files_load_weights_only(tmp_path):
    up, down = lora_pair(32, 32, seed=2)
    good = tmp_path / "old.pt"
    torch.save(kohya("lora_unet_input_blocks_1_1_proj_in", up, down), good)
    assert [e.stem for e in load_lora(good).entries] == ["lora_unet_input_blocks_1_1_proj_in"]

    evil = tmp_path / "evil.pt"
    torch.save({"x.lora_up.weight": up, "payload": threading.Lock}, evil)  # a pickled class, not a tensor
    with pytest.raises(ModelLoadError, match="evil.pt"):
        load_lora(evil)


def test_incomplete_entry_and_unsupported_kinds_are_refused(tmp_path):
    up, _ = lora_pair(32, 32, seed=3)
    with pytest.raises(ModelLoadError, match="lora_unet_input_blocks_1_1_proj_in is incomplete.*no down matrix"):
        load_lora(write(tmp_path, {"lora_unet_input_blocks_1_1_proj_in.lora_up.weight": up}))
    with pytest.raises(ModelLoadError, match="OFT"):
        load_lora(write(tmp_path, {"lora_unet_input_blocks_1_1_proj_in.oft_blocks": torch.zeros(4, 8, 8)}, "oft"))


# -- matching and applying on the UNet --------------------------------------------------------------------

def test_lora_changes_output_and_restores_weights_bit_for_bit(unet, tmp_path):
    up, down = lora_pair(32, 32, seed=4)
    lora = load_lora(write(tmp_path, kohya("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q",
                                           up, down, alpha=2.0)))
    before, base_out = weights(unet.module), unet()
    with apply_loras(unet, [(lora, 0.75)]):
        patched_w = unet.module.get_parameter(TO_Q).detach().clone()
        lora_out = unet()
    # W' = W + strength * alpha / rank * up @ down  (rank 4)
    torch.testing.assert_close(patched_w, before[TO_Q] + 0.75 * 2.0 / 4 * (up @ down))
    assert not torch.allclose(lora_out, base_out, atol=1e-4)
    assert_unchanged(unet.module, before)
    assert torch.equal(unet(), base_out)


def test_strength_zero_patches_nothing(unet, tmp_path):
    up, down = lora_pair(32, 32, seed=5)
    lora = load_lora(write(tmp_path, kohya("lora_unet_input_blocks_1_1_proj_in", up, down)))
    before, base_out = weights(unet.module), unet()
    with apply_loras(unet, [(lora, 0.0)]):
        assert_unchanged(unet.module, before)
        assert torch.equal(unet(), base_out)


def test_conv_targets_locon_and_1x1(unet, tmp_path):
    """A 3x3 conv patched by a conv-shaped LoCon (and by one with a tucker mid), a 1x1 conv by a linear LoRA."""
    up3, down3 = lora_pair(32, 32, seed=6, kernel=3)
    mid = torch.randn(4, 4, 3, 3, generator=torch.Generator().manual_seed(7))
    up1, down1 = lora_pair(32, 32, seed=8)  # linear-shaped LoRA onto SD1's 1x1 conv proj_in
    plain = load_lora(write(tmp_path, {**kohya("lora_unet_input_blocks_1_0_in_layers_2", up3, down3),
                                       **kohya("lora_unet_input_blocks_1_1_proj_in", up1, down1)}, "a"))
    tucker = load_lora(write(tmp_path, {**kohya("lora_unet_input_blocks_1_0_in_layers_2", up3, down3[:, :, :1, :1]),
                                        "lora_unet_input_blocks_1_0_in_layers_2.lora_mid.weight": mid}, "b"))
    before = weights(unet.module)
    with apply_loras(unet, [(plain, 1.0)]):
        conv = unet.module.get_parameter(CONV1).detach().clone()
        proj = unet.module.get_parameter(PROJ_IN).detach().clone()
    expected_conv = (up3.flatten(1) @ down3.flatten(1)).reshape(32, 32, 3, 3)
    torch.testing.assert_close(conv - before[CONV1], expected_conv, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(proj - before[PROJ_IN], (up1 @ down1)[:, :, None, None], rtol=1e-4, atol=1e-5)

    with apply_loras(unet, [(tucker, 1.0)]):
        conv = unet.module.get_parameter(CONV1).detach().clone()
    # up (1x1) after mid (3x3) after down (1x1) is one 3x3 conv: out[o,i,h,w] = sum up[o,a] mid[a,b,h,w] down[b,i]
    expected = torch.einsum("oa,abhw,bi->oihw", up3.flatten(1), mid, down3[:, :, 0, 0])
    torch.testing.assert_close(conv - before[CONV1], expected, rtol=1e-4, atol=1e-5)
    assert_unchanged(unet.module, before)


def test_every_naming_reaches_the_same_weight(unet, tmp_path):
    """kohya LDM names, kohya diffusers names, peft, old diffusers attention processors, generic LDM names."""
    up, down = lora_pair(32, 32, seed=9)
    spellings = {
        "kohya_ldm": kohya("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_out_0", up, down),
        "kohya_diffusers": kohya("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
                                 up, down),
        "peft": {f"unet.{_ATTN}.transformer_blocks.0.attn1.to_out.0.lora_A.weight": down,
                 f"unet.{_ATTN}.transformer_blocks.0.attn1.to_out.0.lora_B.weight": up},
        "attn_processor": {f"unet.{_ATTN}.transformer_blocks.0.attn1.processor.to_out_lora.down.weight": down,
                           f"unet.{_ATTN}.transformer_blocks.0.attn1.processor.to_out_lora.up.weight": up},
        "generic_ldm": {"diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.lora_A.weight": down,
                        "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.lora_B.weight": up},
    }
    for name, sd in spellings.items():
        match = load_lora(write(tmp_path, sd, name)).patches_for(unet)
        assert [p.target for p in match.patches] == [f"{_ATTN}.transformer_blocks.0.attn1.to_out.0.weight"], name
        assert match.not_loaded == (), name


def test_unknown_keys_are_reported_not_silently_dropped(unet, tmp_path, caplog):
    up, down = lora_pair(32, 32, seed=10)
    te_up, te_down = lora_pair(32, 32, seed=11)
    path = write(tmp_path, {**kohya("lora_unet_input_blocks_1_1_proj_in", up, down),
                            **kohya("lora_unet_input_blocks_99_1_proj_in", up, down, alpha=4.0),
                            **kohya("lora_te_text_model_encoder_layers_0_mlp_fc1", te_up, te_down),
                            "some_trainer_step": torch.tensor(1000)}, "bogus")
    with caplog.at_level(logging.WARNING):
        lora = load_lora(path)
        match = lora.patches_for(unet)
    assert [p.target for p in match.patches] == [PROJ_IN]
    # the bogus UNet key is reported; text encoder keys are not the UNet's business
    assert sorted(match.not_loaded) == ["lora_unet_input_blocks_99_1_proj_in.alpha",
                                        "lora_unet_input_blocks_99_1_proj_in.lora_down.weight",
                                        "lora_unet_input_blocks_99_1_proj_in.lora_up.weight"]
    assert lora.unrecognised == ("some_trainer_step",)
    log = caplog.text
    assert "bogus.safetensors" in log and "input_blocks_99" in log and "some_trainer_step" in log


def test_lora_for_another_architecture_names_key_and_shapes(unet, tmp_path):
    up, down = lora_pair(640, 640, seed=12)  # an SDXL-sized to_q
    path = write(tmp_path, kohya("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q", up, down), "xl")
    with pytest.raises(ModelLoadError) as err:
        load_lora(path).patches_for(unet)
    message = str(err.value)
    assert "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q" in message
    assert "[640, 640]" in message and "[32, 32]" in message and TO_Q in message


def test_two_loras_add_up_and_restore_on_error(unet, tmp_path):
    a_up, a_down = lora_pair(32, 32, seed=13)
    b_up, b_down = lora_pair(32, 32, seed=14)
    stem = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    a = load_lora(write(tmp_path, kohya(stem, a_up, a_down), "a"))
    b = load_lora(write(tmp_path, kohya(stem, b_up, b_down, alpha=8.0), "b"))
    before = weights(unet.module)
    with pytest.raises(RuntimeError, match="sampler failed"), apply_loras(unet, [(a, 1.0), (b, -0.5)]):
        got = unet.module.get_parameter(TO_Q).detach().clone()
        raise RuntimeError("sampler failed")
    # no alpha key: scale 1 (ComfyUI's rule); alpha 8 over rank 4: scale 2
    torch.testing.assert_close(got, before[TO_Q] + a_up @ a_down - 0.5 * 2.0 * (b_up @ b_down))
    assert_unchanged(unet.module, before)


_CUDA = pytest.param("cuda", marks=[pytest.mark.gpu,
                                    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])


@pytest.mark.parametrize("device", ["cpu", _CUDA])
def test_half_precision_weights_are_patched_in_their_dtype_and_restored_exactly(tmp_path, device):
    module = torch.nn.Linear(16, 8).to(device, torch.float16)
    up, down = lora_pair(8, 16, seed=15)
    lora = load_lora(write(tmp_path, {"unet.lin.lora_A.weight": down.half(), "unet.lin.lora_B.weight": up.half()}))
    holder = torch.nn.Module()
    holder.lin = module
    before = weights(holder)
    with apply_loras(holder, [(lora, 1.0)]):
        got = holder.lin.weight.detach().clone()
    assert got.dtype == torch.float16
    expected = (before["lin.weight"].float().cpu() + up.half().float() @ down.half().float()).half()
    # summed in float32 and rounded once: bit-exact on the CPU (a GPU matmul may sum in another order)
    exact = {"rtol": 0, "atol": 0} if device == "cpu" else {}
    torch.testing.assert_close(got.cpu(), expected, **exact)
    assert got.device == before["lin.weight"].device
    assert_unchanged(holder, before)


# -- LyCORIS kinds --------------------------------------------------------------------------------------------

def test_loha_and_lokr(unet, tmp_path):
    gen = torch.Generator().manual_seed(16)
    w1a, w1b, w2a, w2b = (torch.randn(shape, generator=gen) for shape in [(32, 2), (2, 32), (32, 2), (2, 32)])
    stem = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    loha = load_lora(write(tmp_path, {f"{stem}.hada_w1_a": w1a, f"{stem}.hada_w1_b": w1b, f"{stem}.hada_w2_a": w2a,
                                      f"{stem}.hada_w2_b": w2b, f"{stem}.alpha": torch.tensor(1.0)}, "loha"))
    k1, k2a, k2b = torch.randn(4, 4, generator=gen), torch.randn(8, 2, generator=gen), torch.randn(2, 8, generator=gen)
    lokr = load_lora(write(tmp_path, {f"{stem}.lokr_w1": k1, f"{stem}.lokr_w2_a": k2a, f"{stem}.lokr_w2_b": k2b,
                                      f"{stem}.alpha": torch.tensor(1.0)}, "lokr"))
    before = weights(unet.module)
    with apply_loras(unet, [(loha, 1.0)]):
        got = unet.module.get_parameter(TO_Q).detach().clone()
    torch.testing.assert_close(got - before[TO_Q], (w1a @ w1b) * (w2a @ w2b) / 2, rtol=1e-4, atol=1e-5)
    with apply_loras(unet, [(lokr, 1.0)]):
        got = unet.module.get_parameter(TO_Q).detach().clone()
    torch.testing.assert_close(got - before[TO_Q], torch.kron(k1, k2a @ k2b) / 2, rtol=1e-4, atol=1e-5)
    assert_unchanged(unet.module, before)


def test_dora_and_conv_lokr(tmp_path):
    """DoRA renormalises each input channel to the trained magnitude; a CP-factorised LoKr patches a 3x3 conv."""
    holder = torch.nn.Module()
    holder.lin, holder.conv = torch.nn.Linear(6, 8), torch.nn.Conv2d(6, 8, 3)
    gen = torch.Generator().manual_seed(23)
    magnitude = torch.rand(1, 6, generator=gen) + 0.5
    up, down = lora_pair(8, 6, rank=2, seed=24)
    w1, w2_a, w2_b, t2 = (torch.randn(s, generator=gen) for s in [(2, 2), (2, 4), (2, 3), (2, 2, 3, 3)])
    lora = load_lora(write(tmp_path, {
        **kohya("lora_unet_lin", up, down, alpha=2.0), "lora_unet_lin.dora_scale": magnitude,
        "lora_unet_conv.lokr_w1": w1, "lora_unet_conv.lokr_w2_a": w2_a, "lora_unet_conv.lokr_w2_b": w2_b,
        "lora_unet_conv.lokr_t2": t2, "lora_unet_conv.alpha": torch.tensor(2.0)}))
    before = weights(holder)
    deltas = []
    for strength in (1.0, 0.5):
        with apply_loras(holder, [(lora, strength)]):
            if strength == 1.0:
                torch.testing.assert_close(holder.lin.weight.norm(dim=0, keepdim=True), magnitude)
            deltas.append(holder.conv.weight.detach() - before["conv.weight"])
    assert deltas[0].abs().max() > 0
    torch.testing.assert_close(deltas[1], deltas[0] / 2, rtol=1e-4, atol=1e-5)
    assert_unchanged(holder, before)


# -- text encoders ------------------------------------------------------------------------------------------

@dataclass(eq=False)
class TinyTextEncoder:
    """The parts of TextEncoder a LoRA needs: its transformers modules (SDXL: CLIP-L, then bigG)."""

    modules: list[torch.nn.Module]
    param_of_ldm: dict[str, str] = field(default_factory=dict)


def _clip(hidden: int, seed: int) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1)
    return CLIPTextModel(config).eval()


def test_text_encoder_keys_in_kohya_and_peft_layouts(tmp_path):
    te = TinyTextEncoder([_clip(16, 0), _clip(24, 1)])  # SDXL-like: te1 = CLIP-L, te2 = bigG
    up1, down1 = lora_pair(16, 16, seed=17)
    up2, down2 = lora_pair(48, 24, seed=18)
    lora = load_lora(write(tmp_path, {
        **kohya("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", up1, down1),
        **kohya("lora_te2_text_model_encoder_layers_1_mlp_fc1", up2, down2),
        "text_encoder.text_model.encoder.layers.1.self_attn.v_proj.lora_A.weight": down1,
        "text_encoder.text_model.encoder.layers.1.self_attn.v_proj.lora_B.weight": up1,
        **kohya("lora_te2_text_model_encoder_layers_7_mlp_fc1", up2, down2),  # no layer 7
        **kohya("lora_unet_input_blocks_1_1_proj_in", up1, down1),  # the UNet's, not the text encoder's
    }))
    match = lora.patches_for(te)
    assert sorted(p.target for p in match.patches) == ["0.encoder.layers.0.self_attn.q_proj.weight",
                                                       "0.encoder.layers.1.self_attn.v_proj.weight",
                                                       "1.encoder.layers.1.mlp.fc1.weight"]
    assert {k.split(".")[0] for k in match.not_loaded} == {"lora_te2_text_model_encoder_layers_7_mlp_fc1"}

    before = [weights(m) for m in te.modules]
    ids = torch.tensor([[0, 5, 6, 1]])
    base = te.modules[1](ids).last_hidden_state
    with apply_loras(te, [(lora, 1.0)]):
        fc1 = te.modules[1].get_parameter("encoder.layers.1.mlp.fc1.weight").detach().clone()
        assert not torch.allclose(te.modules[1](ids).last_hidden_state, base)
    torch.testing.assert_close(fc1 - before[1]["encoder.layers.1.mlp.fc1.weight"], up2 @ down2)
    for module, saved in zip(te.modules, before, strict=True):
        assert_unchanged(module, saved)


def test_text_encoder_aliases_from_the_loader_table(tmp_path):
    """A loader that records LDM-side names ("te2." prefix, "text_model.") for its modules is honoured."""
    te = TinyTextEncoder([_clip(16, 0), _clip(24, 1)],
                         param_of_ldm={"te2.text_model.final_layer_norm.weight": "1.final_layer_norm.weight"})
    lora = load_lora(write(tmp_path, {"lora_te2_text_model_final_layer_norm.diff": torch.ones(24)}))
    assert [p.target for p in lora.patches_for(te).patches] == ["1.final_layer_norm.weight"]


# -- threads sharing one model ------------------------------------------------------------------------------

def test_runs_with_different_loras_never_see_each_others_patches(unet, tmp_path):
    stem = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    a_up, a_down = lora_pair(32, 32, seed=19)
    b_up, b_down = lora_pair(32, 32, seed=20)
    a = load_lora(write(tmp_path, kohya(stem, a_up, a_down), "a"))
    b = load_lora(write(tmp_path, kohya(stem, b_up, b_down), "b"))
    base = unet.module.get_parameter(TO_Q).detach().clone()
    seen: dict[str, torch.Tensor] = {}
    a_inside, b_entered = threading.Event(), threading.Event()

    def run_b(name: str, files: list) -> None:
        with apply_loras(unet, files):
            b_entered.set()
            seen[name] = unet.module.get_parameter(TO_Q).detach().clone()

    with apply_loras(unet, [(a, 1.0)]):
        a_inside.set()
        others = [threading.Thread(target=run_b, args=("b", [(b, 1.0)])),
                  threading.Thread(target=run_b, args=("plain", []))]
        for t in others:
            t.start()
        assert not b_entered.wait(0.3)  # both wait while A's patches are in
        torch.testing.assert_close(unet.module.get_parameter(TO_Q), base + a_up @ a_down)
    for t in others:
        t.join(timeout=30)
    torch.testing.assert_close(seen["b"], base + b_up @ b_down)
    assert torch.equal(seen["plain"], base)
    assert torch.equal(unet.module.get_parameter(TO_Q), base)


def test_runs_with_the_same_lora_share_the_patched_model(unet, tmp_path):
    up, down = lora_pair(32, 32, seed=21)
    lora = load_lora(write(tmp_path, kohya("lora_unet_input_blocks_1_1_proj_in", up, down)))
    before = weights(unet.module)
    both_inside = threading.Barrier(2, timeout=30)  # breaks (fails the test) if the second run is kept out

    def run() -> None:
        with apply_loras(unet, [(lora, 1.0)]):
            both_inside.wait()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not both_inside.broken
    assert_unchanged(unet.module, before)


def test_nesting_different_patches_on_one_thread_fails_instead_of_hanging(unet, tmp_path):
    up, down = lora_pair(32, 32, seed=22)
    lora = load_lora(write(tmp_path, kohya("lora_unet_input_blocks_1_1_proj_in", up, down)))
    before = weights(unet.module)
    with apply_loras(unet, [(lora, 1.0)]):
        with apply_loras(unet, [(lora, 1.0)]):  # the same patches: fine
            pass
        with pytest.raises(RuntimeError, match="other LoRA patches"), patched(unet.module, []):
            pass
    assert_unchanged(unet.module, before)


# -- on the tiny SD1 checkpoint, loaded the way CheckpointLoaderSimple loads it -----------------------------------

@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    from comfygate.comfy_runtime.diffusion.checkpoints import load_checkpoint

    from .tiny_checkpoints import build_sd1_checkpoint

    folder = tmp_path_factory.mktemp("sd1")
    return load_checkpoint(build_sd1_checkpoint(folder / "tiny_sd1.safetensors"), "cpu", torch.float32)


@pytest.fixture(scope="module")
def sd1_lora(tmp_path_factory) -> tuple[LoraFile, dict[str, torch.Tensor]]:
    """A kohya LoRA (UNet and text encoder) for the tiny SD1 checkpoint, and the deltas it stands for."""
    from .tiny_lora import build_lora_file, lora_deltas, lora_state_dict

    path = build_lora_file(tmp_path_factory.mktemp("loras") / "tiny_sd1_lora.safetensors", "sd1")
    return load_lora(path), lora_deltas(lora_state_dict("sd1"), "sd1", strength=0.8)


def unet_output(model) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, model.latent_channels, 8, 8, generator=gen)
    context = torch.randn(1, 77, 32, generator=gen)  # tiny CLIP-L width
    return model(x, torch.tensor([400.0]), context)


def test_checkpoint_unet_gets_exactly_the_kohya_deltas(sd1, sd1_lora):
    lora, deltas = sd1_lora
    unet = sd1.unet
    match = lora.patches_for(unet)
    assert match.not_loaded == ()
    unet_deltas = {key: d for key, d in deltas.items() if not key.startswith("text_model.")}
    assert len(match.patches) == len(unet_deltas) > 0
    before, base_out = weights(unet.module), unet_output(unet)
    with apply_loras(unet, [(lora, 0.8)]):
        inside = {key: unet.module.get_parameter(unet.param_of_ldm[key]).detach().clone() for key in unet_deltas}
        lora_out = unet_output(unet)
    for key, delta in unet_deltas.items():
        name = unet.param_of_ldm[key]
        torch.testing.assert_close(inside[key] - before[name], delta.reshape(inside[key].shape), rtol=1e-4,
                                   atol=1e-5, msg=key)
    assert not torch.allclose(lora_out, base_out, atol=1e-4)
    assert_unchanged(unet.module, before)
    assert torch.equal(unet_output(unet), base_out)


def test_checkpoint_strength_zero_is_the_base_model(sd1, sd1_lora):
    lora, _ = sd1_lora
    base_out = unet_output(sd1.unet)
    with apply_loras(sd1.unet, [(lora, 0.0)]):
        assert torch.equal(unet_output(sd1.unet), base_out)


def test_checkpoint_text_encoder_is_patched_and_restored(sd1, sd1_lora):
    lora, deltas = sd1_lora
    text = sd1.text
    match = lora.patches_for(text)
    assert match.not_loaded == ()
    assert len(match.patches) == sum(key.startswith("text_model.") for key in deltas) > 0
    before = weights(text.modules[0])
    base_cond, _ = text.encode("a photo of a cat")
    with apply_loras(text, [(lora, 0.8)]):
        lora_cond, _ = text.encode("a photo of a cat")
    assert not torch.allclose(lora_cond, base_cond, atol=1e-4)
    assert_unchanged(text.modules[0], before)
    assert torch.equal(text.encode("a photo of a cat")[0], base_cond)


def test_checkpoint_locon_peft_and_bogus_keys(sd1, tmp_path, caplog):
    unet = sd1.unet
    conv = unet.param_of_ldm["input_blocks.1.0.in_layers.2.weight"]  # 3x3 conv of the first res block
    attn = unet.param_of_ldm["input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight"]
    out_c, in_c = unet.module.get_parameter(conv).shape[:2]
    v_out, v_in = unet.module.get_parameter(attn).shape
    c_up, c_down = lora_pair(out_c, in_c, seed=30, kernel=3)
    a_up, a_down = lora_pair(v_out, v_in, seed=31)
    sd = {**kohya("lora_unet_input_blocks_1_0_in_layers_2", c_up, c_down, alpha=4.0),
          f"unet.{attn[: -len('.weight')]}.lora_A.weight": a_down,
          f"unet.{attn[: -len('.weight')]}.lora_B.weight": a_up,
          **kohya("lora_unet_input_blocks_1_1_transformer_blocks_0_attn3_to_v", a_up, a_down)}  # no attn3
    with caplog.at_level(logging.WARNING):
        lora = load_lora(write(tmp_path, sd, "mixed"))
        match = lora.patches_for(unet)
    assert sorted(p.target for p in match.patches) == sorted([conv, attn])
    assert {k.split(".")[0] for k in match.not_loaded} == {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn3_to_v"}
    assert "attn3_to_v" in caplog.text
    before, base_out = weights(unet.module), unet_output(unet)
    with apply_loras(unet, [(lora, 1.0)]):
        got_conv = unet.module.get_parameter(conv).detach().clone()
        got_attn = unet.module.get_parameter(attn).detach().clone()
        assert not torch.allclose(unet_output(unet), base_out, atol=1e-4)
    torch.testing.assert_close(got_conv - before[conv], (c_up.flatten(1) @ c_down.flatten(1)).reshape(got_conv.shape),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_attn - before[attn], a_up @ a_down, rtol=1e-4, atol=1e-5)
    assert_unchanged(unet.module, before)


def test_sdxl_lora_on_sd1_checkpoint_is_refused_with_key_and_shapes(sd1, tmp_path):
    from .tiny_lora import build_lora_file

    lora = load_lora(build_lora_file(tmp_path / "tiny_sdxl_lora.safetensors", "sdxl", targets=("unet",)))
    with pytest.raises(ModelLoadError) as err:
        lora.patches_for(sd1.unet)
    message = str(err.value)
    assert "tiny_sdxl_lora.safetensors" in message and "made for a different model architecture" in message
    key = re.search(r"(lora_unet_\w+)\.lora_(up|down)\.weight", message)
    shapes = re.findall(r"shape (\[[\d, ]+\])", message)
    assert key and len(shapes) == 2 and shapes[0] != shapes[1], message

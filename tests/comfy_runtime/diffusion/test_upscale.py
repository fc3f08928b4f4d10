"""Upscale models through spandrel: loading from real file layouts, tiled upscaling, and refusing bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from comfygate.comfy_runtime.diffusion.errors import ModelFileNotFound, ModelLoadError
from comfygate.comfy_runtime.diffusion.upscale import UpscaleModel, load_upscale_model, tile_starts

from .tiny_upscalers import (
    compact_reference,
    compact_state_dict,
    esrgan_unshuffle_state_dict,
    save_pth,
    save_safetensors,
)


def _image(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))  # [B, H, W, 3]


def _nearest(image: torch.Tensor, scale: int) -> torch.Tensor:
    return image.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("scale", [2, 4])
def test_compact_model_loads_and_runs_the_saved_weights(tmp_path: Path, suffix: str, scale: int) -> None:
    state = compact_state_dict(scale=scale, seed=scale)
    save = save_safetensors if suffix == ".safetensors" else save_pth
    model = load_upscale_model(save(state, tmp_path / f"tiny_x{scale}{suffix}"))

    assert isinstance(model, UpscaleModel)
    assert model.scale == scale
    assert model.architecture == "RealESRGAN Compact"
    assert model.size_bytes == sum(t.numel() * 4 for t in state.values())
    assert model.dtype == torch.float32 and model.device.type == "cpu"

    image = _image(2, 12, 10)
    out = model.upscale(image)
    assert out.shape == (2, 12 * scale, 10 * scale, 3)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out, compact_reference(state, image), atol=1e-5, rtol=0)
    out.mul_(0.5)  # an ordinary tensor: later nodes may change it in place


def test_wrapped_and_module_prefixed_pth_loads(tmp_path: Path) -> None:
    state = compact_state_dict(scale=2, seed=3)
    wrapped = {"params_ema": {f"module.{k}": v for k, v in state.items()}, "iter": 1000}
    model = load_upscale_model(save_pth(wrapped, tmp_path / "wrapped.pth"))
    image = _image(1, 8, 8)
    torch.testing.assert_close(model.upscale(image), compact_reference(state, image), atol=1e-5, rtol=0)


def test_partly_module_prefixed_keys_are_stripped(tmp_path: Path) -> None:
    state = compact_state_dict(scale=2, seed=4)
    mixed = {(f"module.{k}" if k.startswith("body.0") else k): v for k, v in state.items()}
    model = load_upscale_model(save_safetensors(mixed, tmp_path / "mixed.safetensors"))
    image = _image(1, 6, 7)
    torch.testing.assert_close(model.upscale(image), compact_reference(state, image), atol=1e-5, rtol=0)


def test_tiles_blend_back_to_the_exact_image_when_tiles_do_not_matter(tmp_path: Path) -> None:
    # zero weights: the network is nearest-neighbour upscaling, so every tile layout must give the same pixels
    state = compact_state_dict(scale=2, weight_std=0.0)
    model = load_upscale_model(save_safetensors(state, tmp_path / "nearest.safetensors"), "cpu")
    image = _image(2, 37, 29)
    whole = model.upscale(image)
    torch.testing.assert_close(whole, _nearest(image, 2), atol=1e-6, rtol=0)
    for tile, overlap in [(16, 8), (10, 3), (8, 0)]:
        torch.testing.assert_close(model.upscale(image, tile=tile, overlap=overlap), whole, atol=1e-6, rtol=0)


def test_tiled_output_is_close_to_untiled_and_exact_away_from_tile_seams(tmp_path: Path) -> None:
    state = compact_state_dict(scale=2, num_conv=1, seed=5)  # receptive field radius 3 pixels
    model = load_upscale_model(save_safetensors(state, tmp_path / "tiny.safetensors"))
    image = _image(1, 40, 36)
    whole = model.upscale(image)
    tiled = model.upscale(image, tile=16, overlap=8)
    assert tiled.shape == whole.shape == (1, 80, 72, 3)
    diff = (tiled - whole).abs()
    assert diff.max() < 0.1 and diff.mean() < 0.01
    # rows/cols 0..7 lie in the first tile only and > 3 px from its inner edges: identical to the whole image
    torch.testing.assert_close(tiled[:, :16, :16], whole[:, :16, :16], atol=1e-5, rtol=0)
    assert diff.max() > 1e-4  # the seams do differ: the image really was cut into tiles


def test_output_is_clamped_to_0_1(tmp_path: Path) -> None:
    state = compact_state_dict(scale=2, weight_std=2.0, seed=6)
    model = load_upscale_model(save_safetensors(state, tmp_path / "wild.safetensors"))
    image = _image(1, 30, 26)
    for out in (model.upscale(image), model.upscale(image, tile=12, overlap=4)):
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert (out == 0.0).any() and (out == 1.0).any()  # the raw network output went past both ends


def test_progress_counts_every_tile_of_every_image(tmp_path: Path) -> None:
    model = load_upscale_model(save_safetensors(compact_state_dict(), tmp_path / "tiny.safetensors"))
    calls: list[tuple[int, int]] = []
    model.upscale(_image(2, 40, 36), tile=16, overlap=8, progress=lambda done, total: calls.append((done, total)))
    # ComfyUI's placement: starts 0, 8, 16, 24 on both axes -> 16 tiles per image
    assert [start for start, _ in tile_starts(40, 16, 8)] == [0, 8, 16, 24]
    assert calls == [(i, 32) for i in range(1, 33)]
    calls.clear()
    model.upscale(_image(3, 20, 20), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]  # one tile per image when it fits


def test_tile_placement_covers_the_axis_like_comfyui() -> None:
    assert tile_starts(600, 512, 32) == [(0, 512), (480, 120)]
    assert tile_starts(512, 512, 32) == [(0, 512)]
    for length in range(1, 80):
        covered = set()
        for start, size in tile_starts(length, 16, 5):
            assert size <= 16 and start + size <= length
            covered.update(range(start, start + size))
        assert covered == set(range(length))


def test_out_of_memory_halves_the_tile_and_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = compact_state_dict(scale=2, seed=7)
    model = load_upscale_model(save_safetensors(state, tmp_path / "tiny.safetensors"))
    real_forward = model._forward
    sides: list[int] = []

    def forward_with_small_memory(x: torch.Tensor) -> torch.Tensor:
        sides.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > 128:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(x)

    monkeypatch.setattr(model, "_forward", forward_with_small_memory)
    freed: list[bool] = []
    image = _image(1, 200, 180)
    out = model.upscale(image, on_oom=lambda: freed.append(True))
    assert sides[:2] == [200, 200]  # 512 and 256 both hold the whole image in one tile, which "runs out"
    assert max(sides[2:]) == 128 and len(freed) == 2
    assert out.shape == (1, 400, 360, 3)
    assert (out - compact_reference(state, image)).abs().mean() < 0.01

    monkeypatch.setattr(model, "_forward", lambda x: (_ for _ in ()).throw(torch.OutOfMemoryError("always")))
    with pytest.raises(torch.OutOfMemoryError):
        model.upscale(image)


def test_size_requirements_are_met_by_tile_choice_and_padding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_upscale_model(save_safetensors(esrgan_unshuffle_state_dict(), tmp_path / "x2plus.safetensors"))
    assert model.architecture == "ESRGAN" and model.scale == 2
    assert model.size_requirements.multiple_of == 4
    assert model.fit_tile(14) == 12 and model.fit_tile(2) == 4

    whole = model.upscale(_image(1, 22, 18))  # neither side a multiple of 4: spandrel pads and crops back
    assert whole.shape == (1, 44, 36, 3)
    widths: list[int] = []
    real_forward = model._forward
    monkeypatch.setattr(model, "_forward", lambda x: widths.append(x.shape[-1]) or real_forward(x))
    tiled = model.upscale(_image(1, 22, 18), tile=14, overlap=4)
    assert tiled.shape == (1, 44, 36, 3)
    assert max(widths) == 12  # full tiles were cut at a multiple of 4, not at the 14 asked for
    assert (tiled - whole).abs().mean() < 0.05


def test_greyscale_model_gives_a_grey_rgb_image(tmp_path: Path) -> None:
    state = compact_state_dict(scale=2, channels=1, seed=8)
    model = load_upscale_model(save_safetensors(state, tmp_path / "grey.safetensors"))
    assert model.input_channels == 1 and model.output_channels == 1
    image = _image(1, 9, 11)
    out = model.upscale(image)
    assert out.shape == (1, 18, 22, 3)
    torch.testing.assert_close(out, compact_reference(state, image), atol=1e-5, rtol=0)
    assert torch.equal(out[..., 0], out[..., 2])


def test_bad_image_or_tile_arguments_are_value_errors(tmp_path: Path) -> None:
    model = load_upscale_model(save_safetensors(compact_state_dict(), tmp_path / "tiny.safetensors"))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        model.upscale(torch.rand(1, 8, 8, 4))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        model.upscale(torch.rand(8, 8, 3))
    with pytest.raises(ValueError, match="overlap"):
        model.upscale(torch.rand(1, 8, 8, 3), tile=16, overlap=16)


# ---- refusals --------------------------------------------------------------------------------------------------


def test_unrecognised_state_dict_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = save_safetensors({"encoder.weight": torch.randn(8, 3), "decoder.bias": torch.randn(3)}, tmp_path / "x.sft")
    with pytest.raises(ModelLoadError, match="x.sft") as info:
        load_upscale_model(path)
    assert "spandrel" in str(info.value) and "encoder.weight" in str(info.value)


def test_recognised_but_broken_state_dict_names_the_architecture(tmp_path: Path) -> None:
    state = compact_state_dict(scale=2)
    state["body.2.weight"] = torch.randn(4, 5, 3, 3)  # wrong input channel count for the middle conv
    with pytest.raises(ModelLoadError, match="broken.safetensors") as info:
        load_upscale_model(save_safetensors(state, tmp_path / "broken.safetensors"))
    assert "RealESRGAN Compact" in str(info.value)


_UNPICKLED: list[str] = []


def _record_unpickling() -> str:
    _UNPICKLED.append("ran")
    return "payload"


class _Payload:
    """Pickles to a call of _record_unpickling: any unrestricted unpickler would run it on load."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_record_unpickling, ())


def test_pth_with_pickled_objects_is_refused_without_running_them(tmp_path: Path) -> None:
    state: dict[str, object] = dict(compact_state_dict())
    state["config"] = _Payload()
    path = save_pth(state, tmp_path / "evil.pth")
    with pytest.raises(ModelLoadError, match="evil.pth") as info:
        load_upscale_model(path)
    assert "weights_only" in str(info.value)
    assert _UNPICKLED == []


def test_non_image_model_is_refused(tmp_path: Path) -> None:
    from spandrel import Architecture, ArchRegistry, ArchSupport, MaskedImageModelDescriptor

    class TinyInpaint(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inpaint = nn.Conv2d(4, 3, 1)

    class TinyInpaintArch(Architecture[TinyInpaint]):
        def __init__(self) -> None:
            super().__init__(id="TinyInpaint", detect=lambda state: "inpaint.weight" in state)

        def load(self, state_dict: dict) -> MaskedImageModelDescriptor[TinyInpaint]:
            return MaskedImageModelDescriptor(
                TinyInpaint(),
                state_dict,
                architecture=self,
                purpose="Inpainting",
                tags=[],
                supports_half=False,
                supports_bfloat16=False,
                input_channels=3,
                output_channels=3,
            )

    registry = ArchRegistry()
    registry.add(ArchSupport.from_architecture(TinyInpaintArch()))
    path = save_safetensors(TinyInpaint().state_dict(), tmp_path / "inpaint.safetensors")
    with pytest.raises(ModelLoadError, match="inpaint.safetensors") as info:
        load_upscale_model(path, registry=registry)
    assert "TinyInpaint" in str(info.value) and "Inpainting" in str(info.value)


def test_missing_unreadable_and_unknown_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFileNotFound, match="absent.pth"):
        load_upscale_model(tmp_path / "absent.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00not a safetensors file at all")
    with pytest.raises(ModelLoadError, match="junk.safetensors"):
        load_upscale_model(tmp_path / "junk.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelLoadError, match="junk.pth"):
        load_upscale_model(tmp_path / "junk.pth")
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(ModelLoadError, match=r"model.onnx.*extension"):
        load_upscale_model(tmp_path / "model.onnx")
    save_pth(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(ModelLoadError, match="tensor.pth.*not a state dict"):
        load_upscale_model(tmp_path / "tensor.pth")

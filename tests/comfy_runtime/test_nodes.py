import io

import numpy as np
import pytest
import torch
from PIL import Image

from comfygate.comfy_runtime.nodes.image import EmptyImage

from .conftest import run_node


def rgb(color: int, w=4, h=3, batch=1) -> torch.Tensor:
    (image,) = EmptyImage().generate(width=w, height=h, batch_size=batch, color=color)
    return image


def test_empty_image_color_is_rrggbb():
    image = rgb(0xFF8000, w=5, h=3, batch=2)
    assert image.shape == (2, 3, 5, 3) and image.dtype == torch.float32
    assert torch.allclose(image[1, 2, 4], torch.tensor([1.0, 128 / 255, 0.0]))


def test_invert(registry):
    (out,) = run_node(registry, "ImageInvert", image=rgb(0xFF0000))
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 1.0, 1.0]))


def test_crop_size_and_edge(registry):
    image = torch.rand(1, 20, 30, 3)
    (out,) = run_node(registry, "ImageCrop", image=image, width=10, height=5, x=4, y=2)
    assert out.shape == (1, 5, 10, 3)
    assert torch.equal(out, image[:, 2:7, 4:14])
    (edge,) = run_node(registry, "ImageCrop", image=image, width=10, height=10, x=25, y=18)
    assert edge.shape == (1, 2, 5, 3)


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"])
def test_scale_sizes(registry, method):
    image = torch.rand(2, 10, 20, 3)
    (out,) = run_node(registry, "ImageScale", image=image, upscale_method=method, width=40, height=16,
                      crop="disabled")
    assert out.shape == (2, 16, 40, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0
    (by,) = run_node(registry, "ImageScaleBy", image=image, upscale_method=method, scale_by=0.5)
    assert by.shape == (2, 5, 10, 3)


def test_scale_keeps_aspect_when_one_side_is_zero_and_center_crop(registry):
    image = torch.rand(1, 10, 20, 3)
    (out,) = run_node(registry, "ImageScale", image=image, upscale_method="bilinear", width=0, height=5,
                      crop="disabled")
    assert out.shape == (1, 5, 10, 3)
    stripes = torch.zeros(1, 10, 30, 3)
    stripes[:, :, 10:20] = 1.0  # a white middle third survives a centre crop to a square
    (square,) = run_node(registry, "ImageScale", image=stripes, upscale_method="nearest-exact", width=10,
                         height=10, crop="center")
    assert square.shape == (1, 10, 10, 3) and square.min() == 1.0


def test_scale_by_to_nothing_fails(registry):
    with pytest.raises(ValueError, match="scale_by"):
        run_node(registry, "ImageScaleBy", image=torch.rand(1, 10, 10, 3), upscale_method="area",
                 scale_by=0.01)


def test_blur_smooths_and_keeps_flat_areas(registry):
    image = torch.zeros(1, 16, 16, 3)
    image[:, :, 8:] = 1.0
    (out,) = run_node(registry, "ImageBlur", image=image, blur_radius=3, sigma=1.5)
    assert out.shape == image.shape
    assert 0.0 < out[0, 0, 7, 0] < 0.5 < out[0, 0, 8, 0] < 1.0
    assert out[0, 0, 0, 0] == pytest.approx(0.0) and out[0, 0, 15, 0] == pytest.approx(1.0)


def test_sharpen_increases_edge_contrast(registry):
    image = torch.full((1, 16, 16, 3), 0.25)
    image[:, :, 8:] = 0.75
    (out,) = run_node(registry, "ImageSharpen", image=image, sharpen_radius=2, sigma=1.0, alpha=1.0)
    assert out[0, 0, 7, 0] < 0.25 and out[0, 0, 8, 0] > 0.75
    (same,) = run_node(registry, "ImageSharpen", image=image, sharpen_radius=2, sigma=1.0, alpha=0.0)
    assert torch.allclose(same, image)


def test_pad_for_outpaint(registry):
    image = torch.rand(1, 100, 100, 3)
    padded, mask = run_node(registry, "ImagePadForOutpaint", image=image, left=8, top=16, right=0, bottom=24,
                            feathering=10)
    assert padded.shape == (1, 140, 108, 3) and mask.shape == (1, 140, 108)
    assert torch.equal(padded[:, 16:116, 8:108], image)
    assert padded[0, 0, 0, 0] == 0.5 and mask[0, 0, 0] == 1.0
    assert mask[0, 16, 8] == 1.0  # the original's corner touches padding: fully feathered
    assert mask[0, 16 + 50, 8 + 50] == 0.0  # far from any padded edge
    assert 0.0 < mask[0, 16 + 50, 8 + 3] < 1.0  # near the padded left edge
    assert mask[0, 16 + 50, 107] == 0.0  # right side is not padded: no feathering there


def test_composite_placement_and_mask(registry):
    destination = rgb(0x000000, w=10, h=10)
    source = rgb(0xFFFFFF, w=4, h=3)
    (out,) = run_node(registry, "ImageCompositeMasked", destination=destination, source=source, x=5, y=2,
                      resize_source=False)
    assert out[0, 2:5, 5:9].min() == 1.0
    assert out.sum() == pytest.approx(4 * 3 * 3)
    assert destination.max() == 0.0  # the input is not modified
    (clipped,) = run_node(registry, "ImageCompositeMasked", destination=destination, source=source, x=8,
                          y=9, resize_source=False)
    assert clipped.sum() == pytest.approx(2 * 1 * 3)
    (half,) = run_node(registry, "ImageCompositeMasked", destination=destination, source=source, x=0, y=0,
                       resize_source=True, mask=torch.full((1, 3, 4), 0.5))
    assert torch.allclose(half, torch.full((1, 10, 10, 3), 0.5))


def test_masks(registry):
    image = rgb(0x00FF00, w=4, h=2)
    (green,) = run_node(registry, "ImageToMask", image=image, channel="green")
    assert green.shape == (1, 2, 4) and green.min() == 1.0
    with pytest.raises(ValueError, match="alpha"):
        run_node(registry, "ImageToMask", image=image, channel="alpha")
    (solid,) = run_node(registry, "SolidMask", value=0.25, width=6, height=3)
    assert solid.shape == (1, 3, 6) and solid.max() == 0.25
    (as_image,) = run_node(registry, "MaskToImage", mask=solid[0])  # a bare [H, W] mask is accepted
    assert as_image.shape == (1, 3, 6, 3) and as_image.max() == 0.25


def test_load_image_rgb_and_alpha(registry, tmp_path):
    pixels = np.zeros((3, 5, 4), dtype=np.uint8)
    pixels[..., 0] = 255
    pixels[0, 0, 3] = 255  # one opaque pixel
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    Image.new("RGB", (5, 3), (0, 0, 255)).save(tmp_path / "plain.jpg")
    image, mask = run_node(registry, "LoadImage", image="a.png", input_dir=tmp_path)
    assert image.shape == (1, 3, 5, 3) and mask.shape == (1, 3, 5)
    assert image[0, 0, 0, 0] == 1.0
    assert mask[0, 0, 0] == 0.0 and mask[0, 1, 1] == 1.0  # mask = 1 - alpha
    _, plain_mask = run_node(registry, "LoadImage", image="plain.jpg", input_dir=tmp_path)
    assert plain_mask.shape == (1, 3, 5) and plain_mask.max() == 0.0


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "a\\b.png", "a\x00.png"])
def test_load_image_rejects_unsafe_names(registry, tmp_path, name):
    with pytest.raises(ValueError, match="not allowed"):
        run_node(registry, "LoadImage", image=name, input_dir=tmp_path)


def test_load_image_rejects_symlink_out_of_input_dir(registry, tmp_path):
    outside = tmp_path / "outside.png"
    Image.new("RGB", (2, 2)).save(outside)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "link.png").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        run_node(registry, "LoadImage", image="link.png", input_dir=tmp_path / "in")


def test_load_image_missing_file(registry, tmp_path):
    with pytest.raises(FileNotFoundError, match="'image'"):
        run_node(registry, "LoadImage", image="nope.png", input_dir=tmp_path)


def test_save_image_encodes_png_and_keeps_raw_pixels(registry):
    images = torch.rand(2, 6, 4, 3)
    images[0, 0, 0, 0] = float("nan")
    images[0, 0, 1, 0] = float("inf")
    result = run_node(registry, "SaveImage", images=images, filename_prefix="portraits/run")
    records = result["ui"]["images"]
    assert len(records) == 2
    first = records[0]
    assert (first["width"], first["height"], first["filename_prefix"]) == (4, 6, "portraits/run")
    assert np.isnan(first["pixels"][0, 0, 0]) and first["pixels"].dtype == np.float32
    decoded = np.asarray(Image.open(io.BytesIO(first["png"])))
    assert decoded.shape == (6, 4, 3)
    assert decoded[0, 0, 0] == 0 and decoded[0, 1, 0] == 255  # NaN -> 0, Inf -> 1 in the PNG only
    preview = run_node(registry, "PreviewImage", images=images[:1])
    assert preview["ui"]["images"][0]["filename_prefix"] == "preview"


def test_save_image_rejects_unsafe_prefix_at_run_time(registry):
    with pytest.raises(ValueError, match="filename_prefix"):
        run_node(registry, "SaveImage", images=torch.rand(1, 2, 2, 3), filename_prefix="../../x")

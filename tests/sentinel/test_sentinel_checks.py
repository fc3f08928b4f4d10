"""Pixel checks on real images, through the gate with the integrity-only policy."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image
from sentinel_images import candidate, encode, flat, gaussian_noise, pixels_of, scene, uniform_noise

from comfygate.sentinel import Candidate, Policy, Sentinel


def evaluate(cand: Candidate, sentinel: Sentinel | None = None):
    verdict = (sentinel or Sentinel()).evaluate(cand, Policy.integrity_only())
    return verdict, {check.name: check for check in verdict.checks}


@pytest.mark.parametrize("size", [64, 256, 512])
def test_gradient_with_shapes_passes_every_integrity_check(size):
    verdict, checks = evaluate(candidate(scene(size)))

    assert verdict.passed and not verdict.flagged and verdict.reasons == []
    assert [c.name for c in verdict.checks] == ["decode", "finite", "blank", "noise"]
    assert all(c.status == "passed" and c.reason is None for c in verdict.checks)
    assert checks["blank"].score > 0.2
    assert checks["noise"].score > 0.8


def test_flat_colour_fails_blank_and_passes_noise_without_dividing_by_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 would surface as a RuntimeWarning
        verdict, checks = evaluate(candidate(flat(128)))

    assert not verdict.passed
    assert checks["blank"].status == "failed"
    assert checks["blank"].score == 0.0
    assert checks["blank"].threshold == 0.02
    assert "near-uniform" in checks["blank"].reason
    assert checks["noise"].status == "passed" and checks["noise"].score == 1.0
    assert verdict.reasons == [f"blank: {checks['blank'].reason}"]


def test_almost_flat_image_fails_blank():
    rng = np.random.default_rng(1)
    faint = np.clip(120 + rng.normal(0, 1.0, (64, 64, 3)), 0, 255).astype(np.uint8)
    _, checks = evaluate(candidate(Image.fromarray(faint)))
    assert checks["blank"].status == "failed"
    assert 0 < checks["blank"].score < 0.02


def test_two_colours_of_equal_brightness_are_not_blank():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, :16] = (200, 0, 0)
    image[:, 16:] = (0, 102, 0)  # about the same luma as the red half
    _, checks = evaluate(candidate(Image.fromarray(image)))
    assert checks["blank"].status == "passed"


@pytest.mark.parametrize("make_noise", [uniform_noise, gaussian_noise])
def test_pure_noise_fails_noise(make_noise):
    verdict, checks = evaluate(candidate(make_noise(128)))

    assert not verdict.passed
    assert checks["noise"].status == "failed"
    assert abs(checks["noise"].score) < 0.1
    assert "noise" in checks["noise"].reason
    assert checks["blank"].status == "passed"  # noise has plenty of spread; only the noise check sees it


def test_large_images_are_judged_too():
    assert evaluate(candidate(scene(1100)))[0].passed
    assert not evaluate(candidate(uniform_noise(1100)))[0].passed


def test_nan_pixels_fail_finite_and_the_reason_counts_them():
    pixels = pixels_of(scene(32))
    pixels[0, 0, 0] = np.nan
    pixels[1, 1, :] = np.nan
    pixels[2, 2, 1] = np.inf
    cand = candidate(scene(32))
    cand.pixels = pixels

    verdict, checks = evaluate(cand)

    assert not verdict.passed
    assert checks["finite"].status == "failed"
    assert "5 of 3072" in checks["finite"].reason
    assert "4 NaN, 1 Inf" in checks["finite"].reason
    assert checks["finite"].score == pytest.approx(1 - 5 / 3072)


def test_finite_is_not_run_without_pixels_and_passes_integer_pixels():
    _, checks = evaluate(candidate(scene(32), with_pixels=False))
    assert checks["finite"].status == "not_run"
    assert "no raw pixels" in checks["finite"].reason

    cand = candidate(scene(32))
    cand.pixels = np.asarray(scene(32))  # uint8
    assert evaluate(cand)[1]["finite"].status == "passed"


def test_wrong_declared_size_fails_decode():
    verdict, checks = evaluate(candidate(scene(64), declared=(64, 48)))

    assert not verdict.passed
    assert checks["decode"].status == "failed"
    assert checks["decode"].reason == "height is 64, expected 48"
    assert checks["blank"].status == "passed"  # the image decoded, so it is still looked at


def test_garbage_bytes_fail_decode_and_the_image_checks_do_not_run():
    verdict, checks = evaluate(Candidate(data=b"not an image at all", content_type="image/png"))

    assert not verdict.passed
    assert checks["decode"].status == "failed"
    assert "does not decode" in checks["decode"].reason
    for name in ("blank", "noise"):
        assert checks[name].status == "not_run"
        assert checks[name].reason.startswith("the image did not decode")
    assert verdict.reasons == [f"decode: {checks['decode'].reason}"]


def test_truncated_png_fails_decode():
    data = encode(scene(64))
    _, checks = evaluate(Candidate(data=data[: len(data) // 2], content_type="image/png"))
    assert checks["decode"].status == "failed"


def test_content_type_must_match_the_format():
    data = encode(scene(32), "JPEG")
    _, checks = evaluate(Candidate(data=data, content_type="image/png"))
    assert checks["decode"].status == "failed"
    assert "JPEG" in checks["decode"].reason

    _, checks = evaluate(Candidate(data=data, content_type="image/jpeg"))
    assert checks["decode"].status == "passed"


def test_decompression_bomb_guard_refuses_before_loading():
    _, checks = evaluate(candidate(scene(64)), Sentinel(max_pixels=64 * 63))
    assert checks["decode"].status == "failed"
    assert "more than 4032 pixels" in checks["decode"].reason
    assert checks["blank"].status == "not_run"


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "1"])
def test_other_pixel_modes_are_judged(mode):
    source = scene(64)
    if mode == "I;16":
        levels = np.asarray(source.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(levels)
    elif mode == "1":
        image = source.convert("1", dither=Image.Dither.NONE)  # dithering would make it noise-like
    else:
        image = source.convert(mode)
    cand = Candidate(data=encode(image), content_type="image/png", expected_width=64, expected_height=64)
    verdict, _ = evaluate(cand)
    assert verdict.passed, verdict.reasons


def test_one_pixel_wide_image_has_no_neighbours_to_fault():
    image = Image.fromarray(np.linspace(0, 255, 40).astype(np.uint8).reshape(40, 1))
    _, checks = evaluate(candidate(image))
    assert checks["noise"].status == "passed"

    _, checks = evaluate(candidate(Image.new("RGB", (1, 1), (255, 0, 0))))
    assert checks["noise"].score == 1.0


def test_pixel_checks_do_not_import_torch_or_the_other_packages():
    # The integrity gate runs on every output in a hot path; it must stay numpy + Pillow.
    script = (
        "import io, sys\n"
        "from PIL import Image\n"
        "from comfygate.sentinel import Candidate, Policy, Sentinel\n"
        "buffer = io.BytesIO(); Image.new('RGB', (8, 8), 'red').save(buffer, 'PNG')\n"
        "Sentinel().evaluate(Candidate(buffer.getvalue(), 'image/png'), Policy.from_dict(None), 'a cat')\n"
        "loaded = [m for m in ('torch', 'open_clip', 'comfygate.platform', 'comfygate.comfy_runtime')\n"
        "          if m in sys.modules]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_evaluation_is_repeatable():
    cand = candidate(scene(32))
    sentinel = Sentinel()
    first = sentinel.evaluate(cand, Policy.integrity_only()).to_dict()
    assert sentinel.evaluate(cand, Policy.integrity_only()).to_dict() == first

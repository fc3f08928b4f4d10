"""Pixel checks on real images, through the gate: natural-looking images pass, each failure has its code."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image
from sentinel_images import (
    NATURAL,
    blurred,
    candidate,
    encode,
    flat,
    gaussian_noise,
    landscape,
    mostly_white,
    nan_pixels,
    pixels_of,
    scene,
    truncated_png,
    uniform_noise,
)

from comfygate.sentinel import Candidate, Policy, Sentinel

PIXEL_CHECKS = ["decode", "finite", "blank", "noise", "blur", "colour_entropy"]


def evaluate(cand: Candidate, policy: Policy | None = None, sentinel: Sentinel | None = None):
    verdict = (sentinel or Sentinel()).evaluate(cand, policy or Policy.default())
    return verdict, {check.name: check for check in verdict.checks}


@pytest.mark.parametrize("size", [64, 256, 800])
@pytest.mark.parametrize("name", sorted(NATURAL))
def test_natural_looking_images_pass_every_pixel_check(name, size):
    verdict, checks = evaluate(candidate(NATURAL[name](size)))

    assert verdict.decision == "pass", verdict.reasons
    assert verdict.flags == [] and verdict.reason_codes == []
    for check in PIXEL_CHECKS:
        assert checks[check].status == "passed", (check, checks[check].reason)
    assert checks["blank"].score > 0.1
    assert checks["noise"].score > 0.5
    assert checks["blur"].score > 20  # well clear of the flag threshold (10)
    assert checks["colour_entropy"].score > 3  # well clear of the flag threshold (1)


@pytest.mark.parametrize(("colour", "label"), [((0, 0, 0), "black"), ((255, 255, 255), "white"),
                                               ((90, 120, 200), "uniform colour")])
def test_flat_frames_are_rejected_as_blank_without_dividing_by_zero(colour, label):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 would surface as a RuntimeWarning
        verdict, checks = evaluate(candidate(flat(128, colour)))

    assert verdict.decision == "reject" and verdict.retryable, label
    assert verdict.reason_codes == ["blank"]
    assert checks["blank"].score == 0.0
    assert checks["blank"].thresholds == {"reject": 0.02}
    assert "near-uniform" in checks["blank"].reason
    # Stop at the first reject: the later checks did not run, and say why.
    for name in ("noise", "duplicate", "clip_alignment", "blur", "colour_entropy"):
        assert checks[name].status == "not_run"
        assert checks[name].reason == "skipped: blank rejected the image"


def test_almost_flat_image_is_blank():
    rng = np.random.default_rng(1)
    faint = np.clip(120 + rng.normal(0, 1.0, (64, 64, 3)), 0, 255).astype(np.uint8)
    _, checks = evaluate(candidate(Image.fromarray(faint)))
    assert checks["blank"].code == "blank"
    assert 0 < checks["blank"].score < 0.02


def test_two_colours_of_equal_brightness_are_not_blank():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, :16] = (200, 0, 0)
    image[:, 16:] = (0, 102, 0)  # about the same luma as the red half
    _, checks = evaluate(candidate(Image.fromarray(image)))
    assert checks["blank"].status == "passed"


@pytest.mark.parametrize("make_noise", [uniform_noise, gaussian_noise])
def test_pure_noise_is_rejected_as_noise(make_noise):
    verdict, checks = evaluate(candidate(make_noise(128)))

    assert verdict.decision == "reject" and verdict.retryable
    assert verdict.reason_codes == ["noise"]
    assert abs(checks["noise"].score) < 0.1
    assert "looks like noise" in checks["noise"].reason
    assert checks["blank"].status == "passed"  # noise has plenty of spread; only the noise check sees it


def test_large_noise_is_caught_after_downscaling():
    assert evaluate(candidate(uniform_noise(1100)))[0].reason_codes == ["noise"]


def test_nan_pixels_are_rejected_as_not_finite_and_not_retried():
    cand = candidate(scene(32))
    cand.pixels = pixels_of(scene(32))
    cand.pixels[0, 0, 0] = np.nan
    cand.pixels[1, 1, :] = np.nan
    cand.pixels[2, 2, 1] = np.inf

    verdict, checks = evaluate(cand)

    assert verdict.decision == "reject" and not verdict.retryable
    assert verdict.reason_codes == ["not_finite"]
    assert "5 of 3072" in checks["finite"].reason
    assert "4 NaN, 1 Inf" in checks["finite"].reason
    assert checks["finite"].score == pytest.approx(1 - 5 / 3072)
    assert checks["blank"].reason == "skipped: finite rejected the image"


def test_a_nan_tensor_behind_a_good_looking_png_is_caught():
    cand = candidate(landscape(64))
    cand.pixels = nan_pixels(landscape(64))
    verdict, _ = evaluate(cand)
    assert verdict.reason_codes == ["not_finite"] and not verdict.retryable


def test_finite_is_not_run_without_pixels_and_passes_integer_pixels():
    _, checks = evaluate(candidate(scene(32), with_pixels=False))
    assert checks["finite"].status == "not_run"
    assert checks["finite"].reason == "no raw pixels were given"

    cand = candidate(scene(32))
    cand.pixels = np.asarray(scene(32))  # uint8
    assert evaluate(cand)[1]["finite"].status == "passed"

    cand.pixels = np.zeros((0, 3), np.float32)
    assert evaluate(cand)[1]["finite"].code == "not_finite"


def test_wrong_declared_size_is_rejected_without_retry():
    verdict, checks = evaluate(candidate(scene(64), declared=(64, 48)))

    assert verdict.decision == "reject" and not verdict.retryable
    assert checks["decode"].code == "wrong_size"
    assert checks["decode"].reason == "height is 64, expected 48"
    assert checks["decode"].score == 0.0


def test_wrong_declared_mode_is_rejected():
    cand = candidate(scene(64))
    cand.expected_mode = "RGBA"
    _, checks = evaluate(cand)
    assert checks["decode"].code == "wrong_mode"
    assert checks["decode"].reason == "mode is RGB, expected RGBA"

    cand.expected_mode = "RGB"
    assert evaluate(cand)[1]["decode"].status == "passed"


@pytest.mark.parametrize("data", [b"not an image at all", truncated_png(scene(64))],
                         ids=["garbage", "truncated png"])
def test_undecodable_data_is_rejected_without_retry(data):
    verdict, checks = evaluate(Candidate(data=data, content_type="image/png"))

    assert verdict.decision == "reject" and not verdict.retryable
    assert verdict.reason_codes == ["undecodable"]
    assert checks["decode"].score == 0.0
    assert checks["blank"].reason == "skipped: decode rejected the image"


def test_with_decode_off_an_undecodable_image_leaves_the_image_checks_not_run():
    policy = Policy.from_dict({"checks": {"decode": "off"}})
    verdict, checks = evaluate(Candidate(data=b"garbage", content_type="image/png"), policy)

    assert checks["decode"].reason == "off in this policy"
    for name in ("blank", "noise", "duplicate", "blur", "colour_entropy"):
        assert checks[name].status == "not_run"
        assert checks[name].reason.startswith("the image did not decode: data does not decode")
    assert verdict.decision == "pass"  # nothing failed: the policy chose not to check


def test_decode_in_the_review_band_holds_instead_of_rejecting():
    policy = Policy.from_dict({"checks": {"decode": "review"}})
    verdict, checks = evaluate(candidate(scene(64), declared=(32, 32)), policy)
    assert verdict.decision == "review" and not verdict.retryable
    assert checks["decode"].band == "review"
    assert checks["blank"].status == "passed"  # a review-band failure does not stop the checks


def test_content_type_must_match_the_format():
    data = encode(scene(32), "JPEG")
    _, checks = evaluate(Candidate(data=data, content_type="image/png"))
    assert checks["decode"].code == "wrong_type"
    assert "JPEG" in checks["decode"].reason

    _, checks = evaluate(Candidate(data=data, content_type="image/jpeg"))
    assert checks["decode"].status == "passed"


def test_decompression_bomb_guard_refuses_before_loading():
    _, checks = evaluate(candidate(scene(64)), sentinel=Sentinel(max_pixels=64 * 63))
    assert checks["decode"].code == "undecodable"
    assert "more than 4032 pixels" in checks["decode"].reason


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "1"])
def test_other_pixel_modes_are_judged(mode):
    source = landscape(64)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(source.convert("L"), dtype=np.uint16) * 257)
    elif mode == "1":
        image = scene(64).convert("1", dither=Image.Dither.NONE)  # dithering would make it noise-like
    else:
        image = source.convert(mode)
    cand = Candidate(data=encode(image), content_type="image/png", expected_width=64, expected_height=64)
    verdict, checks = evaluate(cand, Policy.integrity_only())
    assert verdict.passed, verdict.reasons


def test_blurry_images_are_flagged_but_pass():
    verdict, checks = evaluate(candidate(blurred(landscape(256))))

    assert verdict.decision == "pass"
    assert checks["blur"].status == "flagged" and checks["blur"].band == "flag"
    assert checks["blur"].code == "blurry"
    assert checks["blur"].score < 10
    assert verdict.reason_codes == ["blurry"]
    assert verdict.flags == [f"blur: {checks['blur'].reason}"] and verdict.reasons == []


def test_images_of_almost_one_colour_are_flagged_for_low_colour_entropy():
    verdict, checks = evaluate(candidate(mostly_white()))

    assert verdict.decision == "pass"
    assert checks["blank"].status == "passed"  # a dark mark on white has spread; it is not blank
    assert checks["colour_entropy"].code == "low_colour_entropy"
    assert checks["colour_entropy"].score < 1.0
    assert verdict.reason_codes == ["low_colour_entropy"]


def test_colour_entropy_counts_colours():
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, 32:] = 255  # two colours in equal shares: exactly one bit
    _, checks = evaluate(candidate(Image.fromarray(image)))
    assert checks["colour_entropy"].score == pytest.approx(1.0)
    assert checks["colour_entropy"].status == "passed"  # flagged only below 1.0


def test_a_soft_check_can_be_made_stricter_and_never_rejects():
    policy = Policy.from_dict({"checks": {"blur": {"flag": 10_000}, "colour_entropy": {"flag": 12}}})
    verdict, checks = evaluate(candidate(landscape(128)), policy)
    assert verdict.decision == "pass"
    assert verdict.reason_codes == ["blurry", "low_colour_entropy"]


def test_tiny_images_have_nothing_to_fault():
    image = Image.fromarray(np.linspace(0, 255, 40).astype(np.uint8).reshape(40, 1))
    _, checks = evaluate(candidate(image), Policy.integrity_only())
    assert checks["noise"].status == "passed"

    _, checks = evaluate(candidate(Image.new("RGB", (2, 2), (255, 0, 0))), Policy.from_dict({"checks": {
        "blank": "off"}}))
    assert checks["noise"].score == 1.0
    assert checks["blur"].reason == "image is smaller than 3x3 pixels"


def test_pixel_checks_do_not_import_torch_or_the_other_packages():
    # The integrity gate runs on every output in a hot path; it must stay numpy + Pillow.
    script = (
        "import io, sys\n"
        "from PIL import Image\n"
        "from comfygate.sentinel import Candidate, Policy, Sentinel\n"
        "buffer = io.BytesIO(); Image.new('RGB', (8, 8), 'red').save(buffer, 'PNG')\n"
        "Sentinel().evaluate(Candidate(buffer.getvalue(), 'image/png', prompt='a cat'), Policy.from_dict(None))\n"
        "loaded = [m for m in ('torch', 'open_clip', 'comfygate.platform', 'comfygate.comfy_runtime')\n"
        "          if m in sys.modules]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_evaluation_is_repeatable():
    cand = candidate(landscape(64))
    sentinel = Sentinel()
    first = sentinel.evaluate(cand, Policy.default()).to_dict()
    assert sentinel.evaluate(cand, Policy.default()).to_dict() == first

"""Pixel checks: cheap, model-free tests that run on every output (numpy + Pillow only).

Each check takes what it inspects plus its ``CheckSettings`` and returns a ``CheckResult``. The gate
decodes the file once and hands the same 8-bit image to the blank and noise checks.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .candidate import Candidate
from .policy import CheckSettings
from .verdict import CheckResult

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Decoded",
    "decode",
    "image_8bit",
    "check_finite",
    "check_blank",
    "check_noise",
    "not_run",
]

DEFAULT_MAX_PIXELS = 64_000_000
# Larger images are box-averaged down to about this side before the noise check (cost bound).
_NOISE_MAX_SIDE = 512
# Errors Pillow raises on data it cannot decode: unknown format (UnidentifiedImageError is an OSError),
# truncated or corrupt data (OSError, SyntaxError from some plugins, ValueError on bad tile layouts).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass
class Decoded:
    """Outcome of decoding a candidate: the decode check's result, and the image when it decoded."""

    result: CheckResult
    image: Image.Image | None


def not_run(name: str, settings: CheckSettings, reason: str) -> CheckResult:
    return CheckResult(name, "not_run", settings.action, None, settings.threshold, reason)


def _failed(name: str, settings: CheckSettings, score: float | None, reason: str) -> CheckResult:
    return CheckResult(name, "failed", settings.action, score, settings.threshold, reason)


def _passed(name: str, settings: CheckSettings, score: float | None) -> CheckResult:
    return CheckResult(name, "passed", settings.action, score, settings.threshold, None)


def decode(candidate: Candidate, settings: CheckSettings, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """The "decode" check: the bytes are a complete image of the declared type and size.

    Score 1.0 when it decoded as declared, else 0.0. The image is returned even when only the declared
    size or type is wrong, so the other checks can still look at it.
    """
    name = "decode"
    try:
        image = Image.open(io.BytesIO(candidate.data))
        # Image.open reads only the header: refuse a decompression bomb before load() allocates it.
        width, height = image.size
        if width * height > max_pixels:
            return Decoded(
                _failed(name, settings, 0.0, f"image is {width}x{height}, more than {max_pixels} pixels"),
                None,
            )
        image.load()
    except _DECODE_ERRORS as exc:
        return Decoded(_failed(name, settings, 0.0, f"data does not decode as an image ({exc})"), None)

    problems = []
    declared_type = candidate.content_type.split(";", 1)[0].strip().lower()
    actual_type = Image.MIME.get(image.format or "", f"image/{(image.format or 'unknown').lower()}")
    if declared_type != actual_type:
        problems.append(f"content type is {candidate.content_type!r} but the data is {image.format}")
    expected = (candidate.expected_width, candidate.expected_height)
    if expected[0] is not None and expected[0] != width:
        problems.append(f"width is {width}, expected {expected[0]}")
    if expected[1] is not None and expected[1] != height:
        problems.append(f"height is {height}, expected {expected[1]}")
    if problems:
        return Decoded(_failed(name, settings, 0.0, "; ".join(problems)), image)
    return Decoded(_passed(name, settings, 1.0), image)


def image_8bit(image: Image.Image) -> Image.Image:
    """The image as 8-bit "L" (grey sources) or "RGB" (everything else); alpha and palettes are dropped."""
    if image.mode.startswith("I"):
        # 16-bit greyscale (PNG) decodes as I;16 or I, holding 0..65535; keep the high byte.
        high = np.asarray(image, dtype=np.int64) >> 8
        return Image.fromarray(np.clip(high, 0, 255).astype(np.uint8))  # 2-D uint8 -> mode "L"
    grey = image.mode in ("1", "L", "LA", "F") or (image.mode == "P" and image.palette.mode == "L")
    return image.convert("L" if grey else "RGB")


def check_finite(pixels: np.ndarray | None, settings: CheckSettings) -> CheckResult:
    """The "finite" check: the raw pixel values hold no NaN or Inf. Score: the finite fraction."""
    name = "finite"
    if pixels is None:
        return not_run(name, settings, "no raw pixels were given")
    values = np.asarray(pixels)
    if values.size == 0:
        return _failed(name, settings, 0.0, f"raw pixels are empty (shape {values.shape})")
    if not np.issubdtype(values.dtype, np.inexact):
        return _passed(name, settings, 1.0)  # integers cannot be NaN or Inf
    finite = np.isfinite(values)
    bad = int(values.size - np.count_nonzero(finite))
    score = 1.0 - bad / values.size
    if bad:
        nan = int(np.count_nonzero(np.isnan(values)))
        return _failed(
            name, settings, score,
            f"{bad} of {values.size} raw pixel values are not finite ({nan} NaN, {bad - nan} Inf)",
        )
    return _passed(name, settings, score)


def check_blank(image: Image.Image, settings: CheckSettings) -> CheckResult:
    """The "blank" check on an 8-bit image: it is not one flat colour.

    Score: the largest per-channel standard deviation, in 0..1, so an image of two colours with the same
    brightness still counts as having content. Computed exactly from the histogram (fast, and a flat
    image scores exactly 0).
    """
    name = "blank"
    assert settings.threshold is not None  # the policy gives every scored check a threshold
    histogram = np.array(image.histogram(), dtype=np.int64).reshape(-1, 256)  # [bands, 256]
    levels = np.arange(256, dtype=np.int64)
    count = int(histogram[0].sum())
    spreads = []
    for band in histogram:
        # Python ints: count * sum of squares overflows int64 on large images.
        total, squares = int(band @ levels), int(band @ (levels * levels))
        spreads.append(math.sqrt(count * squares - total * total) / count / 255.0)
    score = max(spreads)
    if score < settings.threshold:
        return _failed(
            name, settings, score,
            f"image is blank or near-uniform (colour spread {score:.4f} < {settings.threshold})",
        )
    return _passed(name, settings, score)


def check_noise(image: Image.Image, settings: CheckSettings) -> CheckResult:
    """The "noise" check on an 8-bit image: it has spatial structure, i.e. is not pure noise.

    Score: the correlation of each pixel's brightness with its right and lower neighbour (mean of the
    two). Images of things, photos or drawings, score about 0.8..1.0; independent noise scores about 0.
    A uniform image has no variance to correlate; it scores 1.0 here and is the blank check's concern.
    """
    name = "noise"
    assert settings.threshold is not None
    grey = image.convert("L") if image.mode != "L" else image
    factor = math.ceil(max(grey.size) / _NOISE_MAX_SIDE)
    if factor > 1:
        # Box-averaging keeps structure correlated and noise independent, and bounds the cost.
        grey = grey.reduce(factor)
    luma = np.asarray(grey, dtype=np.float64)  # [H, W], whole numbers 0..255
    pairs = []
    if luma.shape[1] > 1:
        pairs.append((luma[:, :-1], luma[:, 1:]))  # horizontal neighbours
    if luma.shape[0] > 1:
        pairs.append((luma[:-1, :], luma[1:, :]))  # vertical neighbours
    correlations = [_correlation(a, b) for a, b in pairs]
    score = float(np.mean(correlations)) if correlations else 1.0
    if score < settings.threshold:
        return _failed(
            name, settings, score,
            f"image looks like noise (neighbour correlation {score:.3f} < {settings.threshold})",
        )
    return _passed(name, settings, score)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    # Pearson correlation from raw sums. The values are whole numbers (8-bit levels held as float64), so
    # every sum is exact, and the products are taken as Python ints: a flat strip has variance exactly 0.
    n = a.size
    sum_a, sum_b = int(a.sum()), int(b.sum())
    covariance = n * int(np.einsum("ij,ij->", a, b)) - sum_a * sum_b
    variance_a = n * int(np.einsum("ij,ij->", a, a)) - sum_a * sum_a
    variance_b = n * int(np.einsum("ij,ij->", b, b)) - sum_b * sum_b
    # A flat strip has no variance: nothing to correlate, so no evidence of noise.
    if variance_a == 0 or variance_b == 0:
        return 1.0
    return covariance / math.sqrt(variance_a * variance_b)

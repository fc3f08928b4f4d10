"""Pixel checks: cheap, model-free measurements that run on every picture (numpy + Pillow only), and the
functions that turn a measurement and a resolved check into a ``CheckResult``.

The gate decodes the file once (decoding.py), converts each picture once (``PreparedImage``), and hands the
same pixels to every check that looks at them.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
from PIL import Image

from .check_specs import CHECKS
from .policy import ResolvedCheck
from .verdict import CheckResult

__all__ = [
    "PreparedImage",
    "image_8bit",
    "finite_fraction",
    "blank_score",
    "noise_score",
    "blur_score",
    "colour_entropy",
    "yes_no_result",
    "judge",
    "not_run",
]

# Larger images are box-averaged down to about this side for the noise, blur and entropy checks (cost bound).
SMALL_MAX_SIDE = 512


# ---- preparing pixels ---------------------------------------------------------------------------------------

def image_8bit(image: Image.Image) -> Image.Image:
    """The image as 8-bit "L" (grey sources) or "RGB" (everything else); alpha and palettes are dropped."""
    if image.mode.startswith("I"):
        # 16-bit greyscale (PNG) decodes as I;16 or I, holding 0..65535; keep the high byte.
        high = np.asarray(image, dtype=np.int64) >> 8
        return Image.fromarray(np.clip(high, 0, 255).astype(np.uint8))  # 2-D uint8 -> mode "L"
    grey = image.mode in ("1", "L", "LA", "F") or (image.mode == "P" and image.palette.mode == "L")
    return image.convert("L" if grey else "RGB")


class PreparedImage:
    """One decoded image in the forms the checks read, each made once: full-size 8-bit, and a copy
    box-averaged to at most ``SMALL_MAX_SIDE`` pixels a side (in RGB and grey)."""

    def __init__(self, image: Image.Image) -> None:
        self.image8 = image_8bit(image)

    @cached_property
    def small(self) -> Image.Image:
        factor = math.ceil(max(self.image8.size) / SMALL_MAX_SIDE)
        # Box-averaging keeps structure correlated and noise independent, and bounds the cost.
        return self.image8.reduce(factor) if factor > 1 else self.image8

    @cached_property
    def small_grey(self) -> np.ndarray:
        """[H, W] float64 of whole numbers 0..255."""
        small = self.small
        return np.asarray(small if small.mode == "L" else small.convert("L"), dtype=np.float64)

    @cached_property
    def small_rgb(self) -> np.ndarray:
        """[H, W, 3] uint8."""
        small = self.small
        return np.asarray(small if small.mode == "RGB" else small.convert("RGB"))


# ---- measurements -------------------------------------------------------------------------------------------

def finite_fraction(pixels: np.ndarray) -> tuple[float, str | None]:
    """The share of raw pixel values that are finite, and a description of the others (None when all are)."""
    values = np.asarray(pixels)
    if values.size == 0:
        return 0.0, f"raw pixels are empty (shape {values.shape})"
    if not np.issubdtype(values.dtype, np.inexact):
        return 1.0, None  # integers cannot be NaN or Inf
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if not bad:
        return 1.0, None
    nan = int(np.count_nonzero(np.isnan(values)))
    return 1.0 - bad / values.size, f"{bad} of {values.size} raw pixel values are not finite ({nan} NaN, " \
                                    f"{bad - nan} Inf)"


def blank_score(image8: Image.Image) -> float:
    """The largest per-channel standard deviation, in 0..1: two colours of equal brightness still count as
    content. Computed exactly from the histogram (fast, and a flat image scores exactly 0)."""
    histogram = np.array(image8.histogram(), dtype=np.int64).reshape(-1, 256)  # [bands, 256]
    levels = np.arange(256, dtype=np.int64)
    count = int(histogram[0].sum())
    spreads = []
    for band in histogram:
        # Python ints: count * sum of squares overflows int64 on large images.
        total, squares = int(band @ levels), int(band @ (levels * levels))
        spreads.append(math.sqrt(count * squares - total * total) / count / 255.0)
    return max(spreads)


def noise_score(grey: np.ndarray) -> float:
    """Mean correlation of each pixel's brightness with its right and lower neighbour, -1..1.

    Images of things score about 0.8..1.0; independent noise about 0. A uniform image has no variance to
    correlate: it scores 1.0 here and is the blank check's concern.
    """
    pairs = []
    if grey.shape[1] > 1:
        pairs.append((grey[:, :-1], grey[:, 1:]))  # horizontal neighbours
    if grey.shape[0] > 1:
        pairs.append((grey[:-1, :], grey[1:, :]))  # vertical neighbours
    correlations = [_correlation(a, b) for a, b in pairs]
    return float(np.mean(correlations)) if correlations else 1.0


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    # Pearson correlation from raw sums. The values are whole numbers (8-bit levels held as float64), so
    # every sum is exact, and the products are taken as Python ints: a flat strip has variance exactly 0.
    n = a.size
    sum_a, sum_b = int(a.sum()), int(b.sum())
    covariance = n * int(np.einsum("ij,ij->", a, b)) - sum_a * sum_b
    variance_a = n * int(np.einsum("ij,ij->", a, a)) - sum_a * sum_a
    variance_b = n * int(np.einsum("ij,ij->", b, b)) - sum_b * sum_b
    if variance_a == 0 or variance_b == 0:
        return 1.0  # a flat strip: nothing to correlate, so no evidence of noise
    return covariance / math.sqrt(variance_a * variance_b)


def blur_score(grey: np.ndarray) -> float | None:
    """Variance of the 4-neighbour Laplacian of the grey image (0..255 levels); None below 3x3 pixels.

    Sharp edges and texture give large second differences; a blurred image has few.
    """
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return None
    laplacian = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
                 - 4.0 * grey[1:-1, 1:-1])  # [H-2, W-2]
    return float(laplacian.var())


def colour_entropy(rgb: np.ndarray) -> float:
    """Shannon entropy in bits (0..12) of the colour histogram with 4 bits per channel (4096 bins)."""
    quantised = (rgb >> 4).astype(np.int64)  # [H, W, 3] in 0..15
    bins = (quantised[..., 0] << 8) | (quantised[..., 1] << 4) | quantised[..., 2]
    counts = np.bincount(bins.ravel(), minlength=4096)
    shares = counts[counts > 0] / bins.size
    return float(max(0.0, -(shares * np.log2(shares)).sum()))  # max(): -0.0 for one colour


# ---- turning measurements into results ---------------------------------------------------------------------

def not_run(check: ResolvedCheck, reason: str) -> CheckResult:
    return CheckResult(check.name, "not_run", None, dict(check.thresholds), dict(check.sources), reason=reason)


def yes_no_result(check: ResolvedCheck, score: float, code: str | None, reason: str | None) -> CheckResult:
    """A yes/no check (decode, finite): ``code`` None means it passed; else it fails in the policy's band."""
    if code is None:
        return CheckResult(check.name, "passed", score)
    return CheckResult(check.name, "failed", score, band=check.action, code=code, reason=reason)


def judge(check: ResolvedCheck, score: float, code: str, finding: str, measure: str) -> CheckResult:
    """Compare a scored or soft check's ``score`` with its bands.

    ``finding`` says what a failure means ("image is blank or near-uniform"), ``measure`` names the score
    ("colour spread"); the reason reads "<finding> (<measure> 0.01 < reject threshold 0.02)".
    """
    higher_is_better = CHECKS[check.name].higher_is_better
    for band in ("reject", "review", "flag"):
        if band not in check.thresholds:
            continue
        threshold = check.thresholds[band]
        if score < threshold if higher_is_better else score > threshold:
            comparison = "<" if higher_is_better else ">"
            reason = f"{finding} ({measure} {score:.4g} {comparison} {band} threshold {threshold:.4g})"
            status = "flagged" if band == "flag" else "failed"
            return CheckResult(check.name, status, score, dict(check.thresholds), dict(check.sources),
                               band=band, code=code, reason=reason)  # type: ignore[arg-type]
    return CheckResult(check.name, "passed", score, dict(check.thresholds), dict(check.sources))

"""Image identity for the duplicate check: an exact hash of the file and a 64-bit perceptual hash.

The perceptual hash is the classic DCT hash: shrink the grey image to 32x32, take the 2-D DCT, keep the 8x8
lowest frequencies, and set one bit per coefficient that is above their median. Re-encoding, small
brightness changes and one-pixel shifts move few bits; a different picture moves about half of them.
"""

from __future__ import annotations

import hashlib
import math
import string
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

__all__ = ["ImageHash", "RecentOutput", "image_hash", "perceptual_hash", "hamming", "phash_hex", "phash_from_hex"]

_SIDE = 32  # the grey image is shrunk to _SIDE x _SIDE before the DCT
_KEEP = 8  # _KEEP x _KEEP lowest frequencies -> 64 bits


@dataclass(frozen=True)
class ImageHash:
    sha256: str  # hex digest of the encoded file
    phash: int  # 64-bit perceptual hash of the decoded image


@dataclass(frozen=True)
class RecentOutput:
    """An earlier output of the endpoint that a new one must not repeat.

    ``request_key`` is the key of the request that produced it (outputs of the same request are not
    compared); ``label`` names it in reasons, e.g. ``"run 01H.. output 0"``.
    """

    sha256: str
    phash: int
    request_key: str | None
    label: str


def image_hash(data: bytes, image: Image.Image) -> ImageHash:
    return ImageHash(hashlib.sha256(data).hexdigest(), perceptual_hash(image))


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    """DCT-II basis as a matrix: ``C @ x`` transforms the columns of x (orthonormal scaling)."""
    k = np.arange(_SIDE)[:, None]  # frequency
    n = np.arange(_SIDE)[None, :]  # sample
    basis = np.cos(math.pi * (2 * n + 1) * k / (2 * _SIDE))  # [32, 32]
    basis[0] *= 1 / math.sqrt(2)
    return basis * math.sqrt(2 / _SIDE)


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT hash of ``image``; the first (most significant) bit is the lowest frequency."""
    grey = image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.BOX if min(image.size) >= _SIDE
                                     else Image.Resampling.BILINEAR)
    pixels = np.asarray(grey, dtype=np.float64)  # [32, 32]
    basis = _dct_matrix()
    coefficients = basis @ pixels @ basis.T  # 2-D DCT: [32, 32]
    low = coefficients[:_KEEP, :_KEEP].ravel()  # [64]
    # The median of the AC terms only: the DC term (mean brightness) is far larger than the rest.
    median = np.median(low[1:])
    bits = 0
    for above in low > median:
        bits = (bits << 1) | int(above)
    return bits


def hamming(a: int, b: int) -> int:
    """Number of bits in which two hashes differ (0..64 for perceptual hashes)."""
    return (a ^ b).bit_count()


def phash_hex(phash: int) -> str:
    """The hash as 16 lower-case hex characters (how the platform stores it)."""
    if not 0 <= phash < 1 << 64:
        raise ValueError(f"a perceptual hash is a 64-bit unsigned integer, got {phash}")
    return f"{phash:016x}"


def phash_from_hex(text: str) -> int:
    if len(text) != 16 or any(char not in string.hexdigits for char in text):
        raise ValueError(f"a perceptual hash is 16 hex characters, got {text!r}")
    return int(text, 16)

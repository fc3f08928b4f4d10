"""Real test images, built with Pillow and numpy, and the candidates that wrap them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from comfygate.sentinel import Candidate


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def scene(size: int = 64) -> Image.Image:
    """A smooth two-way colour gradient with a bright disc and a dark square on it."""
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    rgb = np.stack([
        np.broadcast_to(ramp, (size, size)),  # red grows to the right
        np.broadcast_to(ramp[:, None], (size, size)),  # green grows downwards
        np.full((size, size), 0.3, dtype=np.float32),
    ], axis=-1)
    image = Image.fromarray((rgb * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 8, size // 8, size // 2, size // 2), fill=(250, 240, 30))
    draw.rectangle((size // 2, size // 2, 7 * size // 8, 7 * size // 8), fill=(10, 10, 120))
    return image


def flat(size: int = 64, colour: tuple[int, int, int] = (90, 120, 200)) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def uniform_noise(size: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def gaussian_noise(size: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(np.clip(rng.normal(128, 40, (size, size)), 0, 255).astype(np.uint8))


def pixels_of(image: Image.Image) -> np.ndarray:
    """float32 [H, W, C] in 0..1, as a workflow would have produced before encoding."""
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def candidate(image: Image.Image, *, with_pixels: bool = True, declared: tuple[int, int] | None = None
              ) -> Candidate:
    width, height = declared if declared is not None else image.size
    return Candidate(
        data=encode(image), content_type="image/png", expected_width=width, expected_height=height,
        pixels=pixels_of(image) if with_pixels else None,
    )
